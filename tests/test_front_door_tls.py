"""The front door over TLS: plain downloads written into the TLS transport, the same bytes and headers
as aiohttp's path (reached with a query string), pipelining, hand-over, flow control and timeouts.

Every request is written on a raw TLS stream, exactly as given; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
from support import random_tails, wait_for
from test_front_door import IGNORED, read_full, request

OCTETS = "Content-Type: application/octet-stream\r\n"


@pytest.fixture
def https_server(new_server, tls_files):
    chain, key, client = tls_files

    def start(*args: str):
        proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), *args, ssl_context=client)
        proc.client_context = client
        return proc

    return start


async def connect(proc, receive_buffer: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if receive_buffer:  # a small window: the server's writes stall as soon as the client stops reading
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", proc.port))
    sock.setblocking(False)
    return await asyncio.wait_for(
        asyncio.open_connection(sock=sock, ssl=proc.client_context, server_hostname="127.0.0.1"), 10
    )


async def put(proc, data: bytes, h: str) -> None:
    reader, writer = await connect(proc)
    writer.write(request("PUT", f"/hash/{h}", headers=f"{OCTETS}Content-Length: {len(data)}\r\n") + data)
    status_line, _, body = await read_full(reader)
    writer.close()
    assert status_line.split()[1] in ("200", "409") and body in (h.encode(), body), body


async def metric(proc, name: str) -> float:
    reader, writer = await connect(proc)
    writer.write(request("GET", "/metrics"))
    _, _, body = await read_full(reader)
    writer.close()
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("records", [100, 2000, 40000])  # 12.5 KiB: inline; 250 KiB: one chunk; 5 MiB: many
async def test_both_paths_send_the_same_https_download(https_server, records):
    proc = https_server()
    data, h = random_tails(records)
    await put(proc, data, h)
    answers = []
    for target in (f"/hash/{h}", f"/hash/{h}?through=aiohttp"):
        reader, writer = await connect(proc)
        writer.write(request("GET", target, headers="X-Request-ID: tls-front-door\r\n"))
        status_line, headers, body = await read_full(reader)
        assert status_line == "HTTP/1.1 200 OK" and body == data
        assert headers["x-request-id"] == "tls-front-door" and headers["etag"] == f'"{h}"'
        writer.write(request("HEAD", target, headers="Connection: close\r\n"))  # then a HEAD on the same connection
        status_line, head_headers, _ = await read_full(reader, head=True)
        assert status_line == "HTTP/1.1 200 OK" and head_headers["content-length"] == str(len(data))
        assert await asyncio.wait_for(reader.read(), 10) == b""  # Connection: close is honoured
        writer.close()
        answers.append({k: v for k, v in headers.items() if k not in IGNORED})
    assert answers[0] == answers[1]


async def test_a_tls_pipeline_is_answered_in_order_across_the_hand_over(https_server):
    """Forty plain downloads, a Range (aiohttp's), an upload, then more downloads: all on one connection."""
    proc = https_server()
    data, h = random_tails(2000)
    new_data, new_h = random_tails(300)
    await put(proc, data, h)
    pipeline = [(request("GET", f"/hash/{h}"), "200", data) for _ in range(40)]
    pipeline += [
        (request("GET", f"/hash/{h}", headers="Range: bytes=5-9\r\n"), "206", data[5:10]),
        (request("PUT", f"/hash/{new_h}", headers=f"{OCTETS}Content-Length: {len(new_data)}\r\n") + new_data, "200",
         new_h.encode()),
        (request("GET", f"/hash/{new_h}"), "200", new_data),
        (request("GET", f"/hash/{h}"), "200", data),
    ]
    reader, writer = await connect(proc)
    writer.write(b"".join(raw for raw, _, _ in pipeline))
    for _, status, body in pipeline:
        status_line, _, got = await read_full(reader)
        assert (status_line.split()[1], got) == (status, body)
    writer.close()


async def test_a_slow_tls_reader_gets_every_byte(https_server):
    """A client with a small window reading in bursts: the door waits for resume_writing, never drops or repeats."""
    proc = https_server()
    data, h = random_tails(20000)  # 2.4 MiB
    await put(proc, data, h)
    reader, writer = await connect(proc, receive_buffer=4096)
    writer.write(request("GET", f"/hash/{h}") * 2)
    for _ in range(2):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        received = bytearray()
        while len(received) < len(data):
            received += await asyncio.wait_for(reader.read(min(65536, len(data) - len(received))), 10)
            if len(received) % 5 == 0:
                await asyncio.sleep(0.001)
        assert received == data
    writer.close()


async def test_a_stalled_tls_reader_is_cut_and_a_gone_one_counted(https_server):
    """A client that stops reading is cut after --idle-timeout; one that leaves mid-body is logged cut short."""
    proc = https_server("--idle-timeout", "1")
    data, h = random_tails(64_000)  # 8 MiB: far more than the buffers hold
    await put(proc, data, h)
    before = await metric(proc, "tails_downloads_cut_short_total")
    reader, writer = await connect(proc, receive_buffer=4096)
    writer.write(request("GET", f"/hash/{h}", headers="X-Request-ID: stalled\r\n"))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    received = len(await asyncio.wait_for(reader.readexactly(100_000), 10))
    await asyncio.sleep(4)  # stops reading: the server's writes stall, and after 1 s idle it cuts the download
    for _ in range(1000):  # then what the buffers held, and the end
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
        except ConnectionError:
            break
        if not chunk:
            break
        received += len(chunk)
    assert 100_000 <= received < len(data) // 2
    writer.close()
    await wait_for(lambda: re.search(r"200 \d+ \S+ stalled cut-short$", proc.log(), re.M) is not None, 30)
    reader, writer = await connect(proc, receive_buffer=4096)  # else loopback's buffers hold all 8 MiB at once
    writer.write(request("GET", f"/hash/{h}", headers="X-Request-ID: gone\r\n"))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    await asyncio.wait_for(reader.readexactly(100_000), 10)
    writer.transport.abort()
    # The server learns of it from a failed write, or at the latest when the idle timeout cuts the stalled body.
    await wait_for(lambda: re.search(r"200 \d+ \S+ gone cut-short$", proc.log(), re.M) is not None, 30)
    assert await metric(proc, "tails_downloads_cut_short_total") == before + 2
    assert "Traceback" not in proc.log() and "socket.send() raised exception" not in proc.log()


async def get(proc, target: str) -> tuple[str, bytes]:
    reader, writer = await connect(proc)
    writer.write(request("GET", target, headers="Connection: close\r\n"))
    status_line, _, body = await read_full(reader)
    writer.close()
    return status_line, body


async def tls_cache(proc) -> dict | None:
    reader, writer = await connect(proc)
    writer.write(request("GET", "/status", headers="Connection: close\r\n"))
    _, _, body = await read_full(reader)
    writer.close()
    return json.loads(body)["transport"].get("tls_cache")


async def test_small_files_are_encrypted_from_memory_within_the_limit_and_a_removed_one_is_gone_at_once(https_server):
    """--tls-cache-size: small files' contents are kept (least recently used dropped first), larger ones
    are read each time, and a file removed from the store is a 404 on the next request."""
    proc = https_server("--tls-cache-size", "300KiB")  # room for two files of 128 KiB
    files = [random_tails(1000) for _ in range(3)] + [random_tails(2100)]  # 128 KiB each; 263 KiB: over the per-file cap
    for data, h in files:
        await put(proc, data, h)
    for data, h in files:
        for _ in range(2):
            assert await get(proc, f"/hash/{h}") == ("HTTP/1.1 200 OK", data)
    cache = await tls_cache(proc)
    assert cache["limit_bytes"] == 300 << 10 and cache["files"] == 2 and cache["bytes"] == 2 * len(files[0][0])
    assert (cache["misses"], cache["hits"]) == (3, 3)  # each small file read once, then from memory

    (proc.view.root / "hash" / files[2][1]).unlink()  # the most recently kept one, removed from the store by hand
    assert (await get(proc, f"/hash/{files[2][1]}"))[0] == "HTTP/1.1 404 Not Found"
    assert await get(proc, f"/hash/{files[1][1]}") == ("HTTP/1.1 200 OK", files[1][0])  # still kept, still right
    assert await get(proc, f"/hash/{files[0][1]}") == ("HTTP/1.1 200 OK", files[0][0])  # dropped earlier: read again
    cache = await tls_cache(proc)
    assert (cache["misses"], cache["hits"]) == (4, 4) and cache["bytes"] <= 300 << 10


async def test_without_a_tls_cache_every_download_reads_the_file(https_server):
    proc = https_server("--tls-cache-size", "0")
    data, h = random_tails(1000)
    await put(proc, data, h)
    for _ in range(2):
        assert await get(proc, f"/hash/{h}") == ("HTTP/1.1 200 OK", data)
    assert await tls_cache(proc) is None


async def test_a_registry_id_over_https_is_served_from_memory_and_gone_with_its_link(https_server, http, ledger, registry):
    """By registry id the cache keys on the file the id names; removing the id's link is a 404 at once."""
    from support import id_upload

    proc = https_server()
    async with http.put(proc.url + registry.path, data=id_upload(ledger.genesis_text, registry.tails),
                        ssl=proc.client_context) as resp:
        assert resp.status == 200
    answers = []
    for target in (registry.path, registry.path, registry.path + "?through=aiohttp"):
        reader, writer = await connect(proc)
        writer.write(request("GET", target, headers="Connection: close\r\n"))
        status_line, headers, body = await read_full(reader)
        writer.close()
        assert (status_line, body) == ("HTTP/1.1 200 OK", registry.tails)
        answers.append({k: v for k, v in headers.items() if k not in IGNORED})
    assert answers[0] == answers[1] == answers[2]
    cache = await tls_cache(proc)
    assert (cache["misses"], cache["hits"]) == (1, 1)
    for link in (proc.view.root / "id").iterdir():  # the id's link, removed by hand; its file stays
        link.unlink()
    assert (await get(proc, registry.path))[0] == "HTTP/1.1 404 Not Found"
    assert await get(proc, f"/hash/{registry.tails_hash}") == ("HTTP/1.1 200 OK", registry.tails)


async def test_a_touched_file_is_answered_with_its_new_time_from_memory(https_server):
    """A file's headers are made once and its bytes kept, but a new modification time (the same bytes,
    touched) is seen at once: Last-Modified follows it, as on aiohttp's path, and the bytes stay kept."""
    import os
    from email.utils import formatdate

    proc = https_server()
    data, h = random_tails(1000)
    await put(proc, data, h)
    stored = proc.view.root / "hash" / h

    async def headers_of(target: str) -> dict:
        reader, writer = await connect(proc)
        writer.write(request("GET", target, headers="Connection: close\r\n"))
        status_line, headers, body = await read_full(reader)
        writer.close()
        assert (status_line, body) == ("HTTP/1.1 200 OK", data)
        return {k: v for k, v in headers.items() if k not in IGNORED}

    first = await headers_of(f"/hash/{h}")
    assert first["last-modified"] == formatdate(int(stored.stat().st_mtime), usegmt=True)
    os.utime(stored, (1_000_000_000, 1_000_000_000))  # 2001-09-09
    touched = await headers_of(f"/hash/{h}")
    assert touched["last-modified"] == "Sun, 09 Sep 2001 01:46:40 GMT" != first["last-modified"]
    assert touched == await headers_of(f"/hash/{h}?through=aiohttp")
    cache = await tls_cache(proc)
    assert (cache["misses"], cache["hits"]) == (1, 1)  # read once: the touch changed no bytes


async def test_a_client_that_stops_reading_answers_from_memory_is_cut_after_the_timeouts(https_server):
    """Answers held in memory leave the door at once: a client that reads none of them still loses
    its connection (after --idle-timeout the door closes it, and the transport gives up on what it holds)."""
    proc = https_server("--idle-timeout", "2")
    data, h = random_tails(1600)  # 200 KiB: answered from memory
    await put(proc, data, h)
    reader, writer = await connect(proc, receive_buffer=4096)
    writer.write(request("GET", f"/hash/{h}") * 40)  # 8 MiB of answers, none of them read
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await metric(proc, "tails_connections_open") != 2.0:  # this one and the one asking (the upload's is gone)
        assert loop.time() < deadline, "the stalled connection never counted alone"
        await asyncio.sleep(0.05)
    deadline = loop.time() + 15
    while await metric(proc, "tails_connections_open") != 1.0:
        assert loop.time() < deadline, "the stalled connection was never cut"
        await asyncio.sleep(0.2)
    writer.transport.abort()
    assert "Traceback" not in proc.log()

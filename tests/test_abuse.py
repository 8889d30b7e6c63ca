"""Fair shares for a public server: trickling uploads, per-client rates, a hung store, odd ranges.

Real servers and real sockets on loopback; a second client address is a bound 127.0.0.2, a hung
store is a SeaweedFS S3 gateway stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import Counter

import aiohttp
import pytest
from support import random_tails

OCTETS = {"Content-Type": "application/octet-stream"}
HONEST = "127.0.0.2"


def other_address() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(HONEST, 0))
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20))


async def trickle(port: int, tails_hash: str, seconds: float, chunked: bool = False) -> bytes:
    """A PUT that promises 1 MiB (or sends chunks) a byte a second; what the server answered (b"" if nothing).

    With a Content-Length the body is read by a worker thread off the socket; chunked, by aiohttp
    on the event loop: both readers judge the pace.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {1 << 20}"
    writer.write(f"PUT /hash/{tails_hash} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 f"{framing}\r\n\r\n".encode() + (b"2\r\n\x00\x02\r\n" if chunked else b"\x00\x02"))
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                return await asyncio.wait_for(reader.read(512), 1.0)
            except TimeoutError:
                writer.write(b"1\r\n\x00\r\n" if chunked else b"\x00")
        return b""
    except ConnectionError:
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["thread-read", "event-loop-read"])
async def test_trickling_uploads_hold_no_slot_from_other_issuers(new_server, chunked):
    proc = new_server("--max-uploads", "12", "--max-uploads-per-client", "4", "--upload-min-rate", "4KiB")
    hashes = [random_tails(1)[1] for _ in range(10)]
    slow = [asyncio.ensure_future(trickle(proc.port, h, 20, chunked)) for h in hashes]  # one address, ten slow uploads
    await asyncio.sleep(1.5)
    outcomes = []
    async with other_address() as http:  # meanwhile another issuer uploads, four at a time, as often as it likes
        async def upload() -> None:
            data, h = random_tails(8)
            async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
                outcomes.append(resp.status)
        for _ in range(5):
            await asyncio.gather(*(upload() for _ in range(4)))
    assert outcomes == [200] * 20, Counter(outcomes)
    answers = await asyncio.gather(*slow)
    statuses = Counter(a.split(b" ", 2)[1] if a.startswith(b"HTTP/1.1 ") else a for a in answers)
    assert statuses == {b"429": 6, b"408": 4}, answers  # past its share at once; the rest once they fall behind
    assert all(b"minimum of 4096 bytes/s" in a for a in answers if b" 408 " in a), answers


async def test_writes_and_listings_past_their_rate_get_429_per_client(new_server, http):
    proc = new_server("--rate-limit-writes", "3/min", "--rate-limit-listings", "5/min")
    statuses = []
    for _ in range(4):
        data, h = random_tails(1)
        async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                retry = int(resp.headers["Retry-After"])
                assert 1 <= retry <= 20 and "\n" not in (await resp.text()).strip()
    assert statuses == [200, 200, 200, 429]
    listed = []
    for _ in range(6):
        async with http.get(f"{proc.url}/match/{h[:5]}") as resp:
            listed.append(resp.status)
    assert listed == [200] * 5 + [429]
    for _ in range(20):  # downloads are never limited
        async with http.get(f"{proc.url}/hash/{h}") as resp:
            assert resp.status in (200, 404)
    async with other_address() as other:  # another address has its own allowance
        data, h = random_tails(1)
        async with other.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
            assert resp.status == 200
    async with http.get(f"{proc.url}/metrics") as resp:
        text = await resp.text()
    assert re.search(r'^tails_rate_limited_total\{kind="writes"\} 1\.0$', text, re.M)
    assert re.search(r'^tails_rate_limited_total\{kind="listings"\} 1\.0$', text, re.M)


async def test_forwarded_addresses_count_only_from_trusted_proxies(new_server, http):
    trusting = new_server("--rate-limit-listings", "2/min", "--trusted-proxy", "127.0.0.0/30")
    for client in ("198.51.100.7", "198.51.100.8"):  # two clients behind the proxy: two allowances
        for expected in (200, 200, 429):
            async with http.get(f"{trusting.url}/match/abc", headers={"X-Forwarded-For": f"203.0.113.9, {client}"}) as resp:
                assert resp.status == expected, (client, resp.status)
    async with http.get(f"{trusting.url}/match/abc", headers={"Forwarded": 'for="[2001:db8::1]:4711"'}) as resp:
        assert resp.status == 200
    untrusting = new_server("--rate-limit-listings", "2/min")  # a client cannot pick its address by header
    statuses = []
    for i in range(3):
        async with http.get(f"{untrusting.url}/match/abc", headers={"X-Forwarded-For": f"198.51.100.{i}"}) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 200, 429]


async def test_a_hung_store_gets_503_within_the_budget(new_server, seaweed, tmp_path):
    endpoint = seaweed.add_gateway()
    gateway = seaweed.gateways[endpoint]
    proc = new_server("--s3-cache-size", "0", backend="s3", endpoint=endpoint)
    data, h = random_tails(3)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
            assert resp.status == 200
        os.kill(gateway.pid, signal.SIGSTOP)  # the store's process stops answering, its sockets stay open
        try:
            other, h2 = random_tails(2)
            for method, path, body, budget in (("GET", f"/hash/{h}", None, 8.0), ("PUT", f"/hash/{h2}", other, 8.0),
                                               ("GET", "/readyz", None, 5.0)):
                began = time.monotonic()
                async with http.request(method, proc.url + path, data=body, headers=OCTETS if body else None) as resp:
                    took = time.monotonic() - began
                    assert resp.status == 503 and took <= budget, (method, path, resp.status, took)
        finally:
            os.kill(gateway.pid, signal.SIGCONT)
        async with http.get(f"{proc.url}/hash/{h}") as resp:
            assert resp.status == 200 and await resp.read() == data


async def test_range_of_the_last_zero_bytes_and_if_unmodified_since(http, server):
    data, h = random_tails(4)
    async with http.put(f"{server.url}/hash/{h}", data=data, headers=OCTETS) as resp:
        assert resp.status == 200
    async with http.get(f"{server.url}/hash/{h}", headers={"Range": "bytes=-0"}) as resp:
        assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(data)}"
    async with http.get(f"{server.url}/hash/{h}") as resp:
        modified = resp.headers["Last-Modified"]
    async with http.get(f"{server.url}/hash/{h}", headers={"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}) as resp:
        assert resp.status == 412 and await resp.read() == b""
    for since in (modified, "Fri, 01 Jan 2100 00:00:00 GMT"):
        async with http.get(f"{server.url}/hash/{h}", headers={"If-Unmodified-Since": since}) as resp:
            assert resp.status == 200 and await resp.read() == data


async def test_a_download_cut_short_is_logged_and_counted_as_such(http, new_server, backend):
    proc = new_server(backend=backend)
    data, h = random_tails(256 << 10)  # 32 MiB: more than the socket buffers on both ends hold
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
        assert resp.status == 200
    for _ in range(2):  # the second from the local cache on S3
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(f"GET /hash/{h} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await reader.readexactly(100_000)
        writer.transport.abort()  # gone with most of the body unread
        await asyncio.sleep(0.5)
    async with http.get(f"{proc.url}/metrics") as resp:
        text = await resp.text()
    cut = float(re.search(r"^tails_downloads_cut_short_total (\S+)$", text, re.M)[1])
    assert cut == 2, text
    await asyncio.sleep(0.5)
    lines = [line for line in proc.log().splitlines() if f"/hash/{h}" in line and "GET" in line and "ACCESS" in line]
    assert len(lines) == 2 and all(line.endswith("cut-short") for line in lines), lines
    sizes = [int(line.split('" ', 1)[1].split()[1]) for line in lines]
    assert all(0 < size < len(data) for size in sizes), lines


async def test_a_cleanup_that_fails_does_not_change_a_stored_uploads_answer(new_server, tmp_path):
    proc = new_server()
    spool = proc.storage / ".tmp"
    data, h = random_tails(1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data[:1000])
    await writer.drain()
    await asyncio.sleep(0.5)  # the temp file exists now
    if subprocess.run(["chattr", "+i", str(spool)], capture_output=True).returncode != 0:
        writer.close()
        pytest.skip("chattr +i is not available here (needs root and a filesystem with the flag)")
    try:
        writer.write(data[1000:])
        answer = await asyncio.wait_for(reader.read(), 20)
    finally:
        subprocess.run(["chattr", "-i", str(spool)], check=True)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(h.encode()), answer
    async with aiohttp.ClientSession() as http, http.get(f"{proc.url}/hash/{h}") as resp:
        assert resp.status == 200 and await resp.read() == data
    assert "could not remove the temp file" in proc.log()

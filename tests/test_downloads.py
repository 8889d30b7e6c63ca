"""GET and HEAD: sendfile with Content-Length, the hash as ETag, Range, 304, no compression, no redirect."""

from __future__ import annotations

import asyncio

import pytest
from support import random_tails, read_response, tiny_window_get


@pytest.fixture
async def stored(http, server):
    data, h = random_tails(2000)
    async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    return data, h


async def test_headers_of_a_download(http, server, stored):
    data, h = stored
    async with http.get(f"{server.url}/hash/{h}", headers={"Accept-Encoding": "gzip, deflate"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["ETag"] == f'"{h}"'
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert "Last-Modified" in resp.headers
        assert "Content-Encoding" not in resp.headers
        assert "Transfer-Encoding" not in resp.headers
        assert await resp.read() == data


async def test_head_has_headers_and_no_body(http, server, stored):
    data, h = stored
    async with http.head(f"{server.url}/hash/{h}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["ETag"] == f'"{h}"'
        assert await resp.read() == b""


@pytest.mark.parametrize("spec, expected", [("bytes=0-9", slice(0, 10)), ("bytes=100-", slice(100, None)), ("bytes=-50", slice(-50, None))])
async def test_range_requests(http, server, stored, spec, expected):
    data, h = stored
    async with http.get(f"{server.url}/hash/{h}", headers={"Range": spec}) as resp:
        assert resp.status == 206
        body = await resp.read()
        assert body == data[expected]
        assert resp.headers["Content-Range"].endswith(f"/{len(data)}")


async def test_unsatisfiable_range_is_416(http, server, stored):
    data, h = stored
    async with http.get(f"{server.url}/hash/{h}", headers={"Range": f"bytes={len(data) + 10}-"}) as resp:
        assert resp.status == 416


async def test_if_none_match_is_304(http, server, stored):
    _, h = stored
    for tag in (f'"{h}"', f'W/"{h}"', "*", f'"other", "{h}"'):
        async with http.get(f"{server.url}/hash/{h}", headers={"If-None-Match": tag}) as resp:
            assert resp.status == 304, tag
            assert resp.headers["ETag"] == f'"{h}"'
            assert await resp.read() == b""
    async with http.get(f"{server.url}/hash/{h}", headers={"If-None-Match": '"something-else"'}) as resp:
        assert resp.status == 200


async def test_if_match(http, server, stored):
    data, h = stored
    async with http.get(f"{server.url}/hash/{h}", headers={"If-Match": f'"{h}"'}) as resp:
        assert resp.status == 200 and await resp.read() == data
    async with http.get(f"{server.url}/hash/{h}", headers={"If-Match": '"nope"'}) as resp:
        assert resp.status == 412


async def test_gz_named_sibling_is_never_served_as_encoding(http, server, ledger, issuer):
    """FileResponse looks for '<name>.gz' when a client accepts gzip; tails ids may end in '.gz'."""
    from support import id_upload

    plain, gz = issuer.registry(5, tag="sibling"), issuer.registry(100, tag="sibling.gz")
    for made in (plain, gz):
        ledger.publish(made.definition)
        async with http.put(server.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
            assert resp.status in (200, 409)
    async with http.get(server.url + plain.path, headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.status == 200 and "Content-Encoding" not in resp.headers
        assert await resp.read() == plain.tails
        assert resp.headers["ETag"] == f'"{plain.tails_hash}"'


async def test_missing_is_404_and_malformed_is_400(http, server):
    _, h = random_tails(1)
    async with http.get(f"{server.url}/hash/{h}") as resp:
        assert resp.status == 404
    async with http.head(f"{server.url}/hash/{h}") as resp:
        assert resp.status == 404
    async with http.get(f"{server.url}/hash/not-a-hash") as resp:
        assert resp.status == 400
    async with http.get(f"{server.url}/WgWxqztrNooG92RXvxSTWv:4:WgWxqztrNooG92RXvxSTWv:3:CL:20:t:CL_ACCUM:none") as resp:
        assert resp.status == 404
    async with http.get(f"{server.url}/not-an-id") as resp:
        assert resp.status == 400


async def test_no_route_redirects(http, server, stored):
    _, h = stored
    for path in (f"/hash/{h}/", f"//hash/{h}", "/hash", "/match", f"/hash//{h}"):
        async with http.get(server.url + path, allow_redirects=False) as resp:
            assert not 300 <= resp.status < 400, path


async def test_if_modified_since_and_if_range(http, server, stored):
    data, h = stored
    async with http.get(f"{server.url}/hash/{h}") as resp:
        last_modified = resp.headers["Last-Modified"]
    async with http.get(f"{server.url}/hash/{h}", headers={"If-Modified-Since": last_modified}) as resp:
        assert resp.status == 304
    async with http.get(f"{server.url}/hash/{h}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}) as resp:
        assert resp.status == 200 and await resp.read() == data
    for if_range, status in ((f'"{h}"', 206), ('"stale"', 200), (last_modified, 206), ("Mon, 01 Jan 2001 00:00:00 GMT", 200)):
        async with http.get(f"{server.url}/hash/{h}", headers={"Range": "bytes=0-99", "If-Range": if_range}) as resp:
            assert resp.status == status, if_range
            assert await resp.read() == (data[:100] if status == 206 else data)


@pytest.mark.parametrize("spec", ["bytes=abc", "items=0-1", "bytes=5-1"])
async def test_unparseable_range_is_ignored(http, server, stored, spec):
    data, h = stored
    async with http.get(f"{server.url}/hash/{h}", headers={"Range": spec}) as resp:
        assert resp.status == 200 and await resp.read() == data


async def test_large_file_goes_through_sendfile(http, server):
    data, h = random_tails(16384)  # 2 MiB: above the single-write size
    async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    async with http.get(f"{server.url}/hash/{h}") as resp:
        assert resp.headers["Content-Length"] == str(len(data)) and await resp.read() == data
    async with http.get(f"{server.url}/hash/{h}", headers={"Range": "bytes=1000000-"}) as resp:
        assert resp.status == 206 and await resp.read() == data[1000000:]


async def test_each_request_gets_one_access_line(http, server, stored):
    _, h = stored
    marker = f"/hash/{h}?access-line-check"
    async with http.get(server.url + marker) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.5)  # access lines are flushed in batches
    lines = [line for line in server.log().splitlines() if marker in line]
    assert len(lines) == 1 and " 200 " in lines[0] and "ACCESS" in lines[0]


async def test_slow_readers_get_every_byte(http, server):
    """Readers with tiny receive buffers that pause: sendfile() stops part-way and resumes on the loop."""
    data, h = random_tails(60000)  # 7.3 MiB: just under the test server's limit
    async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200

    async def slow_read(range_header: str, expected: bytes, status: int) -> None:
        reader, writer = await tiny_window_get(server.port, f"/hash/{h}", range_header + "Connection: close\r\n")
        await asyncio.sleep(0.3)  # the server fills what the socket holds and must wait
        assert await read_response(reader) == (status, expected)
        writer.close()

    await asyncio.gather(
        slow_read("", data, 200),
        slow_read("Range: bytes=100000-\r\n", data[100000:], 206),
        slow_read("Range: bytes=5-70000\r\n", data[5:70001], 206),
    )


async def test_a_reader_leaving_mid_download_is_no_error(server, http):
    """A holder that hangs up part-way is routine: no traceback, no 500, the server goes on."""
    data, h = random_tails(60000)
    async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status in (200, 409)
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /hash/{h} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.read(1000)
        writer.transport.abort()  # RST, mid-body
    for _ in range(50):  # and before the headers: the request arrives, the client is already gone
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /hash/{h} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        writer.transport.abort()
    await asyncio.sleep(0.5)
    async with http.get(f"{server.url}/hash/{h}") as resp:
        assert resp.status == 200 and await resp.read() == data
    assert "Error handling request" not in server.log() and "Traceback" not in server.log()


async def _read_for(reader: asyncio.StreamReader, seconds: float, every: float = 0.0, piece: int = 1 << 30) -> int:
    """Bytes read until EOF or `seconds`; with `every`, at most `piece` bytes per `every` seconds."""
    got, deadline = 0, asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(piece), left)
        except (TimeoutError, ConnectionError):
            break
        if not chunk:
            break
        got += len(chunk)
        if every:
            await asyncio.sleep(every)
    return got


async def test_a_client_that_stops_reading_is_cut_off(new_server, http):
    """--idle-timeout also bounds a download that makes no progress: the server closes it, then goes on."""
    proc = new_server("--idle-timeout", "0.5")
    data, h = random_tails(60000)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    for extra in ("", "Range: bytes=1000-\r\n"):
        reader, writer = await tiny_window_get(proc.port, f"/hash/{h}", extra)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 20")
        await asyncio.sleep(2.5)  # read nothing: cut off within two timeouts
        # Reading again gets what was in flight, then the end: never the rest of the file.
        assert await _read_for(reader, 20) < len(data) - 1000, "the stalled download was not cut off"
        writer.close()
    # A reader that is slow but keeps taking bytes is never cut off (pauses of 0.2 s, timeout 0.5 s).
    small, small_hash = random_tails(8192)
    async with http.put(f"{proc.url}/hash/{small_hash}", data=small, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    reader, writer = await tiny_window_get(proc.port, f"/hash/{small_hash}", "Connection: close\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and await _read_for(reader, 30, every=0.2, piece=128 * 1024) == len(small)
    writer.close()
    async with http.get(f"{proc.url}/hash/{h}") as resp:
        assert resp.status == 200 and await resp.read() == data
    assert "Traceback" not in proc.log()

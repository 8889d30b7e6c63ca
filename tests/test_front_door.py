"""The front door: plain downloads answered without aiohttp, the same bytes and headers as aiohttp's path.

A query string sends a download through aiohttp (the front door leaves every request with one to
it, and the application ignores queries), so each test compares the two paths on one server.
Every request is written on a raw socket, exactly as given; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import random_tails, raw_request, read_response, tiny_window_get, wait_for

from tails_server.front import BY_HASH, BY_ID

IGNORED = {"date", "x-request-id"}  # differ between any two responses


@pytest.fixture
async def stored(http, server):
    data, h = random_tails(2000)  # 250 KiB: past the inline size, so sendfile sends it
    async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status in (200, 409)
    return data, h


async def read_full(reader: asyncio.StreamReader, head: bool = False, timeout: float = 30) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers (lower-case names, each once) and body of one response."""
    block = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, _, rest = block[:-4].decode("latin-1").partition("\r\n")
    lines = rest.split("\r\n") if rest else []
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert len(headers) == len(lines), f"a header appears twice: {lines}"
    length = int(headers.get("content-length", "0"))
    body = b"" if head or status_line.split()[1] in ("100", "304") else await asyncio.wait_for(reader.readexactly(length), timeout)
    return status_line, headers, body


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server ends the connection within `timeout` s (and sends nothing more)."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def request(method: str, target: str, version: str = "1.1", headers: str = "") -> bytes:
    return f"{method} {target} HTTP/{version}\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "version, connection, stays_open",
    [("1.1", "", True), ("1.1", "Connection: close\r\n", False), ("1.0", "Connection: keep-alive\r\n", True), ("1.0", "", False)],
)
async def test_both_paths_send_the_same_download(server, stored, method, version, connection, stays_open):
    data, h = stored
    answers = []
    for target in (f"/hash/{h}", f"/hash/{h}?through=aiohttp"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request(method, target, version, connection + "X-Request-ID: front-door-test\r\n"))
        status_line, headers, body = await read_full(reader, head=method == "HEAD")
        assert status_line == f"HTTP/{version} 200 OK"
        assert headers["x-request-id"] == "front-door-test"
        assert headers["content-length"] == str(len(data)) and headers["etag"] == f'"{h}"'
        assert body == (data if method == "GET" else b"")
        if stays_open:  # a second request on the same connection
            writer.write(request("GET", f"/hash/{h}", version, connection))
            assert (await read_full(reader))[2] == data
        else:
            assert await closed_by_server(reader, 10)
        writer.close()
        answers.append({k: v for k, v in headers.items() if k not in IGNORED})
    assert answers[0] == answers[1]


async def test_a_registry_id_is_served_by_both_paths(server, http, ledger, registry):
    from support import id_upload

    async with http.put(server.url + registry.path, data=id_upload(ledger.genesis_text, registry.tails)) as resp:
        assert resp.status == 200
    answers = []
    for target in (registry.path, registry.path + "?through=aiohttp"):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request("GET", target))
        status_line, headers, body = await read_full(reader)
        writer.close()
        assert (status_line, body) == ("HTTP/1.1 200 OK", registry.tails)
        answers.append({k: v for k, v in headers.items() if k not in IGNORED})
    assert answers[0] == answers[1]


async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(server, stored):
    """Plain downloads, then one only aiohttp answers: everything after it is aiohttp's, in order."""
    data, h = stored
    missing = random_tails(3)[1]
    pipeline = [
        (request("GET", f"/hash/{h}"), "200", data),
        (request("HEAD", f"/hash/{h}"), "200", b""),
        (request("GET", f"/hash/{h}", headers="Range: bytes=10-19\r\n"), "206", data[10:20]),
        (request("GET", f"/hash/{missing}"), "404", b"404: Not Found"),
        (request("GET", f"/hash/{h}"), "200", data),
        (request("GET", "/hash/not-a-hash"), "400", b"Tails hash is not valid: not-a-hash."),
        (request("GET", f"/hash/{h}"), "200", data),
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"".join(r for r, _, _ in pipeline))
    for raw, status, body in pipeline:
        status_line, _, got = await read_full(reader, head=raw.startswith(b"HEAD"))
        assert (status_line.split()[1], got) == (status, body)
    writer.close()


async def test_a_long_pipeline_is_answered_whole(server, stored):
    """Thousands of requests in one write (small answers, sent at once): every one is answered, in order."""
    data, h = stored
    count = 3000
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"".join(request("HEAD", f"/hash/{h}", headers=f"X-Request-ID: p{n}\r\n") for n in range(count)))
    for n in range(count):
        status_line, headers, _ = await read_full(reader, head=True)
        assert (status_line, headers["x-request-id"], headers["content-length"]) == ("HTTP/1.1 200 OK", f"p{n}", str(len(data)))
    writer.write(request("GET", f"/hash/{h}"))
    assert (await read_full(reader))[2] == data
    writer.close()


async def test_requests_pipelined_behind_a_long_download_wait_in_the_socket(new_server, http):
    """A client that pipelines megabytes of requests behind one download, and reads nothing, must
    not grow the server's memory by as much: what the door has not answered waits in the socket."""
    proc = new_server()
    data, h = random_tails(131072)  # 16 MiB: more than any socket buffers hold
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    server = psutil.Process(proc.proc.pid)
    reader, writer = await tiny_window_get(proc.port, f"/hash/{h}")
    await asyncio.sleep(0.5)  # the download has filled the socket; the door waits for room
    before = server.memory_info().rss
    heads = 60000
    writer.write(request("HEAD", f"/hash/{h}") * heads)  # ~4.5 MB of requests, none read yet
    await asyncio.sleep(1)
    grown = server.memory_info().rss - before
    assert grown < 2 * 1024 * 1024, f"the server took {grown} bytes of pipelined requests into memory"
    status_line, _, body = await read_full(reader)
    assert status_line == "HTTP/1.1 200 OK" and body == data
    for _ in range(heads):  # then every request behind it, in order
        status_line, headers, _ = await read_full(reader, head=True)
        assert status_line == "HTTP/1.1 200 OK" and headers["content-length"] == str(len(data))
    writer.close()


async def test_an_upload_after_downloads_on_one_connection(server, stored):
    """The hand-over gives aiohttp the socket untouched: the upload thread reads the body from it."""
    data, h = stored
    upload, upload_hash = random_tails(9000)  # 1.1 MiB
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request("GET", f"/hash/{h}") * 2)
    assert (await read_full(reader))[2] == data and (await read_full(reader))[2] == data
    writer.write(
        f"PUT /hash/{upload_hash} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(upload)}\r\n\r\n".encode() + upload
    )
    status_line, _, body = await read_full(reader)
    writer.close()
    assert (status_line, body) == ("HTTP/1.1 200 OK", upload_hash.encode())
    assert server.view.file(upload_hash) == upload


ODD_REQUESTS = {
    "bare LF line ends": "GET /hash/{h}{q} HTTP/1.1\nHost: x\n\n",
    "lower-case method": "get /hash/{h}{q} HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute form": "GET http://127.0.0.1/hash/{h}{q} HTTP/1.1\r\nHost: x\r\n\r\n",
    "chunked body": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "body with length": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "expect continue": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    "HTTP/2.0 line": "GET /hash/{h}{q} HTTP/2.0\r\nHost: x\r\n\r\n",
    "obsolete line folding": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n",
    "space before colon": "GET /hash/{h}{q} HTTP/1.1\r\nHost : x\r\n\r\n",
    "control character in a name": "GET /hash/{h}{q} HTTP/1.1\r\nHo\x01st: x\r\n\r\n",
    "header past --max-header-size": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nX-Long: " + "a" * 9000 + "\r\n\r\n",
    "upgrade": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "encoded space": "GET /hash/{h}%20{q} HTTP/1.1\r\nHost: x\r\n\r\n",
    "If-None-Match": 'GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nIf-None-Match: "{h}"\r\n\r\n',
    "If-Match elsewhere": 'GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nIf-Match: "other"\r\n\r\n',
    "If-Modified-Since": "GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n",
    "Range": "GET /hash/{h}{q} HTTP/1.1\r\nhost: x\r\nrange: bytes=5-9\r\n\r\n",
    "If-Range elsewhere": 'GET /hash/{h}{q} HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\nIf-Range: "other"\r\n\r\n',
}


@pytest.mark.parametrize("case", sorted(ODD_REQUESTS))
async def test_odd_requests_get_what_aiohttp_answers(new_server, case):
    """Whatever the front door leaves to aiohttp gets the same status and body as through aiohttp."""
    proc = new_server()
    data, h = random_tails(2000)
    assert await raw_request(proc.port, "PUT", f"/hash/{h}", body=data) == (200, h.encode())
    answers = []
    for query in ("", "?through=aiohttp"):
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(ODD_REQUESTS[case].format(h=h, q=query).encode("latin-1"))
        status_line, _, body = await read_full(reader)
        if status_line.endswith("100 Continue"):
            status_line, _, body = await read_full(reader)
        writer.close()
        reason = body.split(b"\n")[0].replace(b"?through=aiohttp", b"") if body != data else b""  # error texts quote the request
        answers.append((status_line, body == data, reason))
    assert answers[0] == answers[1]
    assert answers[0][0].split()[1] in ("200", "206", "304", "400", "404", "412", "431")
    await asyncio.sleep(0.3)  # log lines are written in batches
    log = proc.log()  # a malformed request is the client's error: one line, no traceback
    assert "Traceback" not in log and " ERROR " not in log
    if case == "bare LF line ends":
        assert "INFO aiohttp.server: Error handling request from 127.0.0.1: 400 Bad status line: Expected CRLF" in log


async def test_a_client_that_half_closes_still_gets_its_download(new_server):
    """Local storage only: aiohttp itself (the S3 server's only path) closes such a connection unanswered."""
    proc = new_server()
    data, h = random_tails(2000)
    assert await raw_request(proc.port, "PUT", f"/hash/{h}", body=data) == (200, h.encode())
    for receive_buffer in (None, 4096):  # with 4 KiB, the first answer is still leaving when the EOF comes
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", proc.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(request("GET", f"/hash/{h}") * 2)
        writer.write_eof()
        await asyncio.sleep(0.2)
        assert (await read_full(reader))[2] == data and (await read_full(reader))[2] == data
        assert await closed_by_server(reader, 10)
        writer.close()


async def test_idle_and_slow_header_connections_are_closed_after_the_idle_timeout(new_server):
    """--idle-timeout (1 s here): counted from the connection's last answer, never extended by trickling headers."""
    proc = new_server("--idle-timeout", "1")
    data, h = random_tails(100)
    assert await raw_request(proc.port, "PUT", f"/hash/{h}", body=data) == (200, h.encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)  # silent from the start
    assert await closed_by_server(reader, 5)
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)  # idle after two downloads
    for _ in range(2):  # the first answer leaves the connection open for the next request
        writer.write(request("GET", f"/hash/{h}"))
        assert (await read_full(reader))[2] == data
    assert await closed_by_server(reader, 5)
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)  # a header byte every 0.2 s, for 5 s at most
    writer.write(f"GET /hash/{h} HTTP/1.1\r\nHost: x\r\n".encode())
    cut = False
    for _ in range(25):
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            cut = True
            break
        if await closed_by_server(reader, 0.2):
            cut = True
            break
    assert cut, "trickling headers kept the connection open"
    writer.close()


async def test_front_door_answers_are_counted_and_logged(new_server):
    proc = new_server()
    data, h = random_tails(2000)
    assert await raw_request(proc.port, "PUT", f"/hash/{h}", body=data) == (200, h.encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    for n in range(3):
        writer.write(request("GET", f"/hash/{h}", headers=f"X-Request-ID: counted-{n}\r\n"))
        assert (await read_full(reader))[2] == data
    writer.write(request("HEAD", f"/hash/{h}") + request("GET", f"/hash/{h}?through=aiohttp"))
    await read_full(reader, head=True)
    await read_full(reader)
    writer.close()
    status, text = await raw_request(proc.port, "GET", "/metrics")
    assert status == 200
    metrics = text.decode()

    def value(route: str, method: str) -> float:
        match = re.search(rf'tails_http_requests_total{{method="{method}",route="{re.escape(route)}",status="200"}} (\S+)', metrics)
        return float(match[1]) if match else 0.0

    assert value(BY_HASH, "GET") == 4 and value(BY_HASH, "HEAD") == 1 and value(BY_ID, "GET") == 0
    sent = float(re.search(r"^tails_http_sent_bytes_total (\S+)$", metrics, re.M)[1])
    assert 5 * len(data) <= sent < 5 * len(data) + 200  # four bodies, and the HEAD counts its Content-Length as on aiohttp's path
    await wait_for(lambda: "counted-2" in proc.log())
    for n in range(3):
        line = next(line for line in proc.log().splitlines() if line.endswith(f"counted-{n}"))
        assert f'"GET /hash/{h}" 200 {len(data)} ' in line and "ACCESS 127.0.0.1" in line


async def test_a_download_in_flight_finishes_when_the_server_stops(new_server):
    """SIGTERM: idle connections close at once, a download still leaving gets --shutdown-timeout."""
    proc = new_server("--shutdown-timeout", "30", "--idle-timeout", "300")
    data, h = random_tails(64_000)  # 8 MiB: far more than the socket buffers hold
    assert await raw_request(proc.port, "PUT", f"/hash/{h}", body=data) == (200, h.encode())
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", proc.port)
    idle_writer.write(request("HEAD", f"/hash/{h}"))
    await read_full(idle_reader, head=True)
    reader, writer = await tiny_window_get(proc.port, f"/hash/{h}")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    proc.proc.send_signal(signal.SIGTERM)
    assert await closed_by_server(idle_reader, 10)  # idle: closed at once, not after 300 s
    body = await asyncio.wait_for(reader.readexactly(len(data)), 60)  # the download goes on to the end
    assert body == data
    assert await closed_by_server(reader, 10)
    writer.close()
    idle_writer.close()
    assert await asyncio.to_thread(proc.proc.wait, 60) == 0


async def test_a_missing_file_is_aiohttps_404(server):
    """The front door answers only files that exist; read_response sees aiohttp's 404 text."""
    missing = random_tails(4)[1]
    assert await raw_request(server.port, "GET", f"/hash/{missing}") == (404, b"404: Not Found")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request("GET", f"/hash/{missing}") + request("GET", "/livez"))
    assert (await read_response(reader))[0] == 404
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.fixture(scope="module")
def plain_file(server) -> tuple[bytes, str]:
    data, h = random_tails(600)  # 75 KiB: sent with sendfile
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        assert sock.makefile("rb").readline().split()[1] in (b"200", b"409")
    return data, h


def read_sync(stream, head: bool) -> tuple[bytes, bytes]:
    """Status code and body of one response from a blocking socket's file."""
    status = stream.readline().split()[1]
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, b"" if head else stream.read(length)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=10_000), max_size=12), hand_over=st.booleans())
def test_a_pipeline_cut_anywhere_gets_every_answer(server, plain_file, cuts, hand_over):
    """However the bytes of a pipeline arrive, each request gets its own answer, in order."""
    data, h = plain_file
    pipeline = [
        (request("GET", f"/hash/{h}"), b"200", data),
        (request("HEAD", f"/hash/{h}", headers="Connection: keep-alive\r\n"), b"200", b""),
        (request("GET", f"/hash/{h}", headers="X-Request-ID: cut\r\n"), b"200", data),
    ]
    if hand_over:  # a request only aiohttp answers, and plain ones behind it
        pipeline[1:1] = [(request("GET", f"/hash/{h}", headers="Range: bytes=0-2\r\n"), b"206", data[:3])]
    raw = b"".join(r for r, _, _ in pipeline)
    points = sorted({c % len(raw) for c in cuts} - {0}) + [len(raw)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = 0
        for point in points:
            sock.sendall(raw[start:point])
            start = point
            time.sleep(0.002)  # separate reads on the server, most of the time
        stream = sock.makefile("rb")
        for raw_request_, status, body in pipeline:
            assert read_sync(stream, head=raw_request_.startswith(b"HEAD")) == (status, body)

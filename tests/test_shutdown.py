"""A stopping server (SIGTERM): uploads in flight get --shutdown-timeout to finish, then a 503.

Every test stops a real server process while an upload is half sent, and waits (bounded, and far
below --read-timeout) for the answer and for the process to exit. aiohttp reads nothing more once
it stops, so a body it reads itself (chunked here, or over TLS) is refused at once instead.
"""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest
from support import encode_multipart, random_tails, raw_request, read_response, tiny_window_get, wait_for

from tails_server.errors import SHUTTING_DOWN

READ_TIMEOUT = "300"  # never what ends an upload here


async def start_upload(port: int, h: str, form: str, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send the headers and the first half of an upload; returns the connection and the rest to send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if form == "chunked":  # stays on the event loop: no Content-Length
        writer.write(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        half = len(data) // 2
        writer.write(b"%x\r\n%s\r\n" % (half, data[:half]))
        rest = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data) - half, data[half:])
    else:
        body, ctype = (data, "application/octet-stream") if form == "raw" else encode_multipart([("tails", data)])
        writer.write(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        writer.write(body[: len(body) // 2])
        rest = body[len(body) // 2:]
    await writer.drain()
    return reader, writer, rest


def refused(port: int) -> bool:
    """Whether the port turns connections away (the server stopped listening)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("form", ["raw", "multipart", "chunked"])
async def test_a_stalled_upload_gets_503_and_the_server_exits(new_server, form, workers):
    proc = new_server("--shutdown-timeout", "1", "--read-timeout", READ_TIMEOUT, "--workers", workers)
    data, h = random_tails(16_000)  # 2 MiB
    reader, writer, _ = await start_upload(proc.port, h, form, data)
    await wait_for(lambda: proc.view.temp_files() != [])  # the server is receiving it
    proc.proc.send_signal(signal.SIGTERM)
    assert await read_response(reader, timeout=60) == (503, SHUTTING_DOWN.encode())
    writer.close()
    assert await asyncio.to_thread(proc.proc.wait, 60) == 0
    assert proc.view.temp_files() == []
    assert proc.view.file(h) is None


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_an_upload_still_sending_finishes_while_the_server_stops(new_server, form):
    proc = new_server("--shutdown-timeout", "60", "--read-timeout", READ_TIMEOUT)
    data, h = random_tails(16_000)
    reader, writer, rest = await start_upload(proc.port, h, form, data)
    await wait_for(lambda: proc.view.temp_files() != [])
    proc.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: refused(proc.port))  # no new connections once stopping
    writer.write(rest)
    await writer.drain()
    assert await read_response(reader, timeout=60) == (200, h.encode())
    writer.close()
    assert await asyncio.to_thread(proc.proc.wait, 60) == 0
    assert proc.view.file(h) == data
    assert proc.view.temp_files() == []


async def test_a_body_the_event_loop_reads_is_refused_at_once(new_server):
    """Chunked: aiohttp would drop the rest, so waiting out --shutdown-timeout (60 s) would be for nothing."""
    proc = new_server("--shutdown-timeout", "60", "--read-timeout", READ_TIMEOUT)
    data, h = random_tails(16_000)
    reader, writer, _ = await start_upload(proc.port, h, "chunked", data)
    await wait_for(lambda: proc.view.temp_files() != [])
    proc.proc.send_signal(signal.SIGTERM)
    assert await read_response(reader, timeout=30) == (503, SHUTTING_DOWN.encode())
    writer.close()
    assert await asyncio.to_thread(proc.proc.wait, 30) == 0
    assert proc.view.temp_files() == []


async def test_a_download_the_client_stopped_reading_does_not_hold_up_the_stop(new_server):
    """It is cut long before --idle-timeout (300 s here) would end it: after --shutdown-timeout twice."""
    proc = new_server("--shutdown-timeout", "1", "--idle-timeout", "300")
    data, h = random_tails(64_000)  # 8 MiB: far more than the socket buffers hold
    assert await raw_request(proc.port, "PUT", f"/hash/{h}", body=data) == (200, h.encode())
    reader, writer = await tiny_window_get(proc.port, f"/hash/{h}")
    await reader.readuntil(b"\r\n\r\n")  # the download has started; now read nothing more
    proc.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.proc.wait, 60) == 0
    received = len(await asyncio.wait_for(reader.read(), 30))  # what was in flight, then the end
    writer.close()
    assert received < len(data)

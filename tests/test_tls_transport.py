"""The TLS transport (tails_server/tls/): real OpenSSL on both ends, real sockets on loopback.

In-process tests drive TlsServer with small protocols, to reach what the server's routes never
ask of a transport: reads paused and resumed mid-stream, loop.sendfile, a client's close_notify.
Server-level tests check what a client of the running server sees at the end of a connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

import pytest
from support import random_tails, wait_for

from tails_server.limits import ClientAddress, Connections
from tails_server.tls import TlsServer
from tails_server.tls.site import listening_sockets


@pytest.fixture
def server_context(tls_files) -> ssl.SSLContext:
    chain, key, _ = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    return context


async def serve(context: ssl.SSLContext, factory, handshake_timeout: float = 5.0) -> tuple[TlsServer, int, Connections]:
    connections = Connections(100, 100, ClientAddress([]))
    sockets = await listening_sockets("127.0.0.1", 0, 16, False)
    server = TlsServer(sockets, context, connections, factory, handshake_timeout, 16)
    return server, server.sockets[0].getsockname()[1], connections


class Collecting(asyncio.Protocol):
    """Takes everything in, pausing reading after each piece and resuming it a moment later."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.paused_reads = 0  # data that arrived while reading was paused: must stay 0
        self.paused = False
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.paused_reads += self.paused
        self.received += data
        self.paused = True
        self.transport.pause_reading()
        assert not self.transport.is_reading()
        asyncio.get_running_loop().call_later(0.002, self.resume)

    def resume(self) -> None:
        self.paused = False
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.transport.write(b"got %d" % len(self.received))
        return False  # close: after what was just written

    def connection_lost(self, exc) -> None:
        self.done.set_result(exc)


async def test_reads_paused_and_resumed_lose_and_reorder_nothing(server_context, tls_files):
    client = tls_files[2]
    protocols: list[Collecting] = []
    server, port, connections = await serve(server_context, lambda: protocols.append(Collecting()) or protocols[-1])
    data, _ = random_tails(24000)  # ~2.9 MiB: many records, several reads of the largest size
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        for start in range(0, len(data), 100_000):
            writer.write(data[start : start + 100_000])
            await writer.drain()
        await wait_for(lambda: protocols and len(protocols[0].received) >= len(data), 20)
        transport = protocols[0].transport
        assert transport.get_extra_info("sockname") == ("127.0.0.1", port)
        assert transport.get_extra_info("peername") == writer.get_extra_info("sockname")
        assert transport.get_extra_info("cipher")[1].startswith("TLS")  # asked of OpenSSL
        assert bytes(protocols[0].received) == data and protocols[0].paused_reads == 0
        writer.close()
        assert await asyncio.wait_for(protocols[0].done, 10) is None
    finally:
        server.close()
    assert not connections.open  # counted back when the transport closed


class SendsFile(asyncio.Protocol):
    """Answers the first bytes it receives with a whole file, through loop.sendfile (asyncio's chunked fallback)."""

    def __init__(self, path) -> None:
        self.path = path
        self.sent = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        with open(self.path, "rb") as file:
            sent = await asyncio.get_running_loop().sendfile(self.transport, file)
        self.sent.set_result(sent)
        self.transport.close()


async def test_loop_sendfile_writes_a_file_through_the_transport(server_context, tls_files, tmp_path):
    client = tls_files[2]
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "f").write_bytes(data)
    protocols: list[SendsFile] = []
    server, port, _ = await serve(server_context, lambda: protocols.append(SendsFile(tmp_path / "f")) or protocols[-1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.write(b"go")
        received = await asyncio.wait_for(reader.read(), 20)  # to the server's close_notify
        assert received == data and await protocols[0].sent == len(data)
        writer.close()
    finally:
        server.close()


def _exchange(port: int, context: ssl.SSLContext, request: bytes, close_after_request: bool) -> bytes:
    """A blocking client over memory buffers, so that it decides what it has received when; an EOF
    without the server's close_notify (a ragged one) fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

        def send() -> None:
            if data := outgoing.read():
                raw.sendall(data)

        def receive() -> None:
            data = raw.recv(1 << 16)
            if not data:
                raise AssertionError("the connection ended without the server's close_notify")
            incoming.write(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                send()
                receive()
        tls.write(request)
        send()
        if close_after_request:  # our close_notify, before any of the answer is taken in
            try:
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass
            send()
        received = bytearray()
        while True:
            try:
                chunk = tls.read(1 << 16)
            except ssl.SSLWantReadError:
                receive()
                continue
            except ssl.SSLZeroReturnError:  # the server's close_notify, after ours
                break
            if not chunk:  # the server's close_notify
                break
            received += chunk
        return bytes(received)


class Answers(asyncio.Protocol):
    """Answers once the client's side ends (eof_received keeps the connection open for the answer)."""

    def connection_made(self, transport) -> None:
        self.transport, self.request = transport, b""

    def data_received(self, data: bytes) -> None:
        self.request += data

    def eof_received(self) -> bool:
        asyncio.get_running_loop().call_later(0.05, self.answer)
        return True

    def answer(self) -> None:
        self.transport.write(b"answer to " + self.request)
        self.transport.close()


async def test_a_client_that_ends_its_side_gets_its_answer_and_a_close_notify(server_context, tls_files):
    client = tls_files[2]
    server, port, connections = await serve(server_context, Answers)
    try:
        got = await asyncio.to_thread(_exchange, port, client, b"question", True)
        assert got == b"answer to question"
    finally:
        server.close()
    assert not connections.open


async def test_the_server_ends_each_connection_with_close_notify(new_server, tls_files):
    chain, key, client = tls_files
    proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), ssl_context=client)
    data, h = random_tails(40000)  # ~4.9 MiB: read from disk, not held in memory
    put = (f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
           f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    answer = await asyncio.to_thread(_exchange, proc.port, client, put, False)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(h.encode())
    for path, closing in ((f"/hash/{h}", False), (f"/hash/{h}", True), (f"/hash/{h}?via=aiohttp", False), ("/livez", False)):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        answer = await asyncio.to_thread(_exchange, proc.port, client, request, closing)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), (path, head)
        if path.startswith("/hash/"):
            assert body == data, (path, closing, len(body))


async def test_garbage_for_a_hello_and_a_silent_client_are_closed_and_counted_back(server_context):
    server, port, connections = await serve(server_context, asyncio.Protocol, handshake_timeout=0.5)
    try:
        garbage_reader, garbage = await asyncio.open_connection("127.0.0.1", port)
        garbage.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plaintext to a TLS port
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        try:  # closed at once: an alert at most, never an answer
            said = await asyncio.wait_for(garbage_reader.read(), 5)
            assert said == b"" or (said[0] == 0x15 and len(said) == 7), said  # nothing, or one TLS alert record
        except ConnectionResetError:  # closed with the request unread
            pass
        assert await asyncio.wait_for(silent_reader.read(), 5) == b""  # closed at the handshake timeout
        garbage.close()
        silent.close()
        assert not connections.open and not server.handshaking
    finally:
        server.close()


class WritesAndReuses(asyncio.Protocol):
    """Writes a bytearray the socket cannot take at once, then overwrites it, as a careless writer would."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)

    def data_received(self, data: bytes) -> None:
        buffer = bytearray(b"a" * (4 << 20))
        self.transport.write(buffer)
        self.queued = self.transport.get_write_buffer_size()
        buffer[:] = b"b" * len(buffer)  # the transport took a copy: nothing of this may reach the client
        view = memoryview(bytes(b"c" * (1 << 20))).toreadonly()
        self.transport.write(view)
        self.transport.close()


async def test_queued_writes_keep_the_bytes_they_were_given(server_context, tls_files):
    client = tls_files[2]
    protocols: list[WritesAndReuses] = []
    server, port, _ = await serve(server_context, lambda: protocols.append(WritesAndReuses()) or protocols[-1])
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # with the server's small send buffer: 4 MiB cannot fit
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, ssl=client, server_hostname="127.0.0.1")
        writer.write(b"go")
        await asyncio.sleep(0.2)  # the server's socket fills while this client reads nothing
        received = await asyncio.wait_for(reader.read(), 20)
        assert protocols[0].queued > 0  # the socket could not take it all: it was queued
        assert received == b"a" * (4 << 20) + b"c" * (1 << 20)
        writer.close()
    finally:
        server.close()


class Fails(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        raise RuntimeError("a bug in a protocol")


async def test_a_failing_protocol_is_reported_and_its_connection_closed(server_context, tls_files):
    client = tls_files[2]
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    server, port, connections = await serve(server_context, Fails)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.write(b"anything")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await wait_for(lambda: not connections.open, 5)
        assert [type(context["exception"]) for context in reported] == [RuntimeError]
    finally:
        loop.set_exception_handler(previous)
        server.close()

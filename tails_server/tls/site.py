"""HTTPS listeners: accepting, admitting each connection at once, and handing it to a TLS transport.

asyncio's own TLS server hands a connection to the application only once its handshake is done,
and gives the handshake 60 s: clients that connect and never finish would hold descriptors,
uncounted, for that long. Here each accepted connection is admitted (or refused) by the
connection limits at once, like a plaintext one, and has HANDSHAKE_TIMEOUT s to finish its
handshake. Then its protocol (the front door, or aiohttp's handler) takes it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from ..limits import Connections
from .transport import MAX_READ, TlsTransport

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # s; a slow mobile link needs a few, a flood gets no more than this
ACCEPT_RETRY = 1.0  # s before accepting again when the process is out of descriptors (as asyncio)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


async def listening_sockets(host: str, port: int, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address `host` names (as loop.create_server makes)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"no address to listen on for {host!r}")
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address gets its own socket
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class TlsServer:
    """Listening sockets whose connections become TlsTransports (the part of asyncio.Server aiohttp uses)."""

    def __init__(self, sockets: list[socket.socket], context: ssl.SSLContext, connections: Connections,
                 protocol_factory: Callable[[], asyncio.BaseProtocol], handshake_timeout: float, backlog: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets: list[socket.socket] | None = sockets
        self.context, self.connections, self.protocol_factory = context, connections, protocol_factory
        self.handshake_timeout, self.backlog = handshake_timeout, backlog
        self.handshaking: set[TlsTransport] = set()
        self._read_buffer = memoryview(bytearray(MAX_READ))  # one per event loop: each read is copied out at once
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets or ())

    def is_serving(self) -> bool:
        return self._sockets is not None

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(self.backlog):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    log.warning("accept() failed: %s", exc)
                    return
                # The listening socket stays readable: stop watching it for a while, and say so once.
                self._loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": exc})
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_RETRY, self._resume, listener)
                return
            self._connect(sock, peer)

    def _connect(self, sock: socket.socket, peer) -> None:
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            return
        transport = TlsTransport(self._loop, sock, peer, self._read_buffer, self._closed)
        if not self.connections.admit(transport, answer=False):
            return  # over a limit: closed at once (a plaintext 503 would mean nothing to a TLS client)
        self.handshaking.add(transport)
        transport.start(self.context, self._ready(transport), self.handshake_timeout)

    def _ready(self, transport: TlsTransport) -> Callable[[], asyncio.BaseProtocol]:
        def protocol() -> asyncio.BaseProtocol:
            self.handshaking.discard(transport)
            return self.protocol_factory()
        return protocol

    def _closed(self, transport: TlsTransport) -> None:
        self.handshaking.discard(transport)
        self.connections.release(transport)

    def _resume(self, listener: socket.socket) -> None:
        if self._sockets is not None and listener in self._sockets:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def close(self) -> None:
        """Stop listening, and end the handshakes in progress; connections already handed over stay."""
        sockets, self._sockets = self._sockets, None
        for sock in sockets or ():
            self._loop.remove_reader(sock.fileno())
            sock.close()
        for transport in list(self.handshaking):
            transport.abort()

    async def wait_closed(self) -> None:
        return None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop


class TlsSite(web.BaseSite):
    """An HTTPS listener for aiohttp's runner: aiohttp's TCPSite, with connections admitted at accept."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext, connections: Connections,
                 reuse_port: bool, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        super().__init__(runner)
        self.host, self.port, self.context, self.reuse_port = host, port, context, reuse_port
        self.connections, self.handshake_timeout = connections, handshake_timeout
        self.handler_factory: Callable[[], asyncio.BaseProtocol] = lambda: runner.server()

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        sockets = await listening_sockets(self.host, self.port, self._backlog, self.reuse_port)
        self._server = TlsServer(sockets, self.context, self.connections, self.handler_factory, self.handshake_timeout,
                                 self._backlog)

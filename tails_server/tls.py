"""HTTPS listeners whose connections are counted from the moment they are accepted.

asyncio's own TLS server hands a connection to the application only once its handshake is done,
and gives the handshake 60 s: clients that connect and never finish would hold descriptors,
uncounted, for that long. Here each accepted connection is admitted (or refused) by the
connection limits at once, like a plaintext one, and has HANDSHAKE_TIMEOUT s to finish its
handshake (asyncio's TLS, through the public start_tls). Then aiohttp's handler takes it over.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .limits import Connections

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # s; a slow mobile link needs a few, a flood gets no more than this
_ULP = Path("/proc/sys/net/ipv4/tcp_available_ulp")


def kernel_tls() -> str:
    """Why downloads are not encrypted by the kernel here (for /status): kernel TLS is never used.

    Kernel TLS needs an OpenSSL that owns the socket (ssl.OP_ENABLE_KTLS, Python 3.12+) and the
    kernel's TLS module; asyncio's TLS encrypts in memory buffers, which the kernel cannot take over.
    """
    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        return f"not used: Python {sys.version_info.major}.{sys.version_info.minor} has no ssl.OP_ENABLE_KTLS"
    try:
        offered = "tls" in _ULP.read_text().split()
    except OSError:
        offered = False
    if not offered:
        return "not used: the kernel offers no TLS (its tls module is not loaded)"
    return "not used: the kernel offers it, but asyncio's TLS encrypts in memory, which the kernel cannot take over"


class Waiting(asyncio.Protocol):
    """What a connection receives between its handshake's end and the handler's start, kept for it."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the handler decides when to close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def hand_over(self, transport: asyncio.Transport, handler: asyncio.Protocol) -> None:
        """Give the connection, and anything it sent meanwhile, to its handler."""
        transport.set_protocol(handler)
        handler.connection_made(transport)
        for data in self.data:
            handler.data_received(data)
        if self.eof and not handler.eof_received():
            transport.close()


class Handshake(asyncio.Protocol):
    """One accepted connection: admitted by the limits, then its TLS handshake, within the timeout."""

    def __init__(self, site: TlsSite) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self.site.connections.admit(transport, answer=False):
            return  # over a limit: closed at once (a plaintext 503 would mean nothing to a TLS client)
        self.transport = transport
        transport.pause_reading()  # the ClientHello waits for the TLS protocol
        self.task = asyncio.get_running_loop().create_task(self._handshake(transport))

    def connection_lost(self, exc: Exception | None) -> None:
        # Only before the handshake began: from then on the TLS protocol owns the transport.
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.site.connections.release(self.transport)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        waiting = Waiting()
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, waiting, self.site.context, server_side=True, ssl_handshake_timeout=self.site.handshake_timeout
            )
        except (OSError, EOFError, TimeoutError) as exc:  # a failed or abandoned handshake: start_tls closed it
            log.debug("TLS handshake failed: %s", exc.__class__.__name__)
            tls = None
        except asyncio.CancelledError:
            self.site.connections.release(transport)
            raise
        if tls is None or waiting.lost:
            self.site.connections.release(transport)
            return
        self.site.connections.transfer(transport, tls)
        waiting.hand_over(tls, self.site.handler_factory())


class TlsSite(web.BaseSite):
    """An HTTPS listener for aiohttp's runner: aiohttp's TCPSite, with connections admitted at accept."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, context: ssl.SSLContext, connections: Connections,
                 reuse_port: bool, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        super().__init__(runner)
        self.host, self.port, self.context, self.reuse_port = host, port, context, reuse_port
        self.connections, self.handshake_timeout = connections, handshake_timeout
        self.handler_factory: Callable[[], asyncio.Protocol] = lambda: runner.server()

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Handshake(self), self.host, self.port, backlog=self._backlog, reuse_port=self.reuse_port
        )

"""Open connections, counted per process and per client, so one client cannot take every file descriptor.

Every kind of connection is counted: those the front door answers, TLS connections from their
accept on, and aiohttp's (object storage, and everything handed over). A connection over a limit gets a 503 and is closed at once,
so a refused client learns why and every descriptor comes back.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web

from .clients import ClientAddress, client_key, forget_one

_REFUSAL = (
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: {retry}\r\n"
    "Connection: close\r\nContent-Length: {length}\r\n\r\n{reason}"
)


def refuse(transport: asyncio.BaseTransport, reason: str, retry_after: int = 1) -> None:
    """Answer a connection that will not be served with a 503, then close it."""
    try:
        transport.write(_REFUSAL.format(retry=retry_after, length=len(reason.encode()), reason=reason).encode())
    except (OSError, RuntimeError, AttributeError):
        pass
    transport.close()


def _nothing(*_args) -> None:
    pass


class Connections:
    """How many connections are open, in all and per client; admits or refuses each new one."""

    def __init__(self, limit: int, per_client: int, addresses: ClientAddress) -> None:
        self.limit, self.per_client, self.addresses = limit, per_client, addresses
        self.open: dict[Any, str] = {}  # transport -> client key
        self.by_client: Counter[str] = Counter()
        self.on_open = self.on_close = _nothing  # metrics, once installed
        self.on_refused = _nothing

    def admit(self, transport: asyncio.BaseTransport, answer: bool = True) -> bool:
        """Count a new connection; False (after answering it with a 503, or closing it) if it is over a limit."""
        if transport in self.open:  # a front door's connection handed over to aiohttp: already counted
            return True
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else None
        key = client_key(address)
        if len(self.open) >= self.limit:
            reason = "too_many_connections"
            text = "The server has too many connections open; retry shortly.\n"
        elif self.by_client[key] >= self.per_client and not self.addresses.is_trusted(address):
            reason = "too_many_from_client"
            text = "Too many connections from your address; close some and retry.\n"
        else:
            self.open[transport] = key
            self.by_client[key] += 1
            self.on_open()
            return True
        self.on_refused(reason)
        if answer:
            refuse(transport, text)
        else:
            transport.abort()
        return False

    def transfer(self, old: asyncio.BaseTransport, new: asyncio.BaseTransport) -> None:
        """The connection counted as `old` goes on as `new` (a TLS transport over it)."""
        key = self.open.pop(old, None)
        if key is not None:
            self.open[new] = key

    def out_of_descriptors(self, transport: asyncio.BaseTransport, error: OSError) -> None:
        """An admitted connection that cannot be served for want of a descriptor: 503, and close it."""
        self.on_refused("out_of_descriptors")
        refuse(transport, f"The server cannot take more connections now ({error.strerror}); retry shortly.\n")

    def release(self, transport: asyncio.BaseTransport) -> None:
        """A counted connection closed."""
        key = self.open.pop(transport, None)
        if key is not None:
            self.on_close()
            forget_one(self.by_client, key)

    def watch(self, server: web.Server) -> None:
        """Count aiohttp's connections too (its Server is told of each one's start and end)."""
        made, lost = server.connection_made, server.connection_lost
        transports: dict[Any, asyncio.BaseTransport] = {}

        def connection_made(handler, transport) -> None:
            made(handler, transport)
            if self.admit(transport):
                transports[handler] = transport

        def connection_lost(handler, exc=None) -> None:
            lost(handler, exc)
            transport = transports.pop(handler, None)
            if transport is not None:
                self.release(transport)

        server.connection_made = connection_made
        server.connection_lost = connection_lost

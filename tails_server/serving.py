"""Running the application: aiohttp's runner, with connections starting at the front door.

This is aiohttp's run_app with one difference: over local storage, each connection starts with a
FrontDoor, which answers plain downloads and hands everything else to aiohttp's own protocol;
on TLS listeners each connection is counted from its accept (tls.TlsSite), and after its
handshake starts at the front door too. Object storage uses aiohttp's protocol unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from aiohttp import web

from . import logs, metrics
from .app import STORAGE
from .config import Settings
from .front import FrontDoors
from .front.cache import SmallFiles
from .health import TRANSPORT
from .limits import ClientAddress, Connections, QuietAcceptErrors, connection_budget, parse_networks, raise_fd_limit, reserve
from .storage.local import LocalStorage
from .tls import HANDSHAKE_TIMEOUT, TlsSite, kernel_tls


class FrontSite(web.BaseSite):
    """A TCP listener whose connections start at the front door (aiohttp's TCPSite, another protocol)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, doors: FrontDoors, reuse_port: bool) -> None:
        super().__init__(runner)
        self.host, self.port, self.doors, self.reuse_port = host, port, doors, reuse_port

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self.doors, self.host, self.port, backlog=self._backlog, reuse_port=self.reuse_port
        )


def front_doors(app: web.Application, settings: Settings, runner: web.AppRunner, tls: bool,
                connections: Connections) -> FrontDoors | None:
    """Front doors for this server, stopped with it; None where every request must go to aiohttp."""
    storage = app[STORAGE]
    if not isinstance(storage, LocalStorage) or not (tls or hasattr(os, "sendfile")):
        return None
    cache = SmallFiles(storage, settings.tls_cache_size) if tls and settings.tls_cache_size else None
    doors = FrontDoors(storage, lambda: runner.server(), settings.idle_timeout, settings.max_header_size, connections,
                       encrypted=tls, cache=cache)
    drained: list[asyncio.Task] = []

    async def stop(_app: web.Application) -> None:
        # Runs beside aiohttp's own wait for its requests, with the same timeout.
        doors.stop()
        drained.append(asyncio.ensure_future(doors.drained(settings.shutdown_timeout)))

    async def wait(_app: web.Application) -> None:
        for task in drained:
            await task

    app.on_shutdown.append(stop)
    app.on_cleanup.insert(0, wait)  # before storage and threads close
    return doors


def run(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop as aiohttp's run_app does (requests get the shutdown timeout)."""
    loop = asyncio.new_event_loop()
    main = loop.create_task(_serve(app, settings))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()  # its cleanup stops the listeners, then waits for requests in flight
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            remaining = asyncio.all_tasks(loop)
            for task in remaining:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*remaining, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            metrics.flush()  # the last requests' counts, for the workers that stay


def connection_limits(settings: Settings) -> Connections:
    """This process's connection caps, from the file descriptors it may open (raised to the hard limit)."""
    limit = raise_fd_limit()
    budget = connection_budget(settings.max_connections, limit, reserve(settings.max_uploads, settings.pool_cache_size))
    connections = Connections(budget, settings.max_connections_per_client, ClientAddress(parse_networks(settings.trusted_proxies)))
    metrics.watch_connections(connections)
    return connections


async def _serve(app: web.Application, settings: Settings) -> None:
    asyncio.get_running_loop().set_exception_handler(QuietAcceptErrors())
    connections = connection_limits(settings)
    runner = web.AppRunner(
        app,
        handle_signals=True,
        access_log_class=logs.AccessLogger,
        # aiohttp starts this timer when a connection opens and does not extend it while request
        # headers trickle in: it is the idle timeout and the slowloris guard at once.
        keepalive_timeout=settings.idle_timeout,
        shutdown_timeout=settings.shutdown_timeout,
    )
    ssl_context = settings.ssl_context()
    doors = front_doors(app, settings, runner, tls=ssl_context is not None, connections=connections)
    app[TRANSPORT] = {
        "tls": ssl_context is not None,
        "plain_downloads": "front door" if doors is not None else "aiohttp",
        **({"kernel_tls": kernel_tls()} if ssl_context is not None else {}),
        **({"tls_cache": doors.cache.summary} if doors is not None and doors.cache is not None else {}),
    }
    await runner.setup()
    connections.watch(runner.server)
    reuse_port = settings.workers > 1
    if ssl_context is not None:
        handshake = min(settings.idle_timeout, HANDSHAKE_TIMEOUT)
        site: web.BaseSite = TlsSite(runner, settings.host, settings.port, ssl_context, connections, reuse_port, handshake)
        if doors is not None:
            site.handler_factory = doors
    elif doors is None:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port)
    else:
        site = FrontSite(runner, settings.host, settings.port, doors, reuse_port)
    try:
        await site.start()
        await asyncio.Event().wait()  # until a signal ends the loop
    finally:
        await runner.cleanup()

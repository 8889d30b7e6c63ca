"""The `tails-server` command."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from . import __version__, logs
from .app import create_app
from .config import Settings, load_settings
from .workers import Supervisor

LOGGER = logging.getLogger("tails_server")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server (one process, or a supervisor and its workers) until interrupted."""
    settings = load_settings(argv)
    if settings.workers == 1:
        logs.configure(settings.log_level)
        _announce(settings)
        _serve(settings)
        return 0
    logging.basicConfig(level=settings.log_level, format=logs.FORMAT)  # no threads before fork()
    _announce(settings)
    return Supervisor(settings.workers, lambda: _worker(settings)).run()


def _announce(settings: Settings) -> None:
    if settings.ledgers:
        trust = "uploads by registry id are checked only on the trusted ledgers " + ", ".join(sorted(settings.ledgers))
    else:
        trust = (
            "uploads by registry id are checked on whatever ledger the uploader's genesis names, as the "
            "reference server does (use --ledger NAME=GENESIS_FILE to trust only your ledgers)"
        )
    LOGGER.info(
        "tails-server %s on %s://%s:%d with %d worker(s); %s",
        __version__, settings.scheme, settings.host, settings.port, settings.workers, trust,
    )


def _worker(settings: Settings) -> None:
    logs.configure(settings.log_level)
    _serve(settings)


def _serve(settings: Settings) -> None:
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        reuse_port=settings.workers > 1,
        ssl_context=settings.ssl_context(),
        access_log_class=logs.AccessLogger,
        print=None,
    )

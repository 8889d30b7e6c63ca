"""The `tails-server` command."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from . import __version__
from .app import create_app
from .config import load_settings

LOGGER = logging.getLogger("tails_server")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted."""
    settings = load_settings(argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    LOGGER.info(
        "tails-server %s on http://%s:%d (uploads by registry id are checked on the ledger the "
        "uploader's genesis names, as the reference server does)",
        __version__,
        settings.host,
        settings.port,
    )
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0

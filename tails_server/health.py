"""Health endpoints: liveness, readiness, and a status document for operators."""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import __version__
from .index import Catalog
from .ledger import LedgerClient
from .storage import Storage

TRANSPORT = web.AppKey("transport", dict)  # how connections are served (set by serving.py), for /status


class Health:
    """`/livez` answers while the process serves; `/readyz` and `/status` also check storage."""

    def __init__(self, storage: Storage, ledger: LedgerClient, catalog: Catalog) -> None:
        self.storage = storage
        self.ledger = ledger
        self.catalog = catalog

    def table(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/livez", self.livez, allow_head=True),
            web.get("/readyz", self.readyz, allow_head=True),
            web.get("/status", self.status, allow_head=True),
        ]

    async def livez(self, request: web.Request) -> web.Response:
        """The event loop runs: nothing else is checked, so it stays cheap."""
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready when uploads can be stored and files read; the text also says where the index is.

        An index still being built does not make the server unready: downloads and uploads work,
        only the listings wait for it.
        """
        problem = await self.storage.problem()
        if problem:
            return web.Response(status=503, text=problem)
        progress = self.catalog.progress
        if progress.state == "ready":
            return web.Response(text="ok")
        return web.Response(text=f"ok; index {progress.state}: {progress.scanned} names scanned")

    async def status(self, request: web.Request) -> web.Response:
        """Storage (writable, free bytes), cached ledger pools, the index, transport and version, as JSON."""
        problem = await self.storage.problem()
        free = await asyncio.get_running_loop().run_in_executor(None, free_bytes_or_none, self.storage)
        document = {
            "status": "unavailable" if problem else "ok",
            "version": __version__,
            "storage": {"backend": self.storage.kind, "writable": problem is None, "problem": problem, "free_bytes": free},
            "ledger": {"cached_pools": self.ledger.cached_pools},
            "index": await self._index(),
            # A callable entry (the TLS cache's summary) is read now: its numbers change as it serves.
            "transport": {key: value() if callable(value) else value for key, value in request.app.get(TRANSPORT, {}).items()},
        }
        return web.json_response(document, status=503 if problem else 200)


    async def _index(self) -> dict:
        progress = self.catalog.progress
        document = {"state": progress.state, "scanned": progress.scanned, "merging": progress.merging,
                    "problem": progress.error, "last_sync": progress.last_sync, "filesystem": self.catalog.filesystem}
        try:
            document.update(await self.catalog.counts())
        except Exception as exc:  # noqa: BLE001 - an unreadable index file is reported, not raised
            document["problem"] = f"index unreadable: {exc}"
        return document


def free_bytes_or_none(storage: Storage) -> int | None:
    """Free bytes on the storage filesystem, or None when it cannot be read."""
    try:
        return storage.free_bytes()
    except OSError:
        return None

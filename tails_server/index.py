"""`GET /index.json`: every stored file with what is known about it, in pages.

Built from storage listings at request time. Names appear there only once their file is
complete (link(), symlink() and conditional PUTs are atomic), so the index can never list a
half-written file and there is no index file to go stale.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from .errors import BadRequest
from .storage import HASH, ID, Storage

DEFAULT_LIMIT, MAX_LIMIT = 1000, 10000


class StoreIndex:
    """Serves the index of one storage, sorted by tails hash, `limit` entries after `after`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def handle(self, request: web.Request) -> web.Response:
        """GET /index.json?limit=N&after=HASH"""
        limit = _int(request.query.get("limit", str(DEFAULT_LIMIT)), "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}.")
        return web.json_response(await self.page(request.query.get("after", ""), limit))

    async def page(self, after: str, limit: int) -> dict:
        """One page of entries and the cursor for the next (None at the end)."""
        entries = await self.storage.list(HASH, after, limit + 1)  # one more tells whether a next page exists
        chosen = entries[:limit]
        wanted = {entry.tails_hash for entry in chosen}
        registries: dict[str, list[dict]] = {}
        for entry in await self.storage.list(ID):
            if entry.tails_hash in wanted:
                rev_reg_id = entry.name
                registries.setdefault(entry.tails_hash.value, []).append(
                    {"rev_reg_id": rev_reg_id.value, "cred_def_id": rev_reg_id.cred_def_id, "issuer_did": rev_reg_id.issuer_did}
                )
        files = [
            {
                "tails_hash": entry.tails_hash.value,
                "size": entry.size,
                "created": datetime.fromtimestamp(entry.mtime, UTC).isoformat(timespec="seconds"),
                "registries": sorted(registries.get(entry.tails_hash.value, []), key=lambda r: r["rev_reg_id"]),
            }
            for entry in chosen
        ]
        return {"files": files, "next": chosen[-1].tails_hash.value if len(entries) > limit else None}


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number.") from None

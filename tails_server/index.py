"""`GET /index.json`: every stored file with what is known about it, in pages.

Built from the storage directories at request time. Names appear there only once their file is
complete (link() and symlink() are atomic), so the index can never list a half-written file and
there is no index file to go stale.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

from aiohttp import web

from .errors import BadRequest
from .ids import RevRegId
from .storage import HASH_DIR, LocalStorage

DEFAULT_LIMIT, MAX_LIMIT = 1000, 10000


class StoreIndex:
    """Serves the index of one storage, sorted by tails hash, `limit` entries after `after`."""

    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage

    async def handle(self, request: web.Request) -> web.Response:
        """GET /index.json?limit=N&after=HASH"""
        limit = _int(request.query.get("limit", str(DEFAULT_LIMIT)), "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}.")
        after = request.query.get("after", "")
        page = await asyncio.get_running_loop().run_in_executor(None, self.page, after, limit)
        return web.json_response(page)

    def page(self, after: str, limit: int) -> dict:
        """One page of entries and the cursor for the next (None at the end)."""
        names = sorted(n for n in os.listdir(self.storage.root / HASH_DIR) if n > after)
        chosen = names[:limit]
        ids = self._ids_by_hash(set(chosen))
        files = []
        for name in chosen:
            try:
                st = os.stat(self.storage.root / HASH_DIR / name)
            except FileNotFoundError:  # removed meanwhile (quarantine, admin): not stored any more
                continue
            files.append({
                "tails_hash": name,
                "size": st.st_size,
                "created": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds"),
                "registries": ids.get(name, []),
            })
        return {"files": files, "next": chosen[-1] if len(names) > limit else None}

    def _ids_by_hash(self, wanted: set[str]) -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for link, target in self.storage.id_links():
            if target not in wanted:
                continue
            try:
                rev_reg_id = RevRegId.from_storage_name(link.name)
            except (BadRequest, UnicodeDecodeError):
                continue
            found.setdefault(target, []).append(
                {"rev_reg_id": rev_reg_id.value, "cred_def_id": rev_reg_id.cred_def_id, "issuer_did": rev_reg_id.issuer_did}
            )
        for registries in found.values():
            registries.sort(key=lambda r: r["rev_reg_id"])
        return found


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number.") from None

"""`GET /match/{substring}` and `GET /index.json`: listings answered from the index, in pages."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ..errors import BadRequest
from ..ids import RevRegId
from . import db
from .catalog import Catalog

MATCH_LIMIT, MAX_MATCH_LIMIT = 100, 1000
INDEX_LIMIT, MAX_INDEX_LIMIT = 1000, 10000
MAX_SUBSTRING = 512
MAX_CURSOR = 64


class IndexRoutes:
    """Handlers for the two listings; each parses its query once and asks the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def table(self) -> list[web.AbstractRouteDef]:
        return [web.get("/index.json", self.files), web.get("/match/{substring:(?s:.*)}", self.match)]  # a newline too

    async def match(self, request: web.Request) -> web.Response:
        """Stored registry ids and tails hashes containing a substring, oldest first, MATCH_LIMIT at a time.

        The body is a JSON list of strings, as the reference server answers; when there is more,
        a `Link: <…>; rel="next"` header gives the URL of the rest.
        """
        substring = request.match_info["substring"]
        if len(substring) > MAX_SUBSTRING:
            raise BadRequest(f"The substring may be at most {MAX_SUBSTRING} characters long.")
        if not substring.isprintable():  # no stored name holds a control character, and SQLite takes UTF-8 only
            return web.json_response([])
        limit = _bounded_int(request, "limit", MATCH_LIMIT, MAX_MATCH_LIMIT)
        after = _bounded_int(request, "after", 0, 1 << 62, minimum=0)
        names, cursor = await self.catalog.listing(db.Reader.match, substring, after, limit)
        response = web.json_response(names)
        if cursor is not None:
            url = request.rel_url.with_query({"limit": str(limit), "after": str(cursor)})
            response.headers["Link"] = f'<{url}>; rel="next"'
        return response

    async def files(self, request: web.Request) -> web.Response:
        """GET /index.json?limit=N&after=HASH: every stored file with its registry ids, sorted by hash."""
        limit = _bounded_int(request, "limit", INDEX_LIMIT, MAX_INDEX_LIMIT)
        after = request.query.get("after", "")
        if len(after) > MAX_CURSOR or not after.isprintable():
            raise BadRequest("after must be a tails hash from a previous page's next.")
        rows, registries = await self.catalog.listing(_files_page, after, limit)
        files = [
            {
                "tails_hash": row.name,
                "size": row.size,
                "created": datetime.fromtimestamp(row.mtime or 0, UTC).isoformat(timespec="seconds"),
                "registries": [_registry(i) for i in sorted(registries.get(row.name, []))],
            }
            for row in rows[:limit]
        ]
        return web.json_response({"files": files, "next": rows[limit - 1].name if len(rows) > limit else None})


def _files_page(reader: db.Reader, after: str, limit: int) -> tuple[list[db.Row], dict[str, list[str]]]:
    """One more row than asked for tells whether a next page exists; registries in the same snapshot."""
    rows = reader.files_after(after, limit + 1)
    return rows, reader.ids_of(row.name for row in rows[:limit])


def _registry(value: str) -> dict:
    rev_reg_id = RevRegId.parse(value)
    return {"rev_reg_id": rev_reg_id.value, "cred_def_id": rev_reg_id.cred_def_id, "issuer_did": rev_reg_id.issuer_did}


def _bounded_int(request: web.Request, key: str, default: int, maximum: int, minimum: int = 1) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not minimum <= int(text) <= maximum:
        raise BadRequest(f"{key} must be a whole number from {minimum} to {maximum}.")
    return int(text)

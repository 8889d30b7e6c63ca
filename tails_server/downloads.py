"""Serve stored tails files through aiohttp's FileResponse (sendfile, Range), with the tails hash as ETag."""

from __future__ import annotations

from aiohttp import ETag, hdrs, web
from multidict import CIMultiDict

from .storage import StoredFile

CACHE_FOREVER = "public, max-age=31536000, immutable"
# Conditional headers we answer ourselves (against the hash ETag), and Accept-Encoding, which
# must not make FileResponse look for a sibling "<name>.gz": tails data is sent as is.
_HANDLED_HERE = frozenset(h.lower() for h in (hdrs.IF_NONE_MATCH, hdrs.IF_MATCH, hdrs.ACCEPT_ENCODING))


class TailsFileResponse(web.FileResponse):
    """A FileResponse whose ETag is always the tails hash: immutable content, content-derived tag."""

    def __init__(self, stored: StoredFile) -> None:
        super().__init__(
            stored.path,
            headers={
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CACHE_CONTROL: CACHE_FOREVER,
            },
        )
        self._tails_etag = stored.tails_hash.value

    async def prepare(self, request: web.BaseRequest):
        """Let FileResponse see only the headers it should act on (see _HANDLED_HERE)."""
        if self.prepared:  # aiohttp calls prepare() again on a response a handler prepared
            return await web.StreamResponse.prepare(self, request)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HANDLED_HERE)
        if request.if_none_match is not None:  # it overrides If-Modified-Since (RFC 9110 13.1.3)
            headers.popall(hdrs.IF_MODIFIED_SINCE, None)
        return await super().prepare(request.clone(headers=headers))

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: object) -> None:
        # FileResponse derives a tag from mtime and size; ours names the content instead.
        web.StreamResponse.etag.fset(self, self._tails_etag)  # type: ignore[attr-defined]


def serve(request: web.Request, stored: StoredFile) -> web.StreamResponse:
    """Answer GET/HEAD for a stored file: 304/412 on conditional headers, else 200 or 206."""
    tag = stored.tails_hash.value
    if_none_match = request.if_none_match
    if if_none_match is not None and _matches(tag, if_none_match, weak=True):
        return web.Response(status=304, headers={hdrs.ETAG: f'"{tag}"', hdrs.CACHE_CONTROL: CACHE_FOREVER})
    if_match = request.if_match
    if if_match is not None and not _matches(tag, if_match, weak=False):
        return web.Response(status=412, text="ETag does not match.")
    return TailsFileResponse(stored)


def _matches(tag: str, etags: tuple[ETag, ...], *, weak: bool) -> bool:
    """RFC 9110 comparison of our (strong) tag against a list from If-Match / If-None-Match."""
    return any(e.value in ("*", tag) and (weak or not e.is_weak) for e in etags)

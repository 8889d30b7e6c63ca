"""What the front doors of one server share: finding files, writing heads, stopping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate

from aiohttp.http import SERVER_SOFTWARE

from ..downloads import CACHE_FOREVER, http_date
from ..errors import BadRequest
from ..ids import RevRegId, TailsHash
from ..limits.connections import Connections
from ..storage import Name
from ..storage.local import LocalFile, LocalStorage
from .cache import CachedFile, SmallFiles
from .door import FrontDoor

BY_HASH, BY_ID = "/hash/{tails_hash}", "/{rev_reg_id}"  # the routes' canonical paths, as metrics label them
_STATUS = {version: f"HTTP/{version} 200 OK\r\nX-Request-ID: ".encode() for version in ("1.1", "1.0")}
_MIDDLES = 4096  # files whose own headers are kept ready


def _middle(tails_hash: str, mtime: float, size: int) -> bytes:
    """A file's own headers, after the request id (the order aiohttp writes them in)."""
    return (
        f"\r\nEtag: \"{tails_hash}\"\r\n"
        f"Cache-Control: {CACHE_FOREVER}\r\n"
        f"Last-Modified: {http_date(int(mtime))}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\n"
        "Accept-Ranges: bytes\r\n"
    ).encode("latin-1")


def _endings(date: str) -> dict[tuple[str, bool], bytes]:
    """The headers after a file's own, this second, by HTTP version and keep-alive, and the blank line."""
    common = f"Date: {date}\r\nServer: {SERVER_SOFTWARE}\r\n"
    connection = {("1.1", True): "", ("1.1", False): "Connection: close\r\n",
                  ("1.0", True): "Connection: keep-alive\r\n", ("1.0", False): ""}
    return {key: f"{common}{value}\r\n".encode("latin-1") for key, value in connection.items()}


class FrontDoors:
    """The front doors of one server (a protocol factory): what they share, and stopping them."""

    def __init__(self, storage: LocalStorage, aiohttp_protocol: Callable[[], asyncio.Protocol], timeout: float,
                 max_head: int, connections: Connections, encrypted: bool = False, cache: SmallFiles | None = None) -> None:
        self.storage = storage
        self.connections = connections  # counted here; a hand-over keeps its place (aiohttp's end releases it)
        self.aiohttp_protocol = aiohttp_protocol  # aiohttp's protocol factory (web.Server), for hand-overs
        self.timeout = timeout  # idle connections and stalled downloads, as aiohttp's keep-alive timeout
        self.max_head = max_head  # longer heads go to aiohttp, which applies the exact per-line limits
        self.encrypted = encrypted  # TLS transports: bodies are written into them, not sendfile'd
        self.cache = cache  # TLS: small files' contents, kept in memory
        self.open: set[FrontDoor] = set()
        self.stopping = False
        self._second = -1
        self._endings: dict[tuple[str, bool], bytes] = {}
        self._middles: dict[tuple[str, float, int], bytes] = {}

    def __call__(self) -> FrontDoor:
        return FrontDoor(self)

    def find(self, url: bytes) -> tuple[str, LocalFile | CachedFile] | None:
        """The route and opened file a plain path names; None for anything aiohttp should judge."""
        if not url.startswith(b"/") or not url.isascii() or b"?" in url or b"#" in url:
            return None
        path = url.decode("ascii")
        try:
            if path.startswith("/hash/"):
                name: Name = TailsHash.parse(path[6:])
                route = BY_HASH
            else:  # the same parse as the application's id route; fixed routes are never valid ids
                name, route = RevRegId.from_raw_path(path[1:]), BY_ID
        except BadRequest:
            return None
        if self.cache is not None:
            cached = self.cache.find(name)
            if cached is not False:
                return None if cached is None else (route, cached)
        stored = self.storage.open_now(name)
        return None if stored is None else (route, stored)

    def head_of(self, stored: LocalFile | CachedFile, version: str, keep_alive: bool, request_id: str) -> bytes:
        """The status line and headers, as aiohttp writes them for TailsFileResponse.

        Joined from parts made once: a file's own headers once per file, the date once a second
        (formatting all ten headers for every answer was a visible share of a small download's CPU).
        """
        now = int(time.time())
        if now != self._second:
            self._second, self._endings = now, _endings(formatdate(now, usegmt=True))
        key = (stored.tails_hash.value, stored.mtime, stored.size)
        middle = self._middles.get(key)
        if middle is None:
            if len(self._middles) >= _MIDDLES:
                self._middles.clear()  # a new set of files: they are made again as they come
            middle = self._middles[key] = _middle(*key)
        return b"".join((_STATUS[version], request_id.encode("latin-1"), middle, self._endings[version, keep_alive]))

    def stop(self) -> None:
        """Stop answering: idle connections close now, busy ones after their response."""
        self.stopping = True
        for door in list(self.open):
            door.stop()

    async def drained(self, timeout: float) -> None:
        """Wait up to `timeout` s for responses still leaving, then cut those that remain."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for door in list(self.open):
            door.transport.abort()

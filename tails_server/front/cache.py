"""Small stored files kept in memory for HTTPS downloads: each answer skips opening and copying the file.

Over TLS a body is encrypted from memory, so the door had to read it first: per 128 KiB download an
open, two fstats, a fresh zeroed buffer, a read and a close, ~69 µs of CPU timed alone, where the
door's whole answer from memory takes ~9 µs (+15-25% req/s live, in alternating rounds against the
same server reading the file each time). A tails file never changes under its hash, so a copy in
memory stays right for as long as the file exists; whether it still does is asked of the store on
every request (one stat), so a deletion is seen at once. Plaintext keeps sendfile, which copies nothing.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from ..ids import TailsHash
from ..storage import Name
from ..storage.local import LocalStorage, cached_read

MAX_FILE = 1 << 18  # larger bodies are sent in chunks read from the page cache, as before


class CachedFile:
    """A stored file's whole content in memory, in place of an open LocalFile (shared by its answers)."""

    __slots__ = ("content", "size", "mtime", "tails_hash")
    file = None  # nothing to close

    def __init__(self, content: bytes, mtime: float, tails_hash: TailsHash) -> None:
        self.content, self.size, self.mtime, self.tails_hash = content, len(content), mtime, tails_hash


class SmallFiles:
    """The contents of recently served small files, least recently used dropped first, within `limit` bytes."""

    def __init__(self, storage: LocalStorage, limit: int) -> None:
        self.storage = storage
        self.limit = limit
        self.size = 0  # bytes held
        self.hits = self.misses = 0
        self._files: OrderedDict[str, CachedFile] = OrderedDict()

    def find(self, name: Name) -> CachedFile | None | bool:
        """The file under `name` from memory; None if nothing is stored there; False if it is not for
        this cache (too large, or not in the page cache yet: the caller opens it as usual)."""
        tails_hash = name if isinstance(name, TailsHash) else self.storage.target(name)
        if tails_hash is None:
            return None
        key = tails_hash.value
        try:
            st = os.stat(self.storage.hash_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        size = st.st_size
        if size > MAX_FILE or size > self.limit:
            return False
        held = self._files.get(key)
        if held is not None and held.size == size:
            self._files.move_to_end(key)
            self.hits += 1
            if held.mtime != st.st_mtime:  # touched: the same bytes, a new Last-Modified
                held = self._files[key] = CachedFile(held.content, st.st_mtime, tails_hash)
            return held
        self.misses += 1
        content = self._read(key, size)
        if content is None:
            return False
        held = CachedFile(content, st.st_mtime, tails_hash)
        self._keep(key, held)
        return held

    def _read(self, key: str, size: int) -> bytes | None:
        """The whole file if the page cache holds it (never waiting for the disk on the event loop)."""
        try:
            fd = os.open(self.storage.hash_path(key), os.O_RDONLY)
        except OSError:
            return None
        try:
            content = cached_read(fd, size, 0) if size else bytearray()
        finally:
            os.close(fd)
        return bytes(content) if content is not None and len(content) == size else None

    def _keep(self, key: str, held: CachedFile) -> None:
        previous = self._files.pop(key, None)
        if previous is not None:
            self.size -= previous.size
        self._files[key] = held
        self.size += held.size
        while self.size > self.limit:
            _, dropped = self._files.popitem(last=False)
            self.size -= dropped.size

    def summary(self) -> dict:
        """For /status: this worker's cache."""
        return {"limit_bytes": self.limit, "bytes": self.size, "files": len(self._files), "hits": self.hits,
                "misses": self.misses}

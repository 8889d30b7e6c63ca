"""A local disk cache of files kept in object storage: downloads come from the page cache again.

Tails files are immutable and named by their hash, so a cached copy can never be stale; only
whether a name still exists is asked of the store on every request (an admin may delete it).
Each file is fetched once, checked against its hash, and published into the cache atomically
with link(). Several workers may share the directory: link() decides, and eviction removes the
files filled longest ago until the directory fits its budget again.

Eviction scans the directory, so it runs only when this process's count of the bytes cached goes
over the budget, and then empties a tenth of it: a fill costs the same however many files are
cached. Files other workers filled are counted at the next scan, so with N workers the directory
can exceed its budget by up to N - 1 tenths between scans.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..ids import TailsHash
from .base import Spool, TempFile
from .local import LocalFile

LOGGER = logging.getLogger(__name__)
LOW_WATER = 0.9  # eviction empties the cache to this share of its budget, so it runs once per tenth filled


class FileCache:
    """Verified copies of stored files by hash, within `max_bytes` of local disk."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._spool = Spool(directory / ".fill")
        self._filling: dict[str, asyncio.Task] = {}
        self._bytes = 0  # cached, as of the last scan plus what this process filled since

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._spool.prepare()
        # Count what earlier runs left (and trim it to a budget that may have shrunk) off the
        # start's path: a big cache of small files takes seconds to scan.
        asyncio.get_running_loop().run_in_executor(None, self._count)

    def _count(self) -> None:
        try:
            self._evict()
        except OSError as exc:
            LOGGER.warning("could not scan the cache: %s", exc)

    def open(self, tails_hash: TailsHash, mtime: float) -> LocalFile | None:
        """The cached copy, opened for sendfile, or None (on the event loop: a page-cached open)."""
        try:
            file = open(f"{self.directory}/{tails_hash.value}", "rb", buffering=0)
        except FileNotFoundError:
            return None
        return LocalFile(file, os.fstat(file.fileno()).st_size, mtime, tails_hash)

    def fill_later(self, tails_hash: TailsHash, size: int, chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        """Fetch a file into the cache in the background, once, if it fits."""
        if size > self.max_bytes or tails_hash.value in self._filling:
            return
        task = asyncio.ensure_future(self._fill(tails_hash, chunks))
        self._filling[tails_hash.value] = task
        task.add_done_callback(lambda _t: self._filling.pop(tails_hash.value, None))

    async def _fill(self, tails_hash: TailsHash, chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        loop = asyncio.get_running_loop()
        temp = self._spool.temp_file()
        try:
            sha = hashlib.sha256()
            async for chunk in chunks():
                sha.update(chunk)
                await loop.run_in_executor(None, temp.write_all, [chunk])
            if TailsHash.of_digest(sha.digest()) != tails_hash:
                LOGGER.error("not caching %s: the stored bytes do not match their hash", tails_hash)
                return
            await loop.run_in_executor(None, temp.sync)  # a copy that survives a power loss whole, or not at all
            await loop.run_in_executor(None, self._publish, temp, tails_hash)
        except Exception as exc:  # a cache that cannot fill only costs speed
            LOGGER.warning("could not cache %s: %s", tails_hash, exc)
        finally:
            temp.discard()

    def _publish(self, temp: TempFile, tails_hash: TailsHash) -> None:
        try:
            os.link(temp.path, self.directory / tails_hash.value)
        except FileExistsError:  # another worker filled it first
            return
        self._bytes += os.stat(self.directory / tails_hash.value).st_size
        if self._bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Remove the files filled longest ago until the cache fits nine tenths of its budget."""
        files = []
        for entry in os.scandir(self.directory):
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                files.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        if total > self.max_bytes:
            for _, size, path in sorted(files):
                if total <= self.max_bytes * LOW_WATER:
                    break
                try:
                    os.unlink(path)  # open readers keep their copy until they finish
                except FileNotFoundError:
                    pass
                total -= size
        self._bytes = total

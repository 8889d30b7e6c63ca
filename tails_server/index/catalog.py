"""The catalog: the store's writes and the index kept in step with them, and the queries on it.

Every publish and deletion goes through here, so the index learns of it at once: a pending
note is written first, the store is changed, then the index row follows, and a journal note
within a moment (notes.py), which drops the pending note.
If the process dies in between, the pending note tells the next leader what to check.
The store stays the source of truth: rows are only written for what the store holds.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .. import threads
from ..errors import Unavailable
from ..ids import RevRegId, TailsHash
from ..storage import Name, Storage, TempFile
from ..storage.base import key_of
from . import db, placement
from .db import Row
from .group import GroupCommit
from .notes import Notes

LOGGER = logging.getLogger(__name__)
READER_THREADS = 2
# What an index that another process replaced or damaged under us can raise besides sqlite3.Error:
# a row or table gone missing between statements shows up as None where a value was due.
INDEX_TROUBLE = (sqlite3.Error, LookupError, TypeError, ValueError)


class IndexUnavailable(Unavailable):
    """Listings wait for the index to be built (503, retry later)."""

    headers = {"Retry-After": "10"}


@dataclass
class Progress:
    """Where the background work is, for /readyz and /status."""

    state: str = "starting"  # starting, building, ready
    scanned: int = 0
    last_sync: float | None = None  # wall time of the last journal poll that succeeded
    merging: bool = False  # after a scan: the full-text index's segments are being merged
    error: str | None = None


class Catalog:
    """One store's index: its file, the threads that use it, and the store writes that must update it."""

    def __init__(self, storage: Storage, path: Path) -> None:
        self.storage = storage
        self.path = path
        self.progress = Progress()
        self.origin = ""
        self._readers = threads.pool(READER_THREADS, "tails-index-read")
        self._writer = threads.pool(1, "tails-index-write")
        self._group = GroupCommit(self._writer, self._writer_conn)  # the store writes' small index writes
        self._reader_connections: db.ThreadConnections | None = None
        self._write_connection: db.Writer | None = None
        self._leader_lock: int | None = None
        self.filesystem: str | None = None  # the index file's, for /status (see placement)
        self.notes = Notes(storage.journal, lambda names: self._record(db.Writer.apply, [], [], names))

    # life cycle

    def open(self) -> None:
        """Create or check the file (blocking; before serving)."""
        db.create(self.path, self.storage.describe())
        self.filesystem = placement.filesystem_of(self.path)
        self._reader_connections = db.ThreadConnections(self.path)
        self.origin = self.notes.origin = db.Reader(self.path).meta()["origin"]

    def try_lead(self) -> bool:
        """Become the one process of this host that follows the store (flock on a file beside the index)."""
        if self._leader_lock is None:
            fd = os.open(f"{self.path}.lead", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._leader_lock = fd
        return True

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.submit(self._close_writer).result()
        self._writer.shutdown(wait=True)
        if self._reader_connections is not None:
            self._reader_connections.close()
        if self._leader_lock is not None:
            try:
                os.close(self._leader_lock)
            except OSError as exc:  # the index's filesystem went away first (an unmounted volume)
                LOGGER.warning("could not close the index's leader lock: %s", exc)
            self._leader_lock = None

    def _close_writer(self) -> None:
        if self._write_connection is not None:
            self._write_connection.close()

    # plumbing

    async def read(self, method, *args):
        """Run a db.Reader method on a reader thread; an unreadable index is a 503, not a 500."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._readers, lambda: method(self._reader_connections.get(), *args)
            )
        except INDEX_TROUBLE as exc:
            if not isinstance(exc, sqlite3.Error):  # damage, or a bug in a query: either way worth a look
                LOGGER.error("the index could not be read: %s", _what(exc))
            raise IndexUnavailable(f"The index could not be read ({_what(exc)}); retry shortly.") from None

    async def write(self, method, *args, **kwargs):
        """Run a db.Writer method on the writer thread, in a transaction of its own."""
        self._group.close_group()  # keeps the order: a group queued later runs after this
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, lambda: method(self._writer_conn(), *args, **kwargs)
        )

    def _writer_conn(self) -> db.Writer:
        if self._write_connection is None:
            self._write_connection = db.Writer(self.path)
        return self._write_connection

    async def _record(self, method, *args) -> None:
        """An index write after the store changed: its failure must not fail the request (a rescan repairs).

        Committed with the other such writes queued meanwhile (group.py).
        """
        try:
            await self._group.run(lambda writer: method(writer, *args))
        except INDEX_TROUBLE as exc:
            LOGGER.error("the index could not record a change (the next rescan repairs it): %s", _what(exc))

    def note(self, keys: list[str], pending: list[str] = ()) -> None:
        """Tell other instances, through the store's journal, within a moment; then drop the `pending` rows (see notes)."""
        self.notes.add(keys, pending)

    # writes

    async def publish(self, name: Name, temp: TempFile, tails_hash: TailsHash) -> bool:
        """Store a verified temp file under `name` (never overwriting) and index it; False if it existed."""
        names = [tails_hash] if isinstance(name, TailsHash) else [tails_hash, name]
        values = [n.value for n in names]
        await self._record(db.Writer.begin, values)
        try:
            stored = await self.storage.put_if_absent(name, temp, tails_hash)
        except BaseException:
            await self._record(db.Writer.orphan, values)
            raise
        try:
            size = os.stat(temp.path).st_size
        except OSError:  # stored already: the next scan fills the size in
            size = None
        rows = [Row(tails_hash.value, tails_hash.value, False, size, time.time(), self.storage.pointer_tag(tails_hash))]
        if stored and isinstance(name, RevRegId):
            rows.append(Row(name.value, tails_hash.value, True))
        await self._record(db.Writer.apply, rows, [])
        self.note([key_of(n) for n in names], values)
        return stored

    async def delete(self, name: Name) -> bool:
        """Remove a name; a hash takes its registry ids along, first, so none is left naming nothing."""
        ids = await self.ids_of(name) if isinstance(name, TailsHash) else []
        return await self._remove(name, ids, self.storage.delete)

    async def quarantine(self, tails_hash: TailsHash) -> None:
        """Move a bad file aside, after its ids."""
        await self._remove(tails_hash, await self.ids_of(tails_hash), self.storage.quarantine)

    async def _remove(self, name: Name, ids: list[RevRegId], action) -> bool:
        names = [*ids, name]
        values = [n.value for n in names]
        await self._record(db.Writer.begin, values)
        try:
            for rev_reg_id in ids:
                await self.storage.delete(rev_reg_id)
            existed = await action(name)
        except BaseException:
            await self._record(db.Writer.orphan, values)
            raise
        await self._record(db.Writer.apply, [], values)
        self.note([key_of(n) for n in names], values)
        return bool(existed) or existed is None

    # queries

    async def ids_of(self, tails_hash: TailsHash) -> list[RevRegId]:
        found = await self.read(db.Reader.ids_of, [tails_hash.value])
        return [RevRegId.parse(value) for value in sorted(found.get(tails_hash.value, []))]

    async def listing(self, method, *args):
        """A query that needs the whole index: 503 until it is built."""

        def run(reader: db.Reader):
            meta = reader.meta()
            if not meta.get("complete"):
                return None
            return method(reader, *args)

        result = await self.read(run)
        if result is None:
            if self.progress.error:
                raise IndexUnavailable(f"The index is not built yet: {self.progress.error}")
            raise IndexUnavailable(f"The index is being built ({self.progress.scanned} names so far); retry shortly.")
        return result

    async def counts(self) -> dict:
        def run(reader: db.Reader) -> dict:
            meta = reader.meta()  # in the thread: a row gone missing is index trouble, a 503 like the rest
            return {"files": meta["files"], "ids": meta["ids"], "complete": bool(meta["complete"]),
                    "synced_until": meta["synced_until"]}

        return await self.read(run)


def _what(exc: Exception) -> str:
    """An index error for a log line or a reason: SQLite's message, or what kind of damage it was."""
    return str(exc) if isinstance(exc, sqlite3.Error) else f"damaged ({exc.__class__.__name__}: {exc})"

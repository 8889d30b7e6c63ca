"""Keeping the index in step with the store: full scans, the journal of other instances, crash repair.

One process per host (the leader) does this work; the others only read the shared file.
- On start, names whose writer died mid-change are checked against the store.
- A missing index, or one older than what the journal still holds, is rebuilt by a full scan
  in the background; listings answer 503 until it is done, downloads are never held up.
- Every `interval` seconds the journal is read from where the last read began (less OVERLAP,
  for notes that land late or from a slightly slow clock): each name another instance changed
  is looked up in the store, and the index follows what the store says.
- Old notes are pruned hourly; a full scan repeats every `rescan_interval` seconds to catch
  anything written behind the server's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from ..errors import BadRequest, TailsError
from ..ids import RevRegId, TailsHash
from ..storage.base import HASH, ID, Listed, key_of
from ..storage.journal import RETENTION, note_time, origin_of
from . import db
from .catalog import Catalog
from .db import Row

LOGGER = logging.getLogger(__name__)

OVERLAP = 60.0  # seconds each journal read reaches back
PRUNE_EVERY = 3600.0
RESOLVE_CONCURRENCY = 16
MAX_MERGE_STEPS = 100_000


class Follower:
    """The leader's background work on one catalog."""

    def __init__(self, catalog: Catalog, interval: float, rescan_interval: float) -> None:
        self.catalog = catalog
        self.storage = catalog.storage
        self.interval = interval
        self.rescan_interval = rescan_interval
        self._synced = 0.0  # wall time the last successful journal read began
        self._seen: dict[str, float] = {}  # notes applied, while still inside the overlap
        self._scan: asyncio.Task | None = None
        self._errors: dict[str, str] = {}  # the last failure of each kind of background work

    async def run(self) -> None:
        """Until cancelled: lead when possible, then follow."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not pass silently: listings would wait forever
            LOGGER.exception("index upkeep stopped")
            self.catalog.progress.error = "index upkeep stopped; see the log"
            raise

    async def _run(self) -> None:
        progress = self.catalog.progress
        while not self.catalog.try_lead():
            progress.state = "ready" if (await self.catalog.counts())["complete"] else "building"
            await asyncio.sleep(self.interval)
        await self._guarded(self.repair)
        meta = await self.catalog.read(db.Reader.meta)
        self._synced = _parse_time(meta["synced_until"])
        pruned = await self._guarded(self.storage.journal.pruned_until) or ""
        if not meta["complete"] or not self._synced or pruned > note_time(self._synced - OVERLAP):
            self._synced = self._synced or time.time()
            await self.catalog.write(db.Writer.set_meta, complete=0)
            self._start_scan()
        else:
            progress.state = "ready"
        last_prune = last_scan = time.monotonic()
        while True:
            await self._guarded(self.poll)
            await self._guarded(self.repair)  # also names a live process lost track of (a store error mid-write)
            if time.monotonic() - last_prune > PRUNE_EVERY:
                last_prune = time.monotonic()
                await self._guarded(self.storage.journal.prune, note_time(time.time() - RETENTION))
            if self.rescan_interval and time.monotonic() - last_scan > self.rescan_interval:
                last_scan = time.monotonic()
                self._start_scan()
            await asyncio.sleep(self.interval)

    async def _guarded(self, work, *args):
        """Background work must outlive a failing store or disk: log, and try again next round.

        Each kind of work keeps its own error: one succeeding does not hide another failing.
        """
        try:
            result = await work(*args)
            self._errors.pop(work.__name__, None)
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever fails, the loop goes on
            reason = exc.reason if isinstance(exc, TailsError) else f"{type(exc).__name__}: {exc}"
            if reason != self._errors.get(work.__name__):
                LOGGER.error("index upkeep failed (retrying): %s", reason)
            self._errors[work.__name__] = reason
            return None
        finally:
            self.catalog.progress.error = next(iter(self._errors.values()), None)

    def _start_scan(self) -> None:
        if self._scan is None or self._scan.done():
            self._scan = asyncio.create_task(self._guarded(self.rescan))

    async def stop(self) -> None:
        if self._scan is not None:
            self._scan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan

    # crash repair

    async def repair(self) -> int:
        """Check names whose writing process died (or lost track) against the store."""
        orphans = [(name, pid) for name, pid, started in await self.catalog.read(db.Reader.pending)
                   if pid == 0 or db.process_start(pid) != started]
        if not orphans:
            return 0
        await self.verify([name for name, _ in orphans])
        for name, pid in orphans:
            await self.catalog.write(db.Writer.forget_pending, name, pid)
        keys = [_key(name) for name, _ in orphans]
        self.catalog.note([k for k in keys if k])
        LOGGER.info("index: checked %d name(s) left by an interrupted change", len(orphans))
        return len(orphans)

    async def verify(self, names: list[str]) -> list[str]:
        """Make the index say what the store says about these names; return those the store lacks."""
        present, absent = [], []
        for value in dict.fromkeys(names):
            name = _name(value)
            if name is None:
                continue
            entry = await self.storage.stat(name)
            if entry is None:
                absent.append(value)
            elif isinstance(name, TailsHash):
                present.append(Row(value, value, False, entry.size, entry.mtime, self.storage.pointer_tag(name)))
            else:
                present.append(Row(value, entry.tails_hash.value, True))
        await self.catalog.write(db.Writer.apply, present, absent)
        return absent

    # other instances

    async def poll(self) -> int:
        """Apply the notes other instances wrote since the last read; return how many."""
        began = time.time()
        start = note_time(self._synced - OVERLAP)
        applied = 0
        while True:
            notes = await self.storage.journal.since(start)
            for key, keys in notes:
                if key in self._seen or origin_of(key) == self.catalog.origin:
                    continue
                names = [value for k in keys if (value := _value(k))]
                if not await self.verify(names):
                    self._seen[key] = time.time()  # a name found missing is looked at again next time
                applied += 1
            if len(notes) < 1000:
                break
            start = notes[-1][0]
        self._synced = began
        self._seen = {k: t for k, t in self._seen.items() if t > began - 2 * OVERLAP}
        await self.catalog.write(db.Writer.set_meta, synced_until=note_time(began))
        self.catalog.progress.last_sync = began
        return applied

    # full scans

    async def rescan(self) -> int:
        """List the whole store into the index; rows the store no longer has go at the end."""
        progress = self.catalog.progress
        started = time.time()
        gen = await self.catalog.write(db.Writer.start_scan)
        progress.scanned = 0
        if progress.state != "ready":
            progress.state = "building"
        LOGGER.info("index: scanning the store (generation %d)", gen)
        async for batch in _ahead(self.storage.scan(HASH)):
            rows = [Row(item.tails_hash.value, item.tails_hash.value, False, item.size, item.mtime,
                        self.storage.pointer_tag(item.tails_hash)) for item in batch]
            await self.catalog.write(db.Writer.apply, rows, [], [], started)
            progress.scanned += len(rows)
        async for batch in _ahead(self.storage.scan(ID)):
            rows = await self._id_rows(batch)
            await self.catalog.write(db.Writer.apply, rows, [], [], started)
            progress.scanned += len(batch)
        while await self.catalog.write(db.Writer.finish_scan, gen, started) >= 5000:
            pass
        progress.state = "ready"
        counts = await self.catalog.counts()
        LOGGER.info("index: scan done in %.1f s: %d files, %d registry ids", time.time() - started, counts["files"], counts["ids"])
        progress.merging = True
        try:
            for _step in range(MAX_MERGE_STEPS):  # listings are answered meanwhile, a little slower
                if not await self.catalog.write(db.Writer.merge_step):
                    break
        finally:
            progress.merging = False
        return progress.scanned

    async def _id_rows(self, batch: list[Listed]) -> list[Row]:
        """Ids with the file each names; only ids whose file is stored count."""
        tags = await self.catalog.read(db.Reader.hashes_for_tags, [i.tag for i in batch if i.tails_hash is None and i.tag])
        gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)

        async def resolve(item: Listed) -> str | None:
            if item.tails_hash is not None:
                return item.tails_hash.value
            if item.tag in tags:
                return tags[item.tag]
            async with gate:  # a store whose listing cannot say: read the pointer
                entry = await self.storage.stat(item.name)
            return entry.tails_hash.value if entry else None

        hashes = await asyncio.gather(*(resolve(item) for item in batch))
        stored = await self.catalog.read(db.Reader.files_present, [h for h in hashes if h])
        return [Row(item.name.value, h, True) for item, h in zip(batch, hashes, strict=True) if h in stored]


async def _ahead(batches: AsyncIterator[list[Listed]]) -> AsyncIterator[list[Listed]]:
    """The store's next batch is listed while the index writes this one (both wait in threads)."""
    iterator = aiter(batches)
    pending = asyncio.ensure_future(anext(iterator, None))
    try:
        while (batch := await pending) is not None:
            pending = asyncio.ensure_future(anext(iterator, None))
            yield batch
    finally:
        pending.cancel()


def _parse_time(text: str) -> float:
    if not text:
        return 0.0
    return datetime.strptime(text, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


def _name(value: str) -> TailsHash | RevRegId | None:
    """A name as the index writes it (hash or id value)."""
    try:
        return TailsHash.parse(value)
    except BadRequest:
        pass
    try:
        return RevRegId.parse(value)
    except BadRequest:
        return None


def _key(value: str) -> str | None:
    name = _name(value)
    return key_of(name) if name else None


def _value(key: str) -> str | None:
    """A journal line (`hash/…`, `id/…`) as the index writes the name."""
    kind, _, rest = key.partition("/")
    try:
        if kind == HASH:
            return TailsHash.parse(rest).value
        if kind == ID:
            return RevRegId.from_storage_name(rest).value
    except (BadRequest, UnicodeDecodeError):
        pass
    LOGGER.warning("ignoring an unreadable journal line: %r", key[:200])
    return None

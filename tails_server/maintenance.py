"""Offline storage work: `tails-server verify` (re-hash everything), `import DIR` and `reindex`.

Each goes through the catalog, so the index and other servers learn of what changed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .errors import BadRequest
from .ids import RevRegId, TailsHash
from .index import Catalog, Follower
from .storage import HASH, ID, Storage
from .storage.base import Listed
from .tails import FormatCheck, TailsReceiver

CHUNK = 1 << 20


@dataclass
class Report:
    """What a run found, by outcome; `bad` decides the exit status."""

    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    def print(self, ok_word: str) -> None:
        for line in self.bad:
            print(f"BAD {line}")
        print(f"{len(self.ok)} {ok_word}, {len(self.skipped)} skipped, {len(self.bad)} bad")


def _progress(items: list, what: str) -> Iterable:
    return tqdm(items, desc=what, unit="file", disable=not sys.stderr.isatty())


def verify(storage: Storage, index_file: Path, quarantine: bool) -> Report:
    """Re-hash every stored file against its name; check that every id resolves; optionally quarantine."""
    return asyncio.run(_with_catalog(storage, index_file, _verify, quarantine))


def reindex(storage: Storage, index_file: Path) -> Report:
    """Rebuild the index from the store alone (a running server may go on serving meanwhile)."""
    return asyncio.run(_with_catalog(storage, index_file, _reindex))


async def _with_catalog(storage: Storage, index_file: Path, work, *args) -> Report:
    report = Report()
    await storage.start()
    catalog = Catalog(storage, index_file)
    try:
        catalog.open()
        await work(catalog, report, *args)
    finally:
        await catalog.notes.flush()
        catalog.close()
        await storage.close()
    return report


async def _reindex(catalog: Catalog, report: Report) -> None:
    await Follower(catalog, 0, 0).rescan()
    counts = await catalog.counts()
    report.ok.extend([f"{counts['files']} files", f"{counts['ids']} registry ids"])


async def _each_entry(storage: Storage, prefix: str, what: str) -> AsyncIterator[Listed]:
    with tqdm(desc=what, unit="file", disable=not sys.stderr.isatty()) as bar:
        async for batch in storage.scan(prefix):
            for entry in batch:
                yield entry
            bar.update(len(batch))


async def _verify(catalog: Catalog, report: Report, quarantine: bool) -> None:
    storage = catalog.storage
    async for entry in _each_entry(storage, HASH, "verifying"):
        stored = await storage.open(entry.name)
        if stored is None:  # removed meanwhile
            continue
        check = FormatCheck()
        try:
            async for chunk in stored.chunks(0, stored.size):
                check.feed(chunk)
        finally:
            await stored.close()
        actual, problem = check.result()
        if problem is None and actual != entry.tails_hash:
            problem = "content does not match its hash"
        if problem is None:
            report.ok.append(entry.tails_hash.value)
            continue
        report.bad.append(f"{HASH}/{entry.tails_hash}: {problem}")
        if quarantine:
            await catalog.quarantine(entry.tails_hash)
    async for entry in _each_entry(storage, ID, "checking ids"):
        if await storage.stat(entry.name) is None:
            report.bad.append(f"{ID}/{entry.name.storage_name}: points at a missing file")
            if quarantine:
                await catalog.delete(entry.name)


def import_directory(storage: Storage, index_file: Path, source: Path, max_size: int) -> Report:
    """Publish a reference server's files: named by hash (checked) or by registry id (format only)."""
    return asyncio.run(_with_catalog(storage, index_file, _import, source, max_size))


async def _import(catalog: Catalog, report: Report, source: Path, max_size: int) -> None:
    storage = catalog.storage
    candidates = [p for p in sorted(source.iterdir()) if p.is_file()]
    if (source / HASH).is_dir():
        candidates += [p for p in sorted((source / HASH).iterdir()) if p.is_file()]
    for path in _progress(candidates, "importing"):
        name = path.name
        try:
            tails_hash = TailsHash.parse(name)
            rev_reg_id = None
        except BadRequest:
            tails_hash = None
            try:
                rev_reg_id = RevRegId.parse(name)
            except BadRequest:
                report.skipped.append(f"{name}: not a tails hash or registry id")
                continue
        if await storage.stat(tails_hash or rev_reg_id) is not None:
            report.skipped.append(f"{name}: already stored")
            continue
        try:
            actual = await _publish(catalog, path, tails_hash, rev_reg_id, max_size)
        except BadRequest as exc:
            report.bad.append(f"{name}: {exc.reason}")
            continue
        report.ok.append(f"{name} ({actual})")


async def _publish(catalog: Catalog, path: Path, tails_hash: TailsHash | None, rev_reg_id: RevRegId | None, max_size: int) -> TailsHash:
    """The server's own pipeline: stream to a temp file, hash, check, publish without overwriting."""
    temp = catalog.storage.temp_file()
    receiver = TailsReceiver(temp, max_size)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                await receiver.feed(chunk)
        actual = await receiver.finish()
        if tails_hash is not None and actual != tails_hash:
            raise BadRequest("content does not match its hash")
        await catalog.publish(tails_hash or rev_reg_id, temp, actual)
        return actual
    finally:
        await receiver.close()

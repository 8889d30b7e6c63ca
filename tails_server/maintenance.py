"""Offline storage work: `tails-server verify` (re-hash everything) and `tails-server import DIR`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .errors import BadRequest
from .ids import RevRegId, TailsHash
from .storage import HASH, ID, Storage
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


def verify(storage: Storage, quarantine: bool) -> Report:
    """Re-hash every stored file against its name; check that every id resolves; optionally quarantine."""
    return asyncio.run(_with_storage(storage, _verify, quarantine))


async def _with_storage(storage: Storage, work, *args) -> Report:
    report = Report()
    await storage.start()
    try:
        await work(storage, report, *args)
    finally:
        await storage.close()
    return report


async def _verify(storage: Storage, report: Report, quarantine: bool) -> None:
    for entry in _progress(await storage.list(HASH), "verifying"):
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
            await storage.quarantine(entry.tails_hash)
    for entry in await storage.list(ID):
        if await storage.stat(entry.name) is None:
            report.bad.append(f"{ID}/{entry.name.storage_name}: points at a missing file")
            if quarantine:
                await storage.delete(entry.name)


def import_directory(storage: Storage, source: Path, max_size: int) -> Report:
    """Publish a reference server's files: named by hash (checked) or by registry id (format only)."""
    return asyncio.run(_with_storage(storage, _import, source, max_size))


async def _import(storage: Storage, report: Report, source: Path, max_size: int) -> None:
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
            actual = await _publish(storage, path, tails_hash, rev_reg_id, max_size)
        except BadRequest as exc:
            report.bad.append(f"{name}: {exc.reason}")
            continue
        report.ok.append(f"{name} ({actual})")


async def _publish(storage: Storage, path: Path, tails_hash: TailsHash | None, rev_reg_id: RevRegId | None, max_size: int) -> TailsHash:
    """The server's own pipeline: stream to a temp file, hash, check, publish without overwriting."""
    temp = storage.temp_file()
    receiver = TailsReceiver(temp, max_size)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                await receiver.feed(chunk)
        actual = await receiver.finish()
        if tails_hash is not None and actual != tails_hash:
            raise BadRequest("content does not match its hash")
        await storage.put_if_absent(tails_hash or rev_reg_id, temp, actual)
        return actual
    finally:
        await receiver.abort()
        temp.discard()

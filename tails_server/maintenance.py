"""Offline storage work: `tails-server verify` (re-hash everything) and `tails-server import DIR`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .errors import BadRequest
from .ids import RevRegId, TailsHash
from .storage import Storage
from .storage.local import HASH_DIR, LocalStorage
from .tails import TailsReceiver, check_file

QUARANTINE_DIR = ".quarantine"
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


def verify(storage: LocalStorage, quarantine: bool) -> Report:
    """Re-hash every stored file against its name; check every id link; optionally quarantine."""
    report = Report()
    hash_dir = storage.root / HASH_DIR
    links: dict[str, list[Path]] = {}
    for link, target in storage.id_links():
        links.setdefault(target, []).append(link)
    for path in _progress(sorted(hash_dir.iterdir()), "verifying"):
        actual, problem = check_file(path)
        if problem is None and actual.value != path.name:
            problem = "content does not match its hash"
        if problem is None:
            report.ok.append(path.name)
            continue
        report.bad.append(f"hash/{path.name}: {problem}")
        if quarantine:
            (storage.root / QUARANTINE_DIR).mkdir(exist_ok=True)
            for link in links.get(path.name, []):  # ids stop resolving before the file moves
                link.unlink(missing_ok=True)
            os.rename(path, storage.root / QUARANTINE_DIR / path.name)
    for target, paths in links.items():
        if not (hash_dir / target).exists():
            for link in paths:
                if link.is_symlink():
                    report.bad.append(f"id/{link.name}: points at a missing file")
                    if quarantine:
                        link.unlink(missing_ok=True)
    return report


def import_directory(storage: Storage, source: Path, max_size: int) -> Report:
    """Publish a reference server's files: named by hash (checked) or by registry id (format only)."""
    return asyncio.run(_import(storage, source, max_size))


async def _import(storage: Storage, source: Path, max_size: int) -> Report:
    report = Report()
    await storage.start()
    try:
        await _import_files(storage, source, max_size, report)
    finally:
        await storage.close()
    return report


async def _import_files(storage: Storage, source: Path, max_size: int, report: Report) -> None:
    candidates = [p for p in sorted(source.iterdir()) if p.is_file()]
    if (source / HASH_DIR).is_dir():
        candidates += [p for p in sorted((source / HASH_DIR).iterdir()) if p.is_file()]
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

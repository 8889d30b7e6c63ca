"""The change journal: short notes, sorted by time, saying which names changed in a shared store.

Instances sharing a store learn of each other's uploads and deletions by reading the notes
written since they last looked, instead of listing the store: the cost follows what changed,
not what is stored. A note only names what changed; its reader asks the store what those names
hold now, so a note read twice, late, or for a write that failed never makes an index wrong.

Notes older than RETENTION are pruned. The time before which notes may be gone is kept beside
them, so an instance that was away longer knows it must rescan the store instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path

RETENTION = 24 * 3600.0  # seconds notes are kept
PAGE = 1000


def note_time(when: float) -> str:
    """The sortable time part of a note's key, e.g. 20261203T101500.123456Z."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def origin_of(key: str) -> str:
    """Which index wrote a note (its keys are `<time>-<origin>-<sequence>`)."""
    return key.split("-")[1] if key.count("-") >= 2 else ""


class Journal(ABC):
    """Notes under one store, readable by time."""

    _sequence = itertools.count()

    def new_key(self, origin: str) -> str:
        return f"{note_time(time.time())}-{origin}-{os.getpid():x}.{next(self._sequence)}"

    @abstractmethod
    async def append(self, origin: str, names: list[str]) -> None:
        """Write one note naming the store keys (`hash/…`, `id/…`) just changed."""

    @abstractmethod
    async def since(self, start: str, limit: int = PAGE) -> list[tuple[str, list[str]]]:
        """Up to `limit` notes whose key sorts after `start`, in key order, with the names each holds."""

    @abstractmethod
    async def pruned_until(self) -> str:
        """Notes before this time may have been pruned ('' if none ever were)."""

    @abstractmethod
    async def prune(self, before: str) -> int:
        """Remove notes older than `before` (a note_time), recording that first; return how many went."""


class LocalJournal(Journal):
    """Notes as small files under `<root>/.journal/<minute>/`, so a reader lists only recent minutes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.marker = directory / "PRUNED"

    async def append(self, origin: str, names: list[str]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._append, self.new_key(origin), names)

    def _append(self, key: str, names: list[str]) -> None:
        minute = self.directory / key[:13]
        minute.mkdir(parents=True, exist_ok=True)
        temp = minute / f".{key[13:]}.tmp"  # hidden until whole: readers skip dot files
        temp.write_text("\n".join(names) + "\n")
        os.rename(temp, minute / key[13:])

    async def since(self, start: str, limit: int = PAGE) -> list[tuple[str, list[str]]]:
        return await asyncio.get_running_loop().run_in_executor(None, self._since, start, limit)

    def _since(self, start: str, limit: int) -> list[tuple[str, list[str]]]:
        notes: list[tuple[str, list[str]]] = []
        try:
            minutes = sorted(d for d in os.listdir(self.directory) if d[:1].isdigit() and d >= start[:13])
        except FileNotFoundError:
            return notes
        for minute in minutes:
            try:
                files = sorted(f for f in os.listdir(self.directory / minute) if not f.startswith("."))
            except FileNotFoundError:  # pruned meanwhile
                continue
            for file in files:
                key = minute + file
                if key <= start:
                    continue
                try:
                    text = (self.directory / minute / file).read_text()
                except (FileNotFoundError, UnicodeDecodeError):
                    continue
                notes.append((key, [line for line in text.splitlines() if line]))
                if len(notes) >= limit:
                    return notes
        return notes

    async def pruned_until(self) -> str:
        try:
            return self.marker.read_text().strip()
        except FileNotFoundError:
            return ""

    async def prune(self, before: str) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self._prune, before)

    def _prune(self, before: str) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        marker = max(before, self.marker.read_text().strip() if self.marker.exists() else "")
        temp = self.directory / f".PRUNED.{os.getpid()}"
        temp.write_text(marker + "\n")
        os.rename(temp, self.marker)  # first: a reader must never miss that notes went
        removed = 0
        for minute in os.listdir(self.directory):
            if minute[:1].isdigit() and minute < before[:13]:
                removed += len(os.listdir(self.directory / minute))
                shutil.rmtree(self.directory / minute, ignore_errors=True)
        return removed

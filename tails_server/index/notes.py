"""Journal notes gathered and written in batches, off the request path.

A note costs a store write (a file, or an S3 object) and a hop to a worker thread; written per
upload it took ~6% of the upload rate on two cores. Notes are hints for other instances, whose
rescans repair a lost one, so the changes of a short window go into one note, written after the
answer. Stopping writes what is still gathered.
"""

from __future__ import annotations

import asyncio
import logging

from ..storage.journal import Journal

LOGGER = logging.getLogger(__name__)
DELAY = 0.1  # seconds changes wait to share a note: other instances poll the journal far less often


class Notes:
    """The changed store keys not yet in a note, and the one task that writes them."""

    def __init__(self, journal: Journal, delay: float = DELAY) -> None:
        self._journal = journal
        self._delay = delay
        self._keys: list[str] = []
        self._writer: asyncio.Task | None = None
        self.origin = ""  # the index's origin, set once it is open

    def add(self, keys: list[str]) -> None:
        """Gather keys for the next note; it is written within `delay` seconds."""
        self._keys += keys
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_later())

    async def _write_later(self) -> None:
        try:
            await asyncio.sleep(self._delay)
        finally:
            self._writer = None  # keys gathered from here on start the next note
        await self._write()

    async def flush(self) -> None:
        """Write every gathered key now (a stopping server, a maintenance command, a test)."""
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        await self._write()

    async def _write(self) -> None:
        keys, self._keys = list(dict.fromkeys(self._keys)), []
        if not keys:
            return
        try:
            await self._journal.append(self.origin, keys)
        except Exception as exc:  # noqa: BLE001 - a hint only: the changes themselves succeeded
            LOGGER.warning("could not write a journal note for other instances: %s", getattr(exc, "reason", exc))

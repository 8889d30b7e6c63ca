"""Journal notes gathered and written in batches, off the request path.

A note costs a store write (a file, or an S3 object) and a hop to a worker thread; written per
upload it took ~6% of the upload rate on two cores. So the changes of a short moment go into one
note, written after their answers. Each change's pending row in the index stays until its note is
written: a server killed in that moment leaves the rows, and the next start checks those names
and notes them then. Stopping writes what is still gathered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..storage.journal import Journal

LOGGER = logging.getLogger(__name__)
DELAY = 0.1  # seconds changes wait to share a note: other instances poll the journal far less often


class Notes:
    """The changed store keys not yet in a note, and the one task that writes them."""

    def __init__(self, journal: Journal, settle: Callable[[list[str]], Awaitable[None]], delay: float = DELAY) -> None:
        self._journal = journal
        self._settle = settle  # drops the pending rows of names whose note was written
        self.delay = delay
        self._keys: list[str] = []
        self._pending: list[str] = []
        self._writer: asyncio.Task | None = None
        self.origin = ""  # the index's origin, set once it is open

    def add(self, keys: list[str], pending: list[str] = ()) -> None:
        """Gather keys for the next note, and the index's pending rows it settles; written within `delay` seconds."""
        self._keys += keys
        self._pending += pending
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_later())

    async def _write_later(self) -> None:
        try:
            await asyncio.sleep(self.delay)
        finally:
            if self._writer is asyncio.current_task():  # a flush may have started another since
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
        pending, self._pending = self._pending, []  # one row per change: not deduplicated
        if keys:
            try:
                await self._journal.append(self.origin, keys)
            except Exception as exc:  # noqa: BLE001 - a hint only: the changes themselves succeeded
                LOGGER.warning("could not write a journal note for other instances: %s", getattr(exc, "reason", exc))
        if pending:
            await self._settle(pending)

"""Group commit: the index writes of concurrent uploads share one transaction.

Every upload writes the index two or three times (a pending note, its row, the note's removal).
One transaction each meant one write lock on a file that all workers share, and the lock's wait
grew with the uploads in flight: with 16 at once, 4-8 ms per write. Here the writes that queue up
while the writer thread is busy run together, each in a savepoint of its own, so one that fails
is undone alone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from . import db

Write = Callable[[db.Writer], Any]
_Group = list[tuple[Write, asyncio.Future]]


class GroupCommit:
    """Queues writes from the event loop; the writer thread commits each group of them at once."""

    def __init__(self, writer: Executor, connection: Callable[[], db.Writer]) -> None:
        self._writer = writer  # one thread: groups and other writes run in the order they were submitted
        self._connection = connection
        self._lock = threading.Lock()
        self._open: _Group | None = None  # the group still taking writes; its commit is queued, not started

    def run(self, write: Write) -> asyncio.Future:
        """Queue `write(connection)` into the open group, or a new one; the future gets its result or error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            group, new = self._open, self._open is None
            if group is None:
                group = self._open = []
            group.append((write, future))
        if new:
            self._writer.submit(self._commit, group, loop)
        return future

    def close_group(self) -> None:
        """Writes queued from now on go into a new group, run after whatever is submitted next."""
        with self._lock:
            self._open = None

    def _commit(self, group: _Group, loop: asyncio.AbstractEventLoop) -> None:
        """Writer thread: take the group (it grows no more) and run it in one transaction."""
        with self._lock:
            if self._open is group:
                self._open = None
        try:
            outcomes = self._connection().grouped([write for write, _ in group])
        except Exception as exc:  # no connection (an unreadable file): every waiter hears why
            outcomes = [(False, exc)] * len(group)
        try:
            loop.call_soon_threadsafe(_settle, group, outcomes)
        except RuntimeError:  # the loop is closed: nobody waits for these any more
            pass


def _settle(group: _Group, outcomes: list[tuple[bool, Any]]) -> None:
    for (_, future), (ok, value) in zip(group, outcomes, strict=True):
        if future.done():  # its waiter was cancelled
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

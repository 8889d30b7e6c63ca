"""Upload pace: a body must keep up an average rate after a short grace, and end within a deadline.

Like nginx's client_body_timeout or Apache's mod_reqtimeout MinRate: without it a client that
sends a byte every few seconds holds an upload slot (and a thread) for as long as it likes,
since each byte restarts the plain read timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import RequestTimeout

GRACE = 10.0  # seconds before the average rate is judged: connection setup, a slow start, the genesis part
TICK = 1.0  # how often a waiting read is looked at
T = TypeVar("T")


class Pace:
    """One upload's clock: `check(received)` raises 408 once the body is too slow or too late."""

    __slots__ = ("min_rate", "deadline", "started")

    def __init__(self, min_rate: int, deadline: float) -> None:
        self.min_rate, self.deadline = min_rate, deadline
        self.started = time.monotonic()

    def check(self, received: int) -> None:
        """Raise RequestTimeout if `received` body bytes are too few for the time taken so far."""
        elapsed = time.monotonic() - self.started
        if elapsed > self.deadline:
            raise RequestTimeout(f"The upload took longer than {self.deadline:g} s.")
        if self.min_rate and elapsed > GRACE and received < self.min_rate * elapsed:
            raise RequestTimeout(f"The upload is slower than the minimum of {self.min_rate} bytes/s.")


class BodyClock:
    """Cuts off a body read on the event loop: 408 after `seconds` without a byte, or once it falls behind its Pace.

    One clock per request and one timer per TICK of it: asyncio.timeout() around every read made
    and cancelled a timer per chunk, a fifth of the event loop's Python work on uploads. Only time
    spent waiting in `read()` counts as a stall, never time spent on the disk or the ledger.
    """

    def __init__(self, seconds: float, pace: Pace, received: Callable[[], int]) -> None:
        self.seconds, self.pace, self.received = seconds, pace, received
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Task | None = None  # the task in read(), if one is
        self._waiting_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._cancelling: int | None = None  # the reader's count of cancellations before ours
        self._reason = ""

    async def read(self, awaitable: Awaitable[T]) -> T:
        """Await one read of the body."""
        self.pace.check(self.received())
        # A read may run in a task of its own (while a ledger lookup is pending): that task is cut off.
        reader = self._reader = asyncio.current_task()
        self._waiting_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(min(self.seconds, TICK), self._check)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._cancelling is not None and reader is not None:
                cancelling, self._cancelling = self._cancelling, None
                if reader.uncancel() <= cancelling:  # cancelled by this clock alone
                    raise RequestTimeout(self._reason) from None
            raise
        finally:
            self._reader = None

    def _check(self) -> None:
        """Timer: cancel a read that stalled or fell behind; re-arm while one waits."""
        self._timer = None
        reader = self._reader
        if reader is None:
            return  # not waiting: the next read arms a new timer
        waited = self._loop.time() - self._waiting_since
        reason = None
        if waited >= self.seconds:
            reason = f"No request data for {self.seconds:g} s."
        else:
            try:
                self.pace.check(self.received())
            except RequestTimeout as exc:
                reason = exc.reason
        if reason is None:
            self._timer = self._loop.call_later(min(self.seconds - waited, TICK), self._check)
            return
        self._reason = reason
        self._cancelling = reader.cancelling()
        reader.cancel()

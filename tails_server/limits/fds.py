"""File descriptors: take all the process may have, keep some for storage and the ledger, log shortage calmly."""

from __future__ import annotations

import asyncio
import logging
import resource
import time

LOGGER = logging.getLogger(__name__)
NR_OPEN_CAP = 1 << 20  # an "unlimited" hard limit is capped here (Linux's default nr_open)
RESERVE_BASE = 64  # listening sockets, logs, the index, thread wake-ups, /proc reads
PER_UPLOAD = 3  # its temp file, the stored file it links, a directory fsync
PER_POOL = 16  # a ledger pool's sockets to its nodes
PER_CONNECTION = 2  # its socket, and the duplicate a download's sendfile or an upload's reader thread holds
LOG_EVERY = 10.0  # seconds between two reports of the same shortage


def raise_fd_limit() -> int:
    """Raise the soft limit to the hard one (as nginx's worker_rlimit_nofile would); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NR_OPEN_CAP if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return NR_OPEN_CAP if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def reserve(max_uploads: int, pool_cache_size: int) -> int:
    """File descriptors kept out of the connection budget, for the work connections cause."""
    return RESERVE_BASE + PER_UPLOAD * max_uploads + PER_POOL * pool_cache_size


def connection_budget(requested: int, limit: int, reserved: int) -> int:
    """The connection cap: as requested, but never so high that connections could take the reserve."""
    ceiling = max((limit - reserved) // PER_CONNECTION, 16)
    if requested <= 0:
        return ceiling
    if requested > ceiling:
        LOGGER.warning(
            "--max-connections %d lowered to %d: the process may open %d files and keeps %d for storage and ledgers",
            requested, ceiling, limit, reserved,
        )
        return ceiling
    return requested


class QuietAcceptErrors:
    """An event loop exception handler: "out of file descriptors" on accept once per LOG_EVERY, with a count.

    asyncio logs each failed accept() with a traceback, up to a backlog's worth per wake-up, and
    an fd-starved server can write thousands of those a second. Everything else passes on to
    the default handler.
    """

    def __init__(self) -> None:
        self.suppressed = 0
        self.last = 0.0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        self.suppressed += 1
        now = time.monotonic()
        if now - self.last >= LOG_EVERY:
            exc = context.get("exception")
            LOGGER.error("cannot accept connections: %s (%d time(s) since the last report); backing off", exc, self.suppressed)
            self.suppressed, self.last = 0, now

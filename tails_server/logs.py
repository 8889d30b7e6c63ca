"""Logging that costs the event loop little.

Server messages go through the logging module and a queue to a writer thread. Access lines,
one per request and the bulk of all output, skip the logging machinery: each is one f-string
appended to a buffer that is written to stderr once per FLUSH_INTERVAL.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import logging.handlers
import os
import queue
import sys
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FLUSH_INTERVAL = 0.2


class AccessLogger(AbstractAccessLogger):
    """One line per request: time, client, request line, status, bytes, milliseconds."""

    _lines: list[str] = []
    _second = -1
    _stamp = ""

    def log(self, request: BaseRequest, response: StreamResponse, elapsed: float) -> None:
        now = int(time.time())
        if now != AccessLogger._second:  # format the timestamp once a second, not once a request
            AccessLogger._second, AccessLogger._stamp = now, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        size = response.content_length if response.content_length is not None else response.body_length
        lines = AccessLogger._lines
        lines.append(
            f'{AccessLogger._stamp} ACCESS {request.remote} "{request.method} {request.path_qs}" '
            f"{response.status} {size} {elapsed * 1000:.1f}ms\n"
        )
        if len(lines) == 1:
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL, flush_access_lines)

    @property
    def enabled(self) -> bool:
        """Access lines are INFO messages of the 'aiohttp.access' logger."""
        return self.logger.isEnabledFor(logging.INFO)


def flush_access_lines() -> None:
    """Write the buffered access lines in one system call."""
    lines = AccessLogger._lines
    if lines:
        data = "".join(lines).encode("utf-8", "backslashreplace")
        lines.clear()
        try:
            os.write(sys.stderr.fileno(), data)
        except OSError:
            pass


def configure(level: str) -> None:
    """Log to stderr through a queue, so a slow terminal or pipe never blocks a request."""
    records: queue.SimpleQueue = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    atexit.register(listener.stop)
    atexit.register(flush_access_lines)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)

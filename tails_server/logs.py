"""Logging that costs the event loop little.

Server messages go through the logging module and a queue to a writer thread. Access lines,
one per request and the bulk of all output, skip the logging machinery: each is one f-string
appended to a buffer that is written to stderr once per FLUSH_INTERVAL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import logging
import logging.handlers
import os
import queue
import sys
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
FLUSH_INTERVAL = 0.2


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _with_request_id(record: logging.LogRecord) -> bool:
    record.request_id = REQUEST_ID.get()
    return True


class AccessLogger(AbstractAccessLogger):
    """One line per request: time, client, request line, status, bytes, milliseconds, request id."""

    json = False  # set by configure()
    observe = None  # metrics.observe, once metrics are installed: one call per request for both
    _lines: list[str] = []
    _second = -1
    _stamp = ""

    def log(self, request: BaseRequest, response: StreamResponse, elapsed: float) -> None:
        size = response.content_length if response.content_length is not None else response.body_length
        if AccessLogger.observe is not None:
            AccessLogger.observe(request, response.status, size, elapsed)
        if not self.logger.isEnabledFor(logging.INFO):
            return
        now = int(time.time())
        if now != AccessLogger._second:  # format the timestamp once a second, not once a request
            AccessLogger._second, AccessLogger._stamp = now, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        request_id = response.headers.get(REQUEST_ID_HEADER, "-")
        if AccessLogger.json:
            line = json.dumps({
                "time": AccessLogger._stamp, "level": "INFO", "logger": "access", "remote": request.remote,
                "method": request.method, "path": request.path_qs, "status": response.status, "bytes": size,
                "ms": round(elapsed * 1000, 1), "request_id": request_id,
            }) + "\n"
        else:
            line = (
                f'{AccessLogger._stamp} ACCESS {request.remote} "{request.method} {request.path_qs}" '
                f"{response.status} {size} {elapsed * 1000:.1f}ms {request_id}\n"
            )
        lines = AccessLogger._lines
        lines.append(line)
        if len(lines) == 1:
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL, flush_access_lines)

    @property
    def enabled(self) -> bool:
        """Always called, for the metrics; the line itself is written only at INFO."""
        return True


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


def configure(level: str, fmt: str = "text") -> None:
    """Log to stderr through a queue, so a slow terminal or pipe never blocks a request."""
    records: queue.SimpleQueue = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    AccessLogger.json = fmt == "json"
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    atexit.register(listener.stop)
    atexit.register(flush_access_lines)
    handler = logging.handlers.QueueHandler(records)
    handler.addFilter(_with_request_id)  # read the context here: the writer thread has none
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

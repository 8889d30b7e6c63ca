"""Logging that costs the event loop little.

Server messages go through the logging module and a queue to a writer thread. Access lines,
one per request and the bulk of all output, skip the logging machinery: each request appends its
values to a buffer, formatted and written to stderr once per FLUSH_INTERVAL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import itertools
import json
import logging
import logging.handlers
import os
import queue
import re
import secrets
import sys
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
FLUSH_INTERVAL = 0.2
ACCESS = logging.getLogger("aiohttp.access")  # aiohttp's access logger, which the front door writes to as well


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ID_PREFIX = secrets.token_hex(12)
_ID_COUNTER = itertools.count()


def _new_request_ids() -> None:
    """A forked worker makes ids of its own: this module is imported before the workers are forked."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = secrets.token_hex(12), itertools.count()


os.register_at_fork(after_in_child=_new_request_ids)


def request_id(offered: str | None) -> str:
    """The client's X-Request-ID if it is a sane token, else a new one (random per process, then counted)."""
    if offered and _SANE_REQUEST_ID.fullmatch(offered):
        return offered
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


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


_CONTROLS = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}
_QUOTED = _CONTROLS | {ord('"'): "\\x22"}  # inside an access line's quoted request


def escape(text: str, quoted: bool = False) -> str:
    """Client text made safe for one log line: control and other unprintable characters escaped."""
    if text.isprintable() and not (quoted and '"' in text):
        return text  # the common case costs one scan
    text = text.translate(_QUOTED if quoted else _CONTROLS)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class OneRecordPerLine(logging.Formatter):
    """The message on one line (escaped: it may hold client text); a traceback's lines indented below it.

    A reader of the text log can then trust that every line starting at column 0 is a record
    the server wrote, never a line forged by a request.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = escape(record.getMessage())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "".join(f"\n    {escape(line)}" for line in record.exc_text.splitlines())
        return text


def _with_request_id(record: logging.LogRecord) -> bool:
    record.request_id = REQUEST_ID.get()
    return True


class AccessLogger(AbstractAccessLogger):
    """One line per request: time, client, request line, status, bytes, milliseconds, request id."""

    json = False  # set by configure()
    observe = None  # metrics.observe, once metrics are installed: one call per request for both
    _lines: list[tuple] = []  # access_line's values per request, formatted at the flush
    _second = -1
    _stamp = ""

    def log(self, request: BaseRequest, response: StreamResponse, elapsed: float) -> None:
        cut_short = getattr(response, "cut_short", False)  # a download whose body did not all leave
        if cut_short:
            size = response.sent
        else:
            size = response.content_length if response.content_length is not None else response.body_length
        if AccessLogger.observe is not None:
            AccessLogger.observe(request, response.status, size, elapsed, cut_short)
        if self.logger.isEnabledFor(logging.INFO):
            access_line(
                request.remote, request.method, request.path_qs, response.status, size, elapsed,
                response.headers.get(REQUEST_ID_HEADER, "-"), cut_short,
            )

    @property
    def enabled(self) -> bool:
        """Always called, for the metrics; the line itself is written only at INFO."""
        return True


def access_line(
    remote: str | None, method: str, path_qs: str, status: int, size: int | None, elapsed: float, request_id: str,
    cut_short: bool = False,
) -> None:
    """Keep one access line's values, formatted and written with the others at the flush (the caller
    checks that the access logger is on, at INFO).

    `size` is the body bytes sent; a download cut short (the client left, or was cut off) is
    marked as such after the request id.
    """
    lines = AccessLogger._lines
    lines.append((time.time(), remote, method, path_qs, status, size, elapsed, request_id, cut_short))
    if len(lines) == 1:
        asyncio.get_running_loop().call_later(FLUSH_INTERVAL, flush_access_lines)


def _line(when: float, remote: str | None, method: str, path_qs: str, status: int, size: int | None, elapsed: float,
          request_id: str, cut_short: bool) -> str:
    """One kept access line as text (or JSON), newline included."""
    second = int(when)
    if second != AccessLogger._second:  # format the timestamp once a second, not once a line
        AccessLogger._second, AccessLogger._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    if AccessLogger.json:
        return json.dumps({
            "time": AccessLogger._stamp, "level": "INFO", "logger": "access", "remote": remote,
            "method": method, "path": path_qs, "status": status, "bytes": size,
            "ms": round(elapsed * 1000, 1), "request_id": request_id, **({"cut_short": True} if cut_short else {}),
        }) + "\n"
    return f'{AccessLogger._stamp} ACCESS {remote} "{method} {escape(path_qs, quoted=True)}" {status} {size} {elapsed * 1000:.1f}ms {request_id}{" cut-short" if cut_short else ""}\n'


def flush_access_lines() -> None:
    """Format the kept access lines and write them in one system call."""
    lines = AccessLogger._lines
    if lines:
        data = "".join([_line(*line) for line in lines]).encode("utf-8", "backslashreplace")
        lines.clear()
        try:
            os.write(sys.stderr.fileno(), data)
        except OSError:
            pass


class ClientErrorsOnOneLine(logging.Filter):
    """aiohttp logs every malformed request as an ERROR with a traceback: it is the client's error, one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        reason = " ".join(str(exc.message).split())[:200]
        record.msg, record.args = "%s: %d %s", (record.getMessage(), exc.code, reason)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


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
    handler.setFormatter(OneRecordPerLine())  # applied before the queue: the writer gets finished text
    handler.addFilter(_with_request_id)  # read the context here: the writer thread has none
    logging.getLogger("aiohttp.server").addFilter(ClientErrorsOnOneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

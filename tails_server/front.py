"""The front door: plain downloads answered without aiohttp; everything else handed to aiohttp.

aiohttp spends more CPU on each request (request and response objects, a task, its writer) than
the kernel spends sending a 128 KiB file, and as much as the whole copy of a 4 MiB one costs the
server. Every plaintext connection to a server on local storage starts here. A request for a
whole stored file and nothing else -- GET or HEAD, no body, no Range or conditional header, a
path that names a file that exists -- is answered here with the headers TailsFileResponse sends
and the same sendfile. At the first request that is anything else, the connection and every byte
not yet answered go to aiohttp's protocol for good, so errors, uploads, ranges, 304s and every
other route keep one implementation: aiohttp's and the application's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from email.utils import formatdate

import httptools
from aiohttp.http import SERVER_SOFTWARE

from . import logs, metrics
from .downloads import CACHE_FOREVER, CORK_ABOVE, SMALL_BODY, http_date
from .errors import BadRequest
from .ids import RevRegId, TailsHash
from .limits.connections import Connections
from .storage import Name
from .storage.local import LocalFile, LocalStorage

BY_HASH, BY_ID = "/hash/{tails_hash}", "/{rev_reg_id}"  # the routes' canonical paths, as metrics label them
_TERMINATOR = b"\r\n\r\n"
_METHODS = (b"GET ", b"HEAD ")
# Request headers that ask for more than the whole file, or announce a body: aiohttp's path answers those.
_NOT_PLAIN = frozenset(
    (b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"content-length",
     b"transfer-encoding", b"expect", b"upgrade")
)
_MORE = getattr(socket, "MSG_MORE", 0)  # the head waits for the body's first bytes: one segment, not two
_CORK = getattr(socket, "TCP_CORK", None)


class _Head:
    """What one request head says, as far as the front door needs to know (httptools callbacks)."""

    __slots__ = ("url", "plain", "request_id", "keep_alive", "complete", "parser")

    def reset(self) -> None:
        self.url, self.plain, self.request_id, self.keep_alive, self.complete = b"", True, None, False, False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _NOT_PLAIN:
            self.plain = False
        elif name == b"x-request-id":
            self.request_id = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only known until the message completes

    def on_message_complete(self) -> None:
        self.complete = True


class FrontDoor(asyncio.Protocol):
    """One connection: answers plain downloads until a request needs aiohttp, then hands it over."""

    def __init__(self, doors: FrontDoors) -> None:
        self.doors = doors
        self.head = _Head()
        self.head.parser = self.parser = httptools.HttpRequestParser(self.head)
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None  # a duplicate: the loop lets no one else watch the transport's own
        self.remote: str | None = None
        self.busy = self.waiting = self.eof = False
        self.active_at = 0.0  # the last finished response or byte sent; reads do not count (slowloris)
        self.timer: asyncio.TimerHandle | None = None
        self.response: _Response | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.doors.connections.admit(transport):
            return  # answered with a 503 and closing: nothing of ours to set up
        try:
            self.sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        except OSError as exc:  # out of file descriptors: say so, and give this one back at once
            self.doors.connections.out_of_descriptors(transport, exc)
            return
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.doors.open.add(self)
        loop = asyncio.get_running_loop()
        self.active_at = loop.time()
        self.timer = loop.call_at(self.active_at + self.doors.timeout, self._on_timer)

    def data_received(self, data: bytes) -> None:
        if self.sock is None:
            return  # refused: the 503 is on its way and the connection closing
        self.buffer += data
        if not self.busy:
            self._answer_buffered()

    def eof_received(self) -> bool:
        self.eof = True
        if self.sock is None:
            return False
        return self.busy  # keep the transport for a response still leaving; otherwise it closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.response is not None:  # the client left mid-body, or was cut off
            self.response.end(self)
            self.response = None
        self._release()
        self.doors.connections.release(self.transport)

    def _answer_buffered(self) -> None:
        """Answer every complete plain request in the buffer; hand over at the first other one.

        Pipelined requests are walked with an offset (slicing the buffer per request would copy
        it once per request), and each answer that finishes at once returns here rather than
        calling back in, so a long pipeline neither costs quadratic copying nor deep recursion.
        """
        buffer, start = self.buffer, 0
        while start < len(buffer) and not self.busy and not self.transport.is_closing():
            end = buffer.find(_TERMINATOR, start)
            if end < 0:
                self.buffer = buffer[start:]
                if not self._may_become_plain():
                    self._hand_off()
                return
            try:
                response = self._plain_response(buffer[start : end + 4])
            except OSError:  # the store failed to open or read the file: aiohttp's path answers that
                response = None
            if response is None:
                self.buffer = buffer[start:]
                self._hand_off()
                return
            start = end + 4
            self.response, self.busy = response, True
            self._pump()
        self.buffer = buffer[start:]
        if self.eof and not self.busy and not self.transport.is_closing():
            self.transport.close()  # the client sent its last request and has every answer

    def _may_become_plain(self) -> bool:
        """An unfinished head that could still be a GET or HEAD this door answers (else: aiohttp, now)."""
        buffer = self.buffer
        return (
            len(buffer) <= self.doors.max_head
            and (buffer.startswith(_METHODS) or any(m.startswith(buffer) for m in _METHODS))
            and buffer.count(b"\n") == buffer.count(b"\r\n")  # bare LFs: aiohttp judges those
        )

    def _plain_response(self, head: bytes) -> _Response | None:
        """The response to a complete head if this door may answer it alone, else None."""
        if len(head) > self.doors.max_head or not head.startswith(_METHODS) or head.count(b"\n") != head.count(b"\r\n"):
            return None
        parsed = self.head
        parsed.reset()
        try:
            self.parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        version = self.parser.get_http_version()
        if not (parsed.complete and parsed.plain and version in ("1.1", "1.0")):
            return None
        found = self.doors.find(parsed.url)
        if found is None:
            return None
        route, stored = found
        method = "HEAD" if head.startswith(b"HEAD") else "GET"
        keep_alive = parsed.keep_alive and not self.doors.stopping
        request_id = logs.request_id(parsed.request_id)
        try:
            return _Response(stored, route, method, parsed.url.decode("ascii"), version, keep_alive, request_id, self.doors)
        except OSError:
            stored.file.close()
            raise

    def _pump(self) -> None:
        """Send what the socket takes now; wait for room when it is full; finish when all is sent."""
        response = self.response
        try:
            sent = response.send(self.sock)
        except OSError:  # the client reset the connection: nothing more can reach it
            self.transport.abort()
            return
        loop = asyncio.get_running_loop()
        if sent:
            self.active_at = loop.time()
        if not response.done:
            if not self.waiting:
                self.waiting = True
                self.transport.pause_reading()  # pipelined requests wait in the socket, not in memory
                loop.add_writer(self.sock.fileno(), self._on_writable)
            return
        if self.waiting:
            self.waiting = False
            loop.remove_writer(self.sock.fileno())
            self.transport.resume_reading()
        self.response, self.busy = None, False
        response.end(self)
        self.active_at = loop.time()
        if not response.keep_alive or self.doors.stopping:
            self.transport.close()

    def _on_writable(self) -> None:
        """Room in the socket for a response that did not fit: send on, then the requests queued behind it."""
        self._pump()
        if not self.busy and self.transport.get_protocol() is self:
            self._answer_buffered()

    def _on_timer(self) -> None:
        """Close an idle connection, or cut a download its client stopped reading, after the timeout."""
        loop = asyncio.get_running_loop()
        due = self.active_at + self.doors.timeout
        if loop.time() < due:
            self.timer = loop.call_at(due, self._on_timer)
        elif self.busy:
            self.transport.abort()
        else:
            self.transport.close()

    def stop(self) -> None:
        """Server stopping: close now if idle, else after the response leaving now."""
        if not self.busy:
            self.transport.close()

    def _hand_off(self) -> None:
        """Give the connection and every unanswered byte to aiohttp, which keeps it from now on."""
        self._release()
        handler = self.doors.aiohttp_protocol()
        self.transport.set_protocol(handler)
        handler.connection_made(self.transport)
        data, self.buffer = self.buffer, b""
        if data:
            handler.data_received(data)
        if self.eof and handler.eof_received() is not True:
            self.transport.close()

    def _release(self) -> None:
        self.head.parser = None  # the parser holds the head for its callbacks: no cycle left behind
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock is not None:
            if self.waiting:
                asyncio.get_running_loop().remove_writer(self.sock.fileno())
                self.waiting = False
            self.sock.close()
            self.sock = None
        self.doors.open.discard(self)


class _Response:
    """A 200 for one whole stored file: the head (with small bodies inline), then sendfile."""

    __slots__ = ("stored", "route", "method", "path", "keep_alive", "request_id", "out", "offset", "left", "cork", "started", "head",
                 "sent")

    def __init__(self, stored: LocalFile, route: str, method: str, path: str, version: str, keep_alive: bool,
                 request_id: str, doors: FrontDoors) -> None:
        self.stored, self.route, self.method, self.path = stored, route, method, path
        self.keep_alive, self.request_id = keep_alive, request_id
        self.started = time.monotonic()
        size = stored.size
        self.out = memoryview(doors.head_of(stored, version, keep_alive, request_id))
        self.head, self.sent = len(self.out), 0  # the head's length; bytes sent so far, head included
        self.offset, self.left = 0, size if method == "GET" else 0
        self.cork = 1 if self.left > CORK_ABOVE and _CORK else 0  # 1: wanted, 2: set on the socket
        if 0 < self.left <= SMALL_BODY:  # one write for head and body costs less than a sendfile after it
            self.out = memoryview(bytes(self.out) + os.pread(stored.file.fileno(), self.left, 0))
            self.left = 0

    @property
    def done(self) -> bool:
        return not self.out and not self.left

    def send(self, sock: socket.socket) -> int:
        """Bytes the kernel took now (0 if the socket is full); an OSError ends the response."""
        if self.cork == 1:
            self.cork = 2
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
        sent = 0
        try:
            while self.out:
                n = sock.send(self.out, _MORE if self.left else 0)
                self.out, sent = self.out[n:], sent + n
            while self.left:
                n = os.sendfile(sock.fileno(), self.stored.file.fileno(), self.offset, self.left)
                if not n:
                    raise ConnectionResetError("stored file ended early")
                self.offset, self.left, sent = self.offset + n, self.left - n, sent + n
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sent += sent
        if self.cork == 2 and self.done:
            self.cork = 0
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)
        return sent

    def end(self, door: FrontDoor) -> None:
        """Close the file; count and log the request as aiohttp's access logger would."""
        stored = self.stored
        if stored.file.closed:
            return
        stored.file.close()
        elapsed = time.monotonic() - self.started
        cut_short = not self.done
        size = max(0, self.sent - self.head) if cut_short else stored.size  # what left, when not all did
        metrics.record(self.route, self.method, 200, None, size, elapsed, cut_short)
        if logs.ACCESS.isEnabledFor(logging.INFO):
            logs.access_line(door.remote, self.method, self.path, 200, size, elapsed, self.request_id, cut_short)


class FrontDoors:
    """The front doors of one server: what they share, and stopping them."""

    def __init__(self, storage: LocalStorage, aiohttp_protocol: Callable[[], asyncio.Protocol], timeout: float,
                 max_head: int, connections: Connections) -> None:
        self.storage = storage
        self.connections = connections  # counted here; a hand-over keeps its place (aiohttp's end releases it)
        self.aiohttp_protocol = aiohttp_protocol  # aiohttp's protocol factory (web.Server), for hand-overs
        self.timeout = timeout  # idle connections and stalled downloads, as aiohttp's keep-alive timeout
        self.max_head = max_head  # longer heads go to aiohttp, which applies the exact per-line limits
        self.open: set[FrontDoor] = set()
        self.stopping = False
        self._second = -1
        self._date = ""

    def __call__(self) -> FrontDoor:
        return FrontDoor(self)

    def find(self, url: bytes) -> tuple[str, LocalFile] | None:
        """The route and opened file a plain path names; None for anything aiohttp should judge."""
        if not url.startswith(b"/") or not url.isascii() or b"?" in url or b"#" in url:
            return None
        path = url.decode("ascii")
        try:
            if path.startswith("/hash/"):
                name: Name = TailsHash.parse(path[6:])
                route = BY_HASH
            else:  # the same parse as the application's id route; fixed routes are never valid ids
                name, route = RevRegId.from_raw_path(path[1:]), BY_ID
        except BadRequest:
            return None
        stored = self.storage.open_now(name)
        return None if stored is None else (route, stored)

    def head_of(self, stored: LocalFile, version: str, keep_alive: bool, request_id: str) -> bytes:
        """The status line and headers, as aiohttp writes them for TailsFileResponse."""
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, formatdate(now, usegmt=True)
        if keep_alive:
            connection = "Connection: keep-alive\r\n" if version == "1.0" else ""
        else:
            connection = "Connection: close\r\n" if version == "1.1" else ""
        return (
            f"HTTP/{version} 200 OK\r\n"
            f"X-Request-ID: {request_id}\r\n"
            f'Etag: "{stored.tails_hash.value}"\r\n'
            f"Cache-Control: {CACHE_FOREVER}\r\n"
            f"Last-Modified: {http_date(int(stored.mtime))}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {stored.size}\r\n"
            "Accept-Ranges: bytes\r\n"
            f"Date: {self._date}\r\n"
            f"Server: {SERVER_SOFTWARE}\r\n"
            f"{connection}\r\n"
        ).encode("latin-1")

    def stop(self) -> None:
        """Stop answering: idle connections close now, busy ones after their response."""
        self.stopping = True
        for door in list(self.open):
            door.stop()

    async def drained(self, timeout: float) -> None:
        """Wait up to `timeout` s for responses still leaving, then cut those that remain."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for door in list(self.open):
            door.transport.abort()

"""One front-door connection: parsing request heads, pacing responses, timeouts, the hand-over."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING

import httptools

from .. import logs
from .response import Response, answer_held

if TYPE_CHECKING:
    from .doors import FrontDoors

_TERMINATOR = b"\r\n\r\n"
_METHODS = (b"GET ", b"HEAD ")
# Request headers that ask for more than the whole file, or announce a body: aiohttp's path answers those.
_NOT_PLAIN = frozenset(
    (b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"content-length",
     b"transfer-encoding", b"expect", b"upgrade")
)


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
    """One connection: answers plain downloads until a request needs aiohttp, then hands it over.

    On plaintext the door sends with sendfile on a duplicate of the socket and waits for room in
    it; on TLS it writes into the TLS transport (tls/transport.py) and follows its
    pause_writing/resume_writing.
    """

    def __init__(self, doors: FrontDoors) -> None:
        self.doors = doors
        self.head = _Head()
        self.head.parser = self.parser = httptools.HttpRequestParser(self.head)
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None  # plaintext: a duplicate (the loop lets no one else watch the transport's own)
        self.remote: str | None = None
        self.admitted = self.busy = self.waiting = self.eof = self.paused = False
        self.loop: asyncio.AbstractEventLoop | None = None  # kept: on Python 3.11 each lookup costs a getpid()
        self.active_at = 0.0  # the last finished response or byte sent; reads do not count (slowloris)
        self.timer: asyncio.TimerHandle | None = None
        self.turn: asyncio.Handle | None = None  # TLS: the next part of a body, after other callbacks
        self.response: Response | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.doors.connections.admit(transport):  # TLS: admitted at accept, so this is a no-op
            return  # answered with a 503 and closing: nothing of ours to set up
        if not self.doors.encrypted:
            try:
                self.sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
            except OSError as exc:  # out of file descriptors: say so, and give this one back at once
                self.doors.connections.out_of_descriptors(transport, exc)
                return
        self.admitted = True
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.doors.open.add(self)
        self.loop = loop = asyncio.get_running_loop()
        self.active_at = loop.time()
        self.timer = loop.call_at(self.active_at + self.doors.timeout, self._on_timer)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return  # refused: the 503 is on its way and the connection closing
        self.buffer += data
        if not self.busy:
            self._answer_buffered()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.admitted:
            return False
        return self.busy  # keep the transport for a response still leaving; otherwise it closes

    def pause_writing(self) -> None:
        """TLS: the transport holds enough; bodies and further requests wait for resume_writing."""
        self.paused = True
        if not self.waiting:
            self.waiting = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport.is_closing():
            return
        if self.response is None:
            self.waiting = False
            self.transport.resume_reading()
            self._answer_buffered()
        elif self.response.reading is None and self.turn is None:
            self._on_writable()

    def chunk_read(self, future: asyncio.Future) -> None:
        """TLS: a thread has read a chunk that was not cached: write it, then go on."""
        response = self.response
        if response is None or response.reading is not future:  # the response ended meanwhile
            if not future.cancelled():
                future.exception()  # retrieved: nothing to report for a connection that is gone
            return
        try:
            response.take_read(self)
        except OSError:  # the disk failed mid-body: the client sees the connection end short
            self.transport.abort()
            return
        self.active_at = self.loop.time()
        self._on_writable()

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
        while start < len(buffer) and not self.busy and not self.paused and not self.transport.is_closing():
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
            if response is True:
                continue
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

    def _plain_response(self, head: bytes) -> Response | bool | None:
        """The response to a complete head if this door may answer it alone (True: answered already,
        whole, from memory), else None."""
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
        if stored.file is None:  # held in memory (cache.py): answered whole, now
            answer_held(self, stored, route, method, parsed.url.decode("ascii"), version, keep_alive, request_id)
            self.active_at = self.loop.time()
            if not keep_alive:
                self.transport.close()
            return True
        try:
            return Response(stored, route, method, parsed.url.decode("ascii"), version, keep_alive, request_id, self.doors)
        except OSError:
            stored.file.close()
            raise

    def _pump(self) -> None:
        """Send what the socket takes now; wait for room when it is full; finish when all is sent."""
        response = self.response
        try:
            sent = response.send(self.sock) if self.sock is not None else response.write(self)
        except OSError:  # the client reset the connection (or the disk failed): nothing more can reach it
            self.transport.abort()
            return
        loop = self.loop
        if sent:
            self.active_at = loop.time()
        if not response.done:
            if not self.waiting:
                self.waiting = True
                self.transport.pause_reading()  # pipelined requests wait in the socket, not in memory
                if self.sock is not None:
                    loop.add_writer(self.sock.fileno(), self._on_writable)
            if self.sock is None and not self.paused and response.reading is None and self.turn is None:
                self.turn = loop.call_soon(self._next_turn)  # TLS: the rest after other callbacks had theirs
            return
        if self.waiting and not self.paused:
            self.waiting = False
            if self.sock is not None:
                loop.remove_writer(self.sock.fileno())
            self.transport.resume_reading()
        self.response, self.busy = None, False
        response.end(self)
        self.active_at = loop.time()
        if not response.keep_alive or self.doors.stopping:
            self.transport.close()

    def _next_turn(self) -> None:
        self.turn = None
        if self.response is not None and not self.transport.is_closing():
            self._on_writable()

    def _on_writable(self) -> None:
        """Room in the socket for a response that did not fit: send on, then the requests queued behind it."""
        self._pump()
        if not self.busy and self.transport.get_protocol() is self:
            self._answer_buffered()

    def _on_timer(self) -> None:
        """Close an idle connection, or cut a download its client stopped reading, after the timeout."""
        loop = self.loop
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
        if self.paused:  # the transport will tell the new protocol when to resume, not when to pause
            handler.pause_writing()
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
        if self.turn is not None:
            self.turn.cancel()
            self.turn = None
        if self.sock is not None:
            if self.waiting:
                self.loop.remove_writer(self.sock.fileno())
                self.waiting = False
            self.sock.close()
            self.sock = None
        self.doors.open.discard(self)

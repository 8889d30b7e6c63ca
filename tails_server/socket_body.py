"""Upload bodies read by a worker thread straight off the socket, not by the event loop.

On the event loop every 256 KiB of an upload passed through aiohttp's HTTP parser (one more copy)
and its stream reader, and all uploads of a worker took turns on its one event-loop thread:
uploads ran at ~0.8x of a plain blocking receiver with the same durability. Here, once the
handler has the headers (and a multipart body's part headers), the event loop stops reading the
connection and a worker thread reads the rest of the Content-Length body, finds the part's end,
hashes and writes it, as a blocking server would. aiohttp's parser never sees those bytes, so
the connection closes after the response. TLS and chunked bodies stay on the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from concurrent.futures import Executor, Future

from aiohttp import hdrs, web

from .errors import BadRequest, RequestTimeout
from .parts import NO_CLOSING_BOUNDARY, ClosingDelimiter
from .tails import TailsReceiver

# Set on a request whose body left the event loop: its response must close the connection.
CLOSES_CONNECTION = "tails_server.closes_connection"
READ_SIZE = 1 << 18
# Bytes after a part's closing delimiter that the thread reads and drops (the epilogue is "--\r\n");
# anything longer is left to aiohttp, which drains unread bodies for a bounded time.
EPILOGUE_LIMIT = 1 << 16


class _Stopped(Exception):
    """The event loop asked the thread to stop reading: the upload failed for another reason."""


class SocketBody:
    """The rest of one request body, read from the raw socket by a worker thread."""

    def __init__(
        self, request: web.Request, head: list[bytes], remaining: int, read_timeout: float, executor: Executor,
        scanner: ClosingDelimiter | None,
    ) -> None:
        self._request = request
        # A duplicate: if the server closes the transport while the thread reads (shutdown), the
        # thread's descriptor still names this connection, never a file or socket opened since.
        self._fd = os.dup(request.transport.get_extra_info("socket").fileno())
        self._wake: tuple[int, int] | None = None
        self._head = head  # what the event loop had received before the handoff
        self.remaining = remaining
        self._read_timeout = read_timeout
        self._executor = executor
        self._stopping = False
        self._scanner = scanner  # finds the end of a multipart part's content; None for a raw body

    @classmethod
    def take(
        cls, request: web.Request, read_timeout: float, executor: Executor, scanner: ClosingDelimiter | None = None
    ) -> SocketBody | None:
        """Take the body off the event loop: plain TCP, a Content-Length and bytes still to come; else None."""
        transport = request.transport
        content = request.content
        if (
            transport is None
            or transport.is_closing()
            or transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("socket") is None
            or request.content_length is None
            or hdrs.TRANSFER_ENCODING in request.headers
            or content.is_eof()
            or content.exception() is not None
        ):
            return None
        head = []
        # Reading can re-enter the parser and refill the buffer: drain until it stays empty.
        while chunk := content.read_nowait():
            head.append(chunk)
        body = cls(request, head, max(0, request.content_length - content.total_bytes), read_timeout, executor, scanner)
        transport.pause_reading()
        request[CLOSES_CONNECTION] = True
        return body

    async def receive_into(self, receiver: TailsReceiver, expected: asyncio.Future) -> None:
        """Read the body into `receiver`; stop at once if `expected` fails first."""
        thread: Future | None = None
        try:
            self._wake = os.pipe()  # wakes the thread from poll() when it must stop
            thread = self._executor.submit(self._run, receiver)
            pump = asyncio.wrap_future(thread)  # waited on, never awaited: a cancelled wait leaves the thread alone
            await asyncio.wait((pump, expected), return_when=asyncio.FIRST_COMPLETED)
            if not pump.done() and not expected.cancelled() and expected.exception() is not None:
                raise expected.exception()
            await asyncio.wait((pump,))
            if (error := pump.result()) is not None:
                raise error
        finally:
            await self._settle(thread)

    def _run(self, receiver: TailsReceiver) -> BaseException | None:
        """Worker thread: the pump's error, returned so that no future holds an unretrieved one."""
        try:
            self._pump(receiver)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which raises it
            return None if isinstance(exc, _Stopped) else exc
        return None

    def _pump(self, receiver: TailsReceiver) -> None:
        """Worker thread: read up to the end of the body, feeding the tails content to `receiver`."""
        scanner = self._scanner
        dropped = 0  # bytes after the part's closing delimiter

        def feed(chunk: bytes) -> None:
            nonlocal dropped
            if scanner is None:
                receiver.feed_blocking(chunk)
            elif scanner.done:
                dropped += len(chunk)
            else:
                scanner.scan(chunk)
                while scanner.ready:
                    receiver.feed_blocking(scanner.ready.popleft())

        for chunk in self._head:
            feed(chunk)
        self._head = []
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        while self.remaining > 0 and not (scanner is not None and scanner.done and dropped + self.remaining > EPILOGUE_LIMIT):
            if self._stopping:
                raise _Stopped()
            try:
                chunk = os.read(self._fd, min(self.remaining, READ_SIZE))
            except BlockingIOError:
                events = poller.poll(int(self._read_timeout * 1000))
                if not events:
                    raise RequestTimeout(f"No request data for {self._read_timeout:g} s.") from None
                continue
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE):
                    raise ConnectionResetError("Connection lost") from None
                raise
            if not chunk:
                raise ConnectionResetError("Connection lost")
            self.remaining -= len(chunk)
            feed(chunk)
        if scanner is not None and not scanner.done:
            raise BadRequest(NO_CLOSING_BOUNDARY)
        receiver.finish_blocking()

    async def _settle(self, thread: Future | None) -> None:
        """Wait until the thread has let go of the socket and the temp file, then give the connection back.

        A body read to its end is marked complete for aiohttp; otherwise reading resumes, so that
        aiohttp drains what the client still sends (for a bounded time) while the answer goes out.
        """
        if thread is not None and not thread.done():
            self._stopping = True
            os.write(self._wake[1], b"x")
        cancelled = False
        while thread is not None and not thread.done():  # never leave while the thread may still write to the temp file
            try:
                await asyncio.wait((asyncio.wrap_future(thread),))
            except asyncio.CancelledError:
                cancelled = True
        for fd in (self._fd, *(self._wake or ())):
            os.close(fd)
        transport = self._request.transport
        if self.remaining == 0:
            self._request.content.feed_eof()
        elif transport is not None and not transport.is_closing():
            transport.resume_reading()
        if cancelled:
            raise asyncio.CancelledError()

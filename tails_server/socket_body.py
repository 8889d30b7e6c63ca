"""Upload bodies moved by the kernel from the socket into the temp file, by a worker thread.

On the event loop every 256 KiB of an upload passed through aiohttp's HTTP parser (one more copy)
and its stream reader, and all uploads of a worker took turns on its one event-loop thread. Here,
once the handler has the headers (and a multipart body's part headers), the event loop stops reading
the connection and a worker thread moves the rest of the Content-Length body into the temp file with
splice() (socket -> pipe -> file: the bytes never enter Python), then hashes and checks what landed
there through a mapping, 1 MiB at a time (a blocking receiver that read into Python and
wrote back out used ~35% more CPU per 4 MiB upload). aiohttp's parser never sees those bytes, so the
connection closes after the response. TLS and chunked bodies, and filesystems that cannot take
splice(), stay on the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import select
import time
from concurrent.futures import Executor, Future

from aiohttp import hdrs, web

from . import memsearch
from .errors import SHUTTING_DOWN, BadRequest, RequestTimeout, Unavailable
from .limits.pace import TICK, BodyClock
from .parts import NO_CLOSING_BOUNDARY
from .tails import BATCH, HEADER, TailsReceiver

# Set on a request whose body left the event loop: its response must close the connection.
CLOSES_CONNECTION = "tails_server.closes_connection"
# Bytes moved per splice(): with 1 MiB pipes a 4 MiB upload took under half the system time it
# took with the default 64 KiB. A user over the kernel's pipe-buffer quota gets the default, slower.
PIPE_SIZE = 1 << 20
TICK_MS = int(TICK * 1000)  # a waiting thread wakes this often to judge the body's pace
# Bytes after a part's closing delimiter that the thread still takes in (cut off the temp file; the
# epilogue is "--\r\n"); anything longer is left to aiohttp, which drains unread bodies for a bounded time.
EPILOGUE_LIMIT = 1 << 16


def _given_up_error(given_up: asyncio.Future) -> Exception | None:
    """Why aiohttp failed the request's stream: a stopping server cancels it, a lost connection resets it.

    None if the stream simply ended: draining it for the hand-off can make aiohttp parse the rest of
    a body it had already received, and then the thread has nothing left to read off the socket.
    """
    if given_up.cancelled():
        return Unavailable(SHUTTING_DOWN)
    if given_up.exception() is not None:
        return ConnectionResetError("Connection lost")
    return None


class _Stopped(Exception):
    """The event loop asked the thread to stop reading: the upload failed for another reason."""


class SocketBody:
    """The rest of one request body, moved from the raw socket into the temp file by a worker thread."""

    def __init__(
        self, request: web.Request, fd: int, head: list[bytes], remaining: int, clock: BodyClock, executor: Executor,
        boundary: bytes | None,
    ) -> None:
        self._request = request
        # A duplicate: if the server closes the transport while the thread reads (shutdown), the
        # thread's descriptor still names this connection, never a file or socket opened since.
        self._fd = fd
        self._wake: tuple[int, int] | None = None
        self._head = head  # what the event loop had received before the handoff
        self.remaining = remaining
        self._read_timeout = clock.seconds
        self._pace = clock.pace
        # Body bytes received before the head handed over here: the pace counts the whole body.
        self._before = request.content.total_bytes - sum(map(len, head))
        self._executor = executor
        self._stopping = False
        self._boundary = boundary  # the content is a multipart part's, up to this boundary; None: raw

    @classmethod
    def take(
        cls, request: web.Request, receiver: TailsReceiver, clock: BodyClock, executor: Executor,
        boundary: bytes | None = None,
    ) -> SocketBody | None:
        """Take the body off the event loop: plain TCP, a Content-Length, bytes still to come and a
        temp file the kernel can splice into; else None."""
        transport = request.transport
        content = request.content
        if (
            not receiver.temp.splices
            or transport is None
            or transport.is_closing()
            or transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("socket") is None
            or request.content_length is None
            or hdrs.TRANSFER_ENCODING in request.headers
            or content.is_eof()
            or content.exception() is not None
        ):
            return None
        try:
            fd = os.dup(transport.get_extra_info("socket").fileno())
        except OSError:  # out of descriptors: aiohttp reads this body on the event loop instead
            return None
        head = []
        # Reading can re-enter the parser and refill the buffer: drain until it stays empty.
        while chunk := content.read_nowait():
            head.append(chunk)
        body = cls(request, fd, head, max(0, request.content_length - content.total_bytes), clock, executor, boundary)
        transport.pause_reading()
        request[CLOSES_CONNECTION] = True
        return body

    async def receive_into(self, receiver: TailsReceiver, expected: asyncio.Future) -> None:
        """Read the body into `receiver`; stop at once if `expected` fails first, or if aiohttp gives up on the request."""
        thread: Future | None = None
        # aiohttp fails the request's stream when the connection is lost or when a stopping server
        # ends the requests that outlived --shutdown-timeout; the thread must stop then too.
        given_up = asyncio.ensure_future(self._request.content.wait_eof())
        given_up.add_done_callback(lambda done: done.cancelled() or done.exception())  # read even if unused
        try:
            self._wake = os.pipe()  # wakes the thread from poll() when it must stop
            thread = self._executor.submit(self._run, receiver)
            pump = asyncio.wrap_future(thread)  # waited on, never awaited: a cancelled wait leaves the thread alone
            watched = {pump, expected, given_up}
            while not pump.done():
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if pump in done:
                    break
                if expected in done:  # a known hash, or the ledger's answer
                    if not expected.cancelled() and expected.exception() is not None:
                        raise expected.exception()
                    watched.discard(expected)
                if given_up in done:
                    if (error := _given_up_error(given_up)) is not None:
                        raise error
                    watched.discard(given_up)
            if (error := pump.result()) is not None:
                raise error
        finally:
            given_up.cancel()
            await self._settle(thread)

    def _run(self, receiver: TailsReceiver) -> BaseException | None:
        """Worker thread: the pump's error, returned so that no future holds an unretrieved one."""
        try:
            self._pump(receiver)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which raises it
            return None if isinstance(exc, _Stopped) else exc
        return None

    def _pump(self, receiver: TailsReceiver) -> None:
        """Worker thread: move the body into the temp file up to its end, checking and hashing the content."""
        temp = receiver.temp
        temp.write_all(self._head)
        written = sum(map(len, self._head))
        self._head = []
        content = _FileContent(receiver, self._boundary)
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        pipe = os.pipe()
        last_byte = time.monotonic()
        try:
            try:
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # over the user's pipe-buffer quota: the default size still works
                pass
            while True:
                if content.due(written):
                    content.digest(written)
                if self.remaining == 0 or (content.end is not None and self.remaining > EPILOGUE_LIMIT):
                    break
                if self._stopping:
                    raise _Stopped()
                self._pace.check(self._before + written)
                try:
                    moved = os.splice(self._fd, pipe[1], min(self.remaining, PIPE_SIZE))
                except BlockingIOError:
                    if not poller.poll(TICK_MS):  # woken each tick to judge the pace
                        if time.monotonic() - last_byte >= self._read_timeout:
                            raise RequestTimeout(f"No request data for {self._read_timeout:g} s.") from None
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE):
                        raise ConnectionResetError("Connection lost") from None
                    raise
                if not moved:
                    raise ConnectionResetError("Connection lost")
                last_byte = time.monotonic()
                self.remaining -= moved
                written += moved
                while moved:  # the pipe holds them all: a blocking write to the file
                    into_file = os.splice(pipe[0], temp.fd, moved)
                    if not into_file:  # never loop on a file that takes nothing (a full disk raises ENOSPC)
                        raise OSError(errno.EIO, "the temp file took no bytes")
                    moved -= into_file
        finally:
            os.close(pipe[0])
            os.close(pipe[1])
        content.digest(written, last=True)
        if content.end is not None and written > content.end:
            temp.truncate(content.end)  # the closing delimiter and what followed it
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


class _FileContent:
    """The tails content of a body in the temp file: checked and hashed through a mapping, a region at a time."""

    def __init__(self, receiver: TailsReceiver, boundary: bytes | None) -> None:
        self._receiver = receiver
        self._delimiter = b"\r\n--" + boundary if boundary is not None else None
        self._hold = len(self._delimiter) - 1 if self._delimiter else 0  # may start a delimiter not yet complete
        self.hashed = 0  # the content before this offset is hashed
        self.end: int | None = None  # where a multipart part's content ends, once its delimiter is found

    def due(self, written: int) -> bool:
        """Digest now: a batch is waiting, the header is unchecked, or the file may be over the limit."""
        receiver = self._receiver
        return self.end is None and (
            written - self.hashed >= BATCH or receiver.size < len(HEADER) or written > receiver.max_size
        )

    def digest(self, written: int, last: bool = False) -> None:
        """Hash the content between the last digest and `written`; find the part's end on the way."""
        if self.end is not None or written <= self.hashed:
            if last and self._delimiter is not None and self.end is None:
                raise BadRequest(NO_CLOSING_BOUNDARY)
            return
        start = self.hashed - self.hashed % mmap.ALLOCATIONGRANULARITY
        with memsearch.map_region(self._receiver.temp.fd, written - start, start) as mapped:
            upto = written
            if self._delimiter is not None:
                cut = memsearch.find(mapped, self._delimiter, self.hashed - start)
                if cut >= 0:
                    upto = self.end = start + cut
                elif last:
                    raise BadRequest(NO_CLOSING_BOUNDARY)
                else:
                    upto = written - self._hold
            if upto > self.hashed:
                with memoryview(mapped) as view, view[self.hashed - start : upto - start] as piece:
                    self._receiver.hash_written(piece)
                self._receiver.temp.write_back(self.hashed, upto - self.hashed)
                self.hashed = upto

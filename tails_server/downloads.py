"""Send stored tails files: conditional requests, Range and sendfile, done once for every route.

aiohttp's FileResponse would do the same, but it stats and opens each file on a worker thread,
tags files by mtime and size, and looks for "<name>.gz" siblings when a client accepts gzip.
Tails files are immutable and named by their hash, so this response uses the hash as a strong
ETag, never compresses, hands local files to the kernel with sendfile, and streams remote
ones (object storage) through, fetching only the requested range.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from email.utils import formatdate

from aiohttp import ETag, hdrs, web

from .errors import one_line
from .storage import StoredFile

LOGGER = logging.getLogger(__name__)
CACHE_FOREVER = "public, max-age=31536000, immutable"
# Below this, one pread() and one socket write (headers included) cost less than a sendfile()
# after the headers; above it, copying the bytes through user space costs more (measured on
# 128 KiB: +30% req/s with sendfile). Both read page-cached data inline.
SMALL_BODY = 1 << 15
# Above this, TCP_CORK holds aiohttp's separately written headers for the body, and keeps the many
# sendfile() calls of a body that outgrows the socket buffer from leaving part-filled segments; a
# smaller body leaves in one call, and the two setsockopt() calls cost ~10% of a 128 KiB GET.
# (The front door sends its head with MSG_MORE instead, and corks nothing.)
CORK_ABOVE = 1 << 20


class TailsFileResponse(web.StreamResponse):
    """200, 206, 304, 412 or 416 for one opened stored file, which it always closes."""

    # As web.Response does: headers wait for the first body bytes and leave in the same write.
    _send_headers_immediately = False

    def __init__(self, stored: StoredFile, stall_timeout: float) -> None:
        super().__init__()
        self.stored = stored
        self.stall_timeout = stall_timeout
        self._attempted = False
        self.sent = 0  # body bytes handed to the kernel (the access log's size)
        self.cut_short = False  # the headers left but not the whole body

    async def prepare(self, request: web.BaseRequest):
        """Decide the status from the request's conditions, then send headers and bytes."""
        # aiohttp calls prepare() again on a response its handler prepared, or tried to before
        # the connection dropped: the file is closed by then, only the framework's part remains.
        if self.prepared or self._attempted:
            return await super().prepare(request)
        self._attempted = True
        try:
            return await self._send(request)
        except BaseException:
            self.cut_short = self.prepared  # before the headers, aiohttp answers the error itself
            raise
        finally:
            await self.stored.close()

    async def _send(self, request: web.BaseRequest):
        stored = self.stored
        tag = stored.tails_hash.value
        self.headers[hdrs.ETAG] = f'"{tag}"'
        self.headers[hdrs.CACHE_CONTROL] = CACHE_FOREVER
        self.headers[hdrs.LAST_MODIFIED] = http_date(int(stored.mtime))
        if (if_match := request.if_match) is not None:
            if not _matches(tag, if_match, weak=False):
                return await self._empty(request, 412)
        elif (unmodified := request.if_unmodified_since) is not None and int(stored.mtime) > unmodified.timestamp():
            return await self._empty(request, 412)
        if_none_match = request.if_none_match
        if if_none_match is not None:
            if _matches(tag, if_none_match, weak=True):
                return await self._empty(request, 304)
        elif (since := request.if_modified_since) is not None and int(stored.mtime) <= since.timestamp():
            return await self._empty(request, 304)

        offset, count = 0, stored.size
        byte_range = _requested_range(request, tag, stored.mtime)
        if byte_range is not None:
            start, stop = byte_range.start, byte_range.stop
            if start is not None and start < 0:  # a suffix: the last -start bytes
                start = max(0, stored.size + start)
            if start is None or start >= stored.size:
                self.headers[hdrs.CONTENT_RANGE] = f"bytes */{stored.size}"
                return await self._empty(request, 416)
            offset, count = start, min(stop if stop is not None else stored.size, stored.size) - start
            self.set_status(206)
            self.headers[hdrs.CONTENT_RANGE] = f"bytes {offset}-{offset + count - 1}/{stored.size}"

        self.headers[hdrs.CONTENT_TYPE] = "application/octet-stream"  # the setter parses; no need
        self.content_length = count
        self.headers[hdrs.ACCEPT_RANGES] = "bytes"
        sending = bool(count) and request.method != hdrs.METH_HEAD
        if sending and stored.local_file() is None:
            return await self._stream(request, offset, count)
        with _corked(request.transport if sending and count > CORK_ABOVE else None):
            writer = await super().prepare(request)
            if sending:
                await self._sendfile(request, writer, offset, count)
        await super().write_eof()
        return writer

    async def _stream(self, request: web.BaseRequest, offset: int, count: int):
        """Remote bytes: the first piece arrives before the headers leave, so a failing store is a 503.

        Once the headers are out, a failing store can only cut the connection short: the client
        sees fewer bytes than Content-Length, never a second response glued to the first.
        """
        chunks = self.stored.chunks(offset, count)
        try:
            first = await anext(chunks, b"")
            writer = await super().prepare(request)
            try:
                await self._write(request, writer, first)
                async for chunk in chunks:
                    await self._write(request, writer, chunk)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception as exc:
                LOGGER.error("storage failed while sending %s: %s", one_line(request.path), exc)
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("storage failed mid-body") from None
        finally:
            await chunks.aclose()
        await super().write_eof()
        return writer

    async def _empty(self, request: web.BaseRequest, status: int):
        self.set_status(status)
        if status != 304:
            self.content_length = 0
        return await super().prepare(request)

    async def _sendfile(self, request: web.BaseRequest, writer, offset: int, count: int) -> None:
        """The kernel copies file to socket; TLS connections and loops without sendfile get chunked writes."""
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        file = self.stored.local_file()
        if count <= SMALL_BODY:
            await writer.write(os.pread(file.fileno(), count, offset))
            self.sent += count
            return
        sock = _plain_socket(transport)
        if sock is not None:
            writer.send_headers()  # sendfile bypasses the writer: the headers must go first
            if not transport.get_write_buffer_size():
                try:
                    await _kernel_copy(sock.fileno(), file.fileno(), offset, count, self.stall_timeout, self._count)
                except BaseException:  # the body is cut short: the connection must not carry another response
                    transport.abort()
                    raise
                return
            # Headers still queued (rare): the event loop's sendfile waits for them to leave.
            with contextlib.suppress(NotImplementedError, asyncio.SendfileNotAvailableError):
                await asyncio.get_running_loop().sendfile(transport, file, offset, count, fallback=False)
                self.sent += count
                return
        async for chunk in self.stored.chunks(offset, count):
            await self._write(request, writer, chunk)

    def _count(self, sent: int) -> None:
        self.sent += sent

    async def _write(self, request: web.BaseRequest, writer, chunk: bytes) -> None:
        """One piece of the body; a client that takes nothing for stall_timeout s is cut off."""
        try:
            async with asyncio.timeout(self.stall_timeout):
                await writer.write(chunk)
            self.sent += len(chunk)
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError(f"client read nothing for {self.stall_timeout:g} s") from None


@functools.lru_cache(maxsize=1024)
def http_date(timestamp: int) -> str:
    """Last-Modified for a file time: files never change, so each is formatted once."""
    return formatdate(timestamp, usegmt=True)


def _plain_socket(transport: asyncio.Transport) -> socket.socket | None:
    """The TCP socket under a plaintext transport; None under TLS, where bytes must be encrypted."""
    if transport.get_extra_info("sslcontext") is not None or not hasattr(os, "sendfile"):
        return None
    return transport.get_extra_info("socket")


async def _kernel_copy(sock_fd: int, file_fd: int, offset: int, count: int, stall_timeout: float,
                       progress: Callable[[int], None]) -> None:
    """Send `count` file bytes with sendfile(), waiting for room in the socket between calls.

    Most responses fit the socket buffer and leave in the first call. For the rest, one writer
    callback stays registered until the end, on a duplicate descriptor: the event loop's own
    sendfile re-registers after every call and pauses reading, which costs more CPU than the
    copy itself on loopback, and a duplicate is never reused by another connection even if
    this one is closed meanwhile. A client that takes nothing for `stall_timeout` s is cut off.
    """
    sent = _sendfile_once(sock_fd, file_fd, offset, count)
    progress(sent)
    if sent == count:
        return
    offset, count = offset + sent, count - sent
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = os.dup(sock_fd)
    checked_at = -1

    def on_writable() -> None:
        nonlocal offset, count
        if done.done():
            return
        try:
            sent = _sendfile_once(fd, file_fd, offset, count)
        except ConnectionError as exc:
            done.set_exception(exc)
            return
        offset, count = offset + sent, count - sent
        progress(sent)
        if not count:
            done.set_result(None)

    def check_progress() -> None:
        nonlocal checked_at, timer
        if done.done():
            return
        if offset == checked_at:
            done.set_exception(ConnectionResetError(f"client read nothing for {stall_timeout:g} s"))
            return
        checked_at = offset
        timer = loop.call_later(stall_timeout, check_progress)

    timer = loop.call_later(stall_timeout, check_progress)
    try:
        loop.add_writer(fd, on_writable)
        await done
    finally:
        timer.cancel()
        loop.remove_writer(fd)
        os.close(fd)


def _sendfile_once(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """One non-blocking sendfile(): bytes sent, 0 if the socket is full; errors end the response."""
    try:
        sent = os.sendfile(sock_fd, file_fd, offset, count)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as exc:
        raise ConnectionResetError(f"sendfile failed: {exc.strerror}") from None
    if not sent:  # end of file before `count`: the stored file is shorter than announced
        raise ConnectionResetError("stored file ended early")
    return sent


@contextlib.contextmanager
def _corked(transport: asyncio.Transport | None) -> Iterator[None]:
    """TCP_CORK for the duration (Linux); a no-op elsewhere or once the connection is gone."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    cork = getattr(socket, "TCP_CORK", None)
    if sock is None or cork is None:
        yield
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, cork, 0)


def serve(stored: StoredFile, stall_timeout: float) -> web.StreamResponse:
    """The response for GET/HEAD of a stored file; a client reading nothing for `stall_timeout` s is cut off."""
    return TailsFileResponse(stored, stall_timeout)


_EMPTY_SUFFIX = re.compile(r"\s*bytes\s*=\s*-\s*0+\s*", re.I)


def _requested_range(request: web.BaseRequest, tag: str, mtime: float) -> slice | None:
    """The single byte range asked for, if any and if If-Range still holds; unparseable = none."""
    if hdrs.RANGE not in request.headers:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None:
        valid_tag = if_range.strip() == f'"{tag}"'
        valid_date = (date := request.if_range) is not None and int(mtime) <= date.timestamp()
        if not (valid_tag or valid_date):
            return None
    if _EMPTY_SUFFIX.fullmatch(request.headers[hdrs.RANGE]):
        return slice(None)  # the last 0 bytes: unsatisfiable (416), though aiohttp reads it as "from 0"
    try:
        return request.http_range
    except ValueError:
        return None


def _matches(tag: str, etags: tuple[ETag, ...], *, weak: bool) -> bool:
    """RFC 9110 comparison of our (strong) tag against a list from If-Match / If-None-Match."""
    return any(e.value in ("*", tag) and (weak or not e.is_weak) for e in etags)

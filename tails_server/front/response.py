"""One 200 for one whole stored file, as the front door sends it: sendfile, chunks into TLS, or from memory."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from .. import logs, metrics
from ..downloads import SMALL_BODY
from ..storage.local import LocalFile, cached_read_into
from .cache import CachedFile

if TYPE_CHECKING:
    from .door import FrontDoor
    from .doors import FrontDoors

# The head waits for the body's first bytes: one segment, not two. No TCP_CORK beyond that: without
# it a 4 MiB download took 5-9% less of the server's CPU, and no more of the client's, in three
# bench/ab.py runs (8-10 rounds each); throughput moved within the rounds' noise.
_MORE = getattr(socket, "MSG_MORE", 0)
# Into TLS, the body goes in chunks read from the page cache: large enough that the per-chunk Python
# is small beside the encryption (64 records of 16 KiB), small enough to keep memory flat.
TLS_CHUNK = 1 << 18
# At most this much is written per turn of the event loop: other connections get theirs between,
# and a connection whose socket failed learns of it before its whole body is encrypted for no one
# (a transport that lost its socket drops writes without ever asking for a pause).
TLS_TURN = 4 * TLS_CHUNK


class Response:
    """A 200 for one whole stored file: the head (with small bodies inline), then the body."""

    __slots__ = ("stored", "route", "method", "path", "keep_alive", "request_id", "out", "offset", "left", "started",
                 "head", "sent", "reading", "ended", "buffer")

    def __init__(self, stored: LocalFile, route: str, method: str, path: str, version: str, keep_alive: bool,
                 request_id: str, doors: FrontDoors) -> None:
        self.stored, self.route, self.method, self.path = stored, route, method, path
        self.keep_alive, self.request_id = keep_alive, request_id
        self.started = time.monotonic()
        size = stored.size
        self.out = memoryview(doors.head_of(stored, version, keep_alive, request_id))
        self.head, self.sent = len(self.out), 0  # the head's length; bytes sent so far, head included
        self.offset, self.left = 0, size if method == "GET" else 0
        self.reading: asyncio.Future | None = None  # a chunk a thread is reading from disk (TLS)
        self.ended = False
        self.buffer: bytearray | None = None  # TLS: the chunk last read, its memory used again once sent
        if 0 < self.left <= SMALL_BODY:  # one write for head and body costs less than a second one after it
            self.out = memoryview(bytes(self.out) + os.pread(stored.file.fileno(), self.left, 0))
            self.left = 0

    @property
    def done(self) -> bool:
        return not self.out and not self.left

    def send(self, sock: socket.socket) -> int:
        """Plaintext: bytes the kernel took now (0 if the socket is full); an OSError ends the response."""
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
        return sent

    def write(self, door: FrontDoor) -> int:
        """TLS: hand the transport up to TLS_TURN bytes, or less if it asks for a pause; bytes handed over.

        Chunks the page cache holds are read here, on the loop, without waiting (RWF_NOWAIT); a
        chunk that is not cached is read by a thread, and the door is called back when it is in.
        """
        transport, fd, written = door.transport, self.stored.file.fileno(), 0
        if self.out:
            pending = [self.out]
            if self.left:  # the head and the first chunk in one go
                chunk = self._cached_chunk(transport, fd)
                if chunk:
                    pending.append(chunk)
                    self.offset, self.left = self.offset + len(chunk), self.left - len(chunk)
            transport.writelines(pending)
            written, self.out = sum(len(p) for p in pending), memoryview(b"")
        while self.left and written < TLS_TURN and not door.paused and self.reading is None and not transport.is_closing():
            chunk = self._cached_chunk(transport, fd)
            if chunk is None:
                size = min(TLS_CHUNK, self.left)
                self.reading = asyncio.get_running_loop().run_in_executor(None, os.pread, fd, size, self.offset)
                self.reading.add_done_callback(door.chunk_read)
                break
            transport.write(chunk)
            self.offset, self.left, written = self.offset + len(chunk), self.left - len(chunk), written + len(chunk)
        self.sent += written
        return written

    def _cached_chunk(self, transport: asyncio.Transport, fd: int) -> memoryview | None:
        """The next chunk if the page cache holds it, read into the buffer of the one before once the
        transport has sent all it holds (a new buffer meant a zeroed allocation, page faults and an
        unmap for every 256 KiB); None if it must come from the disk.

        The chunk is a read-only view: the TLS transport keeps such a view as it is until it is
        sent, and this buffer is not read into again before then.
        """
        buffer = self.buffer
        if buffer is None or transport.get_write_buffer_size():
            buffer = self.buffer = bytearray(TLS_CHUNK)
        got = cached_read_into(fd, memoryview(buffer)[: min(TLS_CHUNK, self.left)], self.offset)
        return memoryview(buffer)[:got].toreadonly() if got else None

    def take_read(self, door: FrontDoor) -> int:
        """TLS: write the chunk a thread read (bytes written); an OSError ends the response."""
        future, self.reading = self.reading, None
        chunk = future.result()
        if not chunk:
            raise ConnectionResetError("stored file ended early")
        door.transport.write(chunk)
        self.offset, self.left, self.sent = self.offset + len(chunk), self.left - len(chunk), self.sent + len(chunk)
        return len(chunk)

    def end(self, door: FrontDoor) -> None:
        """Count and log the request as aiohttp's access logger would; close the file once no thread reads it."""
        if self.ended:
            return
        self.ended = True
        file = self.stored.file
        if self.reading is None:
            file.close()
        else:  # closing now could hand the thread's descriptor to another file
            self.reading.add_done_callback(lambda _: file.close())
        cut_short = not self.done
        size = max(0, self.sent - self.head) if cut_short else self.stored.size  # what left, when not all did
        _account(door, self.route, self.method, self.path, size, time.monotonic() - self.started, self.request_id, cut_short)


def answer_held(door: FrontDoor, held: CachedFile, route: str, method: str, path: str, version: str, keep_alive: bool,
                request_id: str) -> None:
    """A 200 from memory (cache.py), whole: head and body handed to the transport in one write, then counted.

    Nothing waits, so no Response object, pumping or end is needed: a little less Python per
    answer (the README gives the measurements).
    """
    started = time.monotonic()
    head = door.doors.head_of(held, version, keep_alive, request_id)
    size = held.size if method == "GET" else 0
    if not size:
        door.transport.write(head)
    elif size <= SMALL_BODY:  # one buffer: one TLS record for both where they fit
        door.transport.write(head + held.content)
    else:
        door.transport.writelines((head, held.content))
    _account(door, route, method, path, held.size, time.monotonic() - started, request_id, False)


def _account(door: FrontDoor, route: str, method: str, path: str, size: int, elapsed: float, request_id: str,
             cut_short: bool) -> None:
    """Count and log one answered download as aiohttp's access logger would."""
    metrics.record(route, method, 200, None, size, elapsed, cut_short)
    if logs.ACCESS.isEnabledFor(logging.INFO):
        logs.access_line(door.remote, method, path, 200, size, elapsed, request_id, cut_short)

"""The tails file format, checked and hashed as the bytes stream in."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from .errors import BadRequest, PayloadTooLarge
from .ids import TailsHash
from .storage import TempFile

HEADER = b"\x00\x02"
RECORD_SIZE = 128
BATCH = 1 << 20  # hand work to a thread in 1 MiB pieces: large enough that hashlib drops the GIL

BAD_HEADER = 'Tails file must start with "00 02".'
BAD_SIZE = "Tails file is not the correct size."


class FormatCheck:
    """Hashes a whole stored or local file fed in pieces, and says what, if anything, makes it no tails file."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._head = b""
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        if len(self._head) < len(HEADER):
            self._head += chunk[: len(HEADER) - len(self._head)]
        self._sha.update(chunk)
        self.size += len(chunk)

    def result(self) -> tuple[TailsHash, str | None]:
        problem = None
        if self._head != HEADER:
            problem = 'does not start with "00 02"'
        elif (self.size - len(HEADER)) % RECORD_SIZE:
            problem = "size is not 2 + 128·k"
        return TailsHash.of_digest(self._sha.digest()), problem


def check_file(path: Path) -> tuple[TailsHash, str | None]:
    """Hash a local file in one pass; also say what, if anything, makes it no tails file."""
    check = FormatCheck()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            check.feed(chunk)
    return check.result()


class TailsReceiver:
    """Writes one upload to a temp file while hashing it and checking the tails format.

    Hashing and writing run on a worker thread, one batch at a time, while the event loop keeps
    receiving the next batch (feed); or the thread that moves the body into the temp file hashes
    what landed there (hash_written). The event loop itself never touches the disk or the digest.
    """

    def __init__(self, temp: TempFile, max_size: int) -> None:
        self.temp = temp
        self.max_size = max_size
        self.size = 0
        self._head = b""
        self._sha = hashlib.sha256()
        self._chunks: list[bytes] = []  # kept as received: no copying on the event loop
        self._buffered = 0
        self._written = 0  # bytes of the temp file written by _consume
        self._pending: asyncio.Future | None = None
        self._result: TailsHash | None = None

    async def feed(self, chunk: bytes) -> None:
        """Take the next piece of the body; refuse early on a bad header or an oversized file."""
        if chunk and self._take(chunk):
            await self._flush()

    def hash_written(self, piece: memoryview) -> None:
        """For content a worker thread has already put in the temp file: check and hash it, write nothing."""
        self._check(piece)
        self._sha.update(piece)

    def _take(self, chunk: bytes) -> bool:
        """Check and queue one piece; True once a batch is due."""
        self._check(chunk)
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        return self._buffered >= BATCH

    def _check(self, chunk: bytes | memoryview) -> None:
        """Count one piece of content; refuse a bad header or an oversized file as soon as it shows."""
        if len(self._head) < len(HEADER):
            self._head += chunk[: len(HEADER) - len(self._head)]
            if not HEADER.startswith(self._head):
                raise BadRequest(BAD_HEADER)
        self.size += len(chunk)
        if self.size > self.max_size:
            raise PayloadTooLarge(f"Tails file is larger than the limit of {self.max_size} bytes.")

    async def finish(self) -> TailsHash:
        """Write what is left, check the format, make the file durable and return its hash."""
        if self._result is not None:  # finished by the thread that received the body
            return self._result
        await self._wait()
        self._check_format()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        # The last batch and the sync in one trip to a thread: for a small upload, the only one.
        self._pending = asyncio.get_running_loop().run_in_executor(None, self._consume_and_sync, chunks)
        await self._wait()
        return TailsHash.of_digest(self._sha.digest())

    def finish_blocking(self) -> None:
        """As finish(), on the thread that received the body: no more round trips to the event loop."""
        self._check_format()
        self.temp.sync()
        self._result = TailsHash.of_digest(self._sha.digest())

    def _check_format(self) -> None:
        if self.size < len(HEADER):
            raise BadRequest(BAD_HEADER)
        if (self.size - len(HEADER)) % RECORD_SIZE:
            raise BadRequest(BAD_SIZE)

    async def abort(self) -> None:
        """Let a running write finish before the temp file is removed, even if this wait is cancelled.

        Its error, if any, is not raised: the upload is failing anyway, and its own error is what
        the client sees.
        """
        cancelled = False
        while self._pending is not None and not self._pending.done():
            try:
                await asyncio.wait((self._pending,))
            except asyncio.CancelledError:  # the thread may still write to the file: wait on
                cancelled = True
        self._pending = None
        if cancelled:
            raise asyncio.CancelledError()

    async def close(self) -> None:
        """abort(), then remove the temp file: it never survives the upload, even if this wait is cancelled."""
        try:
            await self.abort()
        finally:
            self.temp.discard()

    async def _flush(self) -> None:
        if not self._chunks:
            return
        await self._wait()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._pending = asyncio.get_running_loop().run_in_executor(None, self._consume, chunks)

    async def _wait(self) -> None:
        """Wait for the batch a thread is writing; a cancelled wait leaves it pending, for abort()."""
        if self._pending is not None:
            await asyncio.shield(self._pending)
            self._pending = None

    def _consume_and_sync(self, chunks: list[bytes]) -> None:
        """Worker thread: the last batch, then the file made durable."""
        if chunks:
            self._consume(chunks)
        self.temp.sync()

    def _consume(self, chunks: list[bytes]) -> None:
        """Worker thread: hash and write one batch, and start its write-back."""
        for chunk in chunks:
            self._sha.update(chunk)
        self.temp.write_all(chunks)
        length = sum(map(len, chunks))
        self.temp.write_back(self._written, length)
        self._written += length

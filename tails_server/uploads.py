"""The upload pipeline for both PUT routes: receive → hash → verify → commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import TypeVar

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from . import threads
from .errors import SHUTTING_DOWN, BadRequest, Conflict, InsufficientStorage, PayloadTooLarge, Unavailable, from_os_error
from .genesis import Genesis
from .ids import RevRegId, TailsHash
from .ledger import LedgerClient
from .limits.clients import ClientAddress
from .limits.pace import BodyClock, Pace
from .limits.slots import PACE, UploadSlots
from .metrics import LEDGER_LATENCY
from .parts import LastPart, part_name, stream_chunk
from .socket_body import CLOSES_CONNECTION, SocketBody
from .storage import Name, Storage, TempFile
from .tails import TailsReceiver
from .trust import FIRST_NOT_GENESIS, TrustedLedgers

LOGGER = logging.getLogger(__name__)
Publish = Callable[[Name, TempFile, TailsHash], Awaitable[bool]]  # store a verified temp file; False if the name exists

READ_SIZE = 1 << 18
# aiohttp's part reader holds back one read to look for the boundary: small reads let a short
# genesis part through without waiting for the tails bytes behind it.
GENESIS_READ_SIZE = 1 << 14

# The reference server's exact wording, which clients and test suites match.
NOT_MULTIPART = "Expected mutlipart content type"
SECOND_NOT_TAILS = "Second field in multipart request must have name 'tails'"
HASH_MISMATCH = "tailsHash does not match hash of file."
ALREADY_STORED = "This tails file already exists."

ReadChunk = Callable[[int], Awaitable[bytes]]
T = TypeVar("T")


@contextmanager
def malformed_body_is_bad_request() -> Iterator[None]:
    """aiohttp's multipart parser reports broken bodies with assorted exceptions: make them 400s."""
    try:
        yield
    except HttpProcessingError as exc:
        raise BadRequest(f"Malformed multipart body: {exc.message.strip()}") from None
    except (ValueError, AssertionError, LookupError, RuntimeError, UnicodeError) as exc:
        raise BadRequest(f"Malformed multipart body: {exc}") from None


class MultipartBody:
    """A request's multipart parts, read so that only parse errors of the body become 400s."""

    def __init__(self, request: web.Request, clock: BodyClock) -> None:
        if not request.content_type.startswith("multipart/"):
            raise BadRequest(NOT_MULTIPART)
        self.clock = clock
        self._request = request
        with malformed_body_is_bad_request():
            self._reader = MultipartReader(request.headers, request.content)
            self._boundary = parse_mimetype(request.headers[hdrs.CONTENT_TYPE]).parameters["boundary"].encode()

    async def next_part(self) -> BodyPartReader | None:
        """The next plain part (a nested multipart counts as none)."""
        with malformed_body_is_bad_request():
            part = await self.clock.read(self._reader.next())
        return part if isinstance(part, BodyPartReader) else None

    def chunks(self, part: BodyPartReader) -> ReadChunk:
        """The part's bytes, one chunk per call, b"" at its end."""

        async def read_chunk(size: int) -> bytes:
            with malformed_body_is_bad_request():
                return await self.clock.read(part.read_chunk(size))

        return read_chunk

    def last_part(self, part: BodyPartReader) -> Body:
        """The content of the last part an upload reads, without aiohttp's copies (see parts.py).

        A part with its own Content-Length or a transfer encoding keeps aiohttp's reader.
        """
        if hdrs.CONTENT_LENGTH in part.headers or hdrs.CONTENT_TRANSFER_ENCODING in part.headers:
            return Body(self._request, self.chunks(part), self.clock, direct=False)
        read_chunk = LastPart(self._request.content, self._boundary, self.clock.read).read_chunk
        return Body(self._request, read_chunk, self.clock, boundary=self._boundary)


class Body:
    """Where an upload's tails bytes come from: a worker thread reading the socket when it can, else the event loop."""

    def __init__(
        self, request: web.Request, read_chunk: ReadChunk, clock: BodyClock, direct: bool = True, boundary: bytes | None = None
    ) -> None:
        self._request = request
        self._read_chunk = read_chunk  # the event loop's way: TLS, chunked or already received bodies
        self._clock = clock
        self._direct = direct  # may a worker thread read it off the socket?
        self._boundary = boundary  # the tails bytes are a multipart part's content up to this boundary

    async def receive_into(self, receiver: TailsReceiver, expected: asyncio.Future, threads: Executor) -> None:
        """Feed every tails byte to `receiver`; stop at once if `expected` fails first."""
        direct = None
        if self._direct:
            direct = SocketBody.take(self._request, receiver, self._clock, threads, self._boundary)
        if direct is not None:
            return await direct.receive_into(receiver, expected)
        while chunk := await _next_chunk(self._read_chunk, expected):
            await receiver.feed(chunk)


class Uploads:
    """Runs uploads by registry id (checked on the ledger) and by hash (checked against itself)."""

    def __init__(
        self,
        storage: Storage,
        ledger: LedgerClient,
        max_tails_size: int,
        max_genesis_size: int,
        read_timeout: float,
        min_free_space: int = 0,
        trusted: TrustedLedgers | None = None,
        slots: UploadSlots | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.storage = storage
        self.publish = publish or storage.put_if_absent  # the catalog's, so the index learns of it
        self.ledger = ledger
        self.max_tails_size = max_tails_size
        self.max_genesis_size = max_genesis_size
        self.read_timeout = read_timeout
        self.min_free_space = min_free_space
        self.trusted = trusted or TrustedLedgers({})
        self.slots = slots or UploadSlots(64, 64, 0, float("inf"), ClientAddress([]))
        # One thread per upload whose body is read off the socket: a slow client holds its own
        # thread, never one that hashes, syncs or locks for others.
        self.threads = threads.pool(self.slots.total, "tails-receive")
        self._in_flight: dict[int, web.Request] = {}  # uploads being handled, by id(): requests are unhashable
        self._ledgers: tuple[Genesis | None, Genesis | None] = (None, None)  # of the last two uploads by id

    async def put_by_id(self, request: web.Request, rev_reg_id: RevRegId) -> TailsHash:
        """multipart: `genesis` first, then `tails`; the file must match the ledger's tailsHash.

        A did:indy id of a trusted ledger may send `tails` alone.
        """
        body = MultipartBody(request, self._clock(request))
        # Refuse early, before the ledger and before the tails bytes.
        if await self.storage.stat(rev_reg_id) is not None:
            raise Conflict(ALREADY_STORED)
        early = self._early_lookup(rev_reg_id)
        lookup = None
        try:
            if early is not None:
                await asyncio.sleep(0)  # let it send its request now, not when this handler next waits
            part = await body.next_part()
            name = None if part is None else part_name(part)
            without_genesis = name == "tails" and self.trusted.accepts_without_genesis(rev_reg_id)
            if part is None or (name != "genesis" and not without_genesis):
                raise BadRequest(FIRST_NOT_GENESIS)
            uploaded = None if without_genesis else Genesis.parse_cached(await self._read_genesis(body.chunks(part)))
            genesis = self.trusted.choose(rev_reg_id, uploaded)
            self._ledgers = (self._ledgers[1], genesis)
            # The ledger lookup runs while the tails bytes arrive: a 404 or 503 still stops the
            # upload as soon as it is known, and an accepted upload does not wait for both in turn.
            if early is not None and early[0] == genesis.key:
                lookup, early = early[1], None
            else:
                if early is not None:  # another ledger: its answer means nothing here
                    early[1].cancel()
                lookup = self._lookup(genesis, rev_reg_id)
            if not without_genesis:
                part = await body.next_part()
                if part is None or part_name(part) != "tails":
                    raise BadRequest(SECOND_NOT_TAILS)
            return await self._receive_and_commit(body.last_part(part), lookup, rev_reg_id)
        finally:
            for pending in (early and early[1], lookup):
                if pending is not None:
                    if not pending.done():
                        pending.cancel()
                    pending.add_done_callback(_consume_outcome)

    def _lookup(self, genesis: Genesis, rev_reg_id: RevRegId) -> asyncio.Future[TailsHash]:
        """Start the registry's lookup on the ledger, timed for the metrics."""
        lookup = asyncio.ensure_future(self.ledger.tails_hash(genesis, rev_reg_id))
        started = time.perf_counter()
        lookup.add_done_callback(lambda done: done.cancelled() or LEDGER_LATENCY.observe(time.perf_counter() - started))
        return lookup

    def _early_lookup(self, rev_reg_id: RevRegId) -> tuple[str, asyncio.Future[TailsHash]] | None:
        """A lookup started before the genesis part is read, on the ledger the id most likely names.

        That is the trusted ledger of a did:indy id, else the ledger of the last two uploads if
        they named the same one, while its pool is open. It is a read of public data, kept only
        if the genesis then names that same ledger: most issuers upload every registry to one
        ledger, and the lookup then overlaps the whole upload instead of following the genesis
        part. Uploads that alternate between ledgers, or a flood of new ones, start none.
        """
        namespace = rev_reg_id.namespace
        genesis = self.trusted.by_name.get(namespace) if namespace else None
        before, last = self._ledgers
        if genesis is None and before is not None and last is not None and before.key == last.key:
            genesis = last
        if genesis is None or not self.ledger.is_open(genesis):
            return None
        return genesis.key, self._lookup(genesis, rev_reg_id)

    async def put_by_hash(self, request: web.Request, tails_hash: TailsHash) -> TailsHash:
        """The first multipart part (any name, as the reference) or a raw body (`curl -T`)."""
        if await self.storage.stat(tails_hash) is not None:
            raise Conflict(ALREADY_STORED)
        if request.content_type.startswith("multipart/"):
            body = MultipartBody(request, self._clock(request))
            part = await body.next_part()
            if part is None:
                raise BadRequest("Expected one part holding the tails file.")
            source = body.last_part(part)
        else:
            clock = self._clock(request)
            source = Body(request, _raw_body(request, clock), clock)
        known: asyncio.Future[TailsHash] = asyncio.get_running_loop().create_future()
        known.set_result(tails_hash)
        return await self._receive_and_commit(source, known, tails_hash)

    def _clock(self, request: web.Request) -> BodyClock:
        """The body's stall and pace clock (the pace was given when the upload was admitted)."""
        pace = request.get(PACE) or Pace(0, float("inf"))
        return BodyClock(self.read_timeout, pace, lambda: request.content.total_bytes)

    @contextmanager
    def admitted(self, request: web.Request) -> Iterator[None]:
        """Count an upload in (503 when no slot is free, 429 past its client's share), and 503 one a stopping server ends."""
        with self.slots.take(request):
            with self._running(request):
                yield

    @contextmanager
    def _running(self, request: web.Request) -> Iterator[None]:
        self._in_flight[id(request)] = request
        try:
            yield
        except asyncio.CancelledError:
            # A stopping server fails the body stream with CancelledError (at once for a body aiohttp
            # reads, see below); this task itself was not cancelled, so it can still answer.
            task = asyncio.current_task()
            if task is not None and not task.cancelling():
                raise Unavailable(SHUTTING_DOWN) from None
            raise
        finally:
            del self._in_flight[id(request)]

    def stop_event_loop_bodies(self) -> None:
        """Server stopping: refuse (503) the uploads whose body aiohttp still reads, keep those a thread reads.

        aiohttp drops every byte that arrives once it stops, so such a body could only wait for
        --shutdown-timeout; a body read off the socket by a worker thread can still finish.
        """
        for request in self._in_flight.values():
            if not request.get(CLOSES_CONNECTION) and not request.content.is_eof():
                request.content.set_exception(asyncio.CancelledError())  # as aiohttp does when the timeout ends

    async def _read_genesis(self, read_chunk: ReadChunk) -> bytes:
        """The genesis part, capped: it is held in memory."""
        data = bytearray()
        while chunk := await read_chunk(GENESIS_READ_SIZE):
            data += chunk
            if len(data) > self.max_genesis_size:
                raise PayloadTooLarge(f"Genesis part is larger than the limit of {self.max_genesis_size} bytes.")
        return bytes(data)

    async def _receive_and_commit(self, body: Body, expected: asyncio.Future[TailsHash], name: Name) -> TailsHash:
        """Stream to a temp file in storage, verify the hash, publish; the temp file never survives.

        `expected` may still be running (the ledger lookup); if it fails, receiving stops there.
        """
        with storage_errors_are_unavailable():
            if self.storage.free_bytes() < self.min_free_space:
                raise InsufficientStorage("Storage is nearly full: uploads are refused, downloads go on.")
            temp = self.storage.temp_file()
        receiver = TailsReceiver(temp, self.max_tails_size)
        try:
            with storage_errors_are_unavailable():
                await body.receive_into(receiver, expected, self.threads)
                actual = await receiver.finish()
                if actual != await expected:
                    raise BadRequest(HASH_MISMATCH)
                if not await self.publish(name, temp, actual):
                    raise Conflict(ALREADY_STORED)
                return actual
        finally:
            await receiver.close()


async def _next_chunk(read_chunk: ReadChunk, expected: asyncio.Future) -> bytes:
    """The next chunk, unless `expected` fails first: then its error, without waiting for bytes."""
    if not expected.done():
        reading = asyncio.ensure_future(read_chunk(READ_SIZE))
        await asyncio.wait((reading, expected), return_when=asyncio.FIRST_COMPLETED)
        if not (expected.done() and expected.exception()):
            return await reading
        reading.cancel()
        reading.add_done_callback(_consume_outcome)
    if expected.exception():
        raise expected.exception()
    return await read_chunk(READ_SIZE)


def _consume_outcome(future: asyncio.Future) -> None:
    """Mark a lookup's error as seen when the upload ended for another reason."""
    if not future.cancelled():
        future.exception()


def _raw_body(request: web.Request, clock: BodyClock) -> ReadChunk:
    """The body's chunks as the connection delivered them (no joining), b"" at its end."""

    async def read_chunk(_size: int) -> bytes:
        return await stream_chunk(request.content, clock.read)

    return read_chunk


@contextmanager
def storage_errors_are_unavailable() -> Iterator[None]:
    """A failing disk is not the client's fault: log it, answer 503 so the client retries."""
    try:
        yield
    except ConnectionError:  # the client went away; nothing to answer
        raise
    except OSError as exc:
        LOGGER.error("storage error during upload: %s", exc)
        raise from_os_error(exc, writing=True) from None

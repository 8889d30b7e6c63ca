"""Look up revocation registry definitions on Indy ledgers with indy-vdr, through a bounded pool cache."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import indy_vdr
from indy_vdr import VdrError, VdrErrorCode
from indy_vdr.bindings import pool_create, pool_submit_request
from indy_vdr.ledger import build_get_revoc_reg_def_request
from indy_vdr.pool import Pool

from .errors import BadRequest, LedgerUnavailable, NotFound
from .genesis import Genesis
from .ids import RevRegId, TailsHash

LOGGER = logging.getLogger(__name__)

# A read right after a write can reach a node that has not caught up yet: ask once more.
NOT_FOUND_RETRY_DELAY = 0.5


@dataclass
class _CachedPool:
    pool: Pool
    opened: float


class LedgerClient:
    """Resolves a registry's tailsHash on the ledger a genesis names, within one time budget."""

    def __init__(self, timeout: float = 8.0, max_pools: int = 16, pool_ttl: float = 3600.0) -> None:
        self.timeout = timeout
        self.max_pools = max_pools
        self.pool_ttl = pool_ttl
        self._pools: OrderedDict[str, _CachedPool] = OrderedDict()
        self._opening: dict[str, asyncio.Task[Pool]] = {}
        self._closing: set[asyncio.Future] = set()
        self._in_flight: dict[Pool, int] = {}  # requests indy-vdr has not finished, per pool
        self._retired: set[Pool] = set()  # out of the cache, closed once their requests finish
        self.on_pools_changed: Callable[[int], None] = lambda _count: None  # e.g. a metrics gauge

    @staticmethod
    def configure(timeout: float) -> None:
        """indy-vdr's timeouts are process-wide: keep them inside our own budget."""
        ack = max(1, min(5, int(timeout)))
        indy_vdr.set_config({"ack_timeout": ack, "reply_timeout": max(ack, int(timeout))})

    @property
    def cached_pools(self) -> int:
        """Open pools held for reuse."""
        return len(self._pools)

    def is_open(self, genesis: Genesis) -> bool:
        """A lookup on this ledger would start at once: its pool is open and not due for renewal."""
        cached = self._pools.get(genesis.key)
        return cached is not None and time.monotonic() - cached.opened < self.pool_ttl

    async def tails_hash(self, genesis: Genesis, rev_reg_id: RevRegId) -> TailsHash:
        """The ledger's tailsHash for the registry; 404 if absent, 503 if the ledger fails us."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._tails_hash(genesis, rev_reg_id)
        except TimeoutError:
            self._drop(genesis.key)
            raise LedgerUnavailable(f"Ledger did not answer within {self.timeout:g} s.") from None

    async def _tails_hash(self, genesis: Genesis, rev_reg_id: RevRegId) -> TailsHash:
        pool = await self._pool(genesis)
        definition = await self._read(genesis.key, pool, rev_reg_id)
        if definition is None:
            await asyncio.sleep(NOT_FOUND_RETRY_DELAY)
            definition = await self._read(genesis.key, pool, rev_reg_id)
        if definition is None:
            raise NotFound(f"Revocation registry {rev_reg_id} is not on the ledger.")
        return _tails_hash_of(definition, rev_reg_id)

    async def _read(self, key: str, pool: Pool, rev_reg_id: RevRegId) -> dict | None:
        """One GET_REVOC_REG_DEF; indy-vdr errors become client-facing ones."""
        try:
            request = build_get_revoc_reg_def_request(None, rev_reg_id.ledger_id)
        except VdrError as exc:
            raise BadRequest(f"Revocation registry ID is not valid: {rev_reg_id}.") from exc
        try:
            reply = await self._submit(pool, request)
        except VdrError as exc:
            self._drop(key)
            raise _ledger_error(exc) from None
        except (LookupError, TypeError, ValueError):  # the wrapper's own decoding of the reply
            self._drop(key)
            raise LedgerUnavailable("Ledger returned a malformed reply.") from None
        data = reply.get("data") if isinstance(reply, dict) else None
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise LedgerUnavailable("Ledger returned a malformed definition.") from None
        return data or None

    async def _submit(self, pool: Pool, request) -> dict:
        """Send one request; its pool stays open until indy-vdr has finished with it.

        Closing a pool waits for its requests in flight and meanwhile holds up requests on other
        pools (in a direct trial with a vanished ledger, a read on another pool waited 6 s). So a
        request whose lookup was cancelled is left to finish, and its pool is closed after it.
        """
        sent = pool_submit_request(pool.handle, request.handle)
        request.handle = None  # indy-vdr owns and frees it now
        self._in_flight[pool] = self._in_flight.get(pool, 0) + 1
        sent.add_done_callback(lambda done, used=pool: self._finished(used, done))
        return json.loads(await asyncio.shield(sent))["result"]

    def _finished(self, pool: Pool, done: asyncio.Future) -> None:
        if not done.cancelled():
            done.exception()  # seen here, whether or not a lookup still waits for it
        self._in_flight[pool] -= 1
        if not self._in_flight[pool]:
            del self._in_flight[pool]
            if pool in self._retired:
                self._retired.discard(pool)
                self._close_later(pool)

    async def _pool(self, genesis: Genesis) -> Pool:
        """A cached pool for this genesis, opening it once even under concurrent requests."""
        cached = self._pools.get(genesis.key)
        if cached and time.monotonic() - cached.opened < self.pool_ttl:
            self._pools.move_to_end(genesis.key)
            return cached.pool
        if cached:
            self._drop(genesis.key)
        task = self._opening.get(genesis.key)
        if task is None:
            task = asyncio.ensure_future(self._open(genesis))
            self._opening[genesis.key] = task
            task.add_done_callback(lambda t, k=genesis.key: self._opened(k, t))
        return await asyncio.shield(task)

    def _opened(self, key: str, task: asyncio.Task) -> None:
        """Forget the finished open; read its error so a caller that gave up leaves no warning."""
        self._opening.pop(key, None)
        if not task.cancelled():
            task.exception()

    async def _open(self, genesis: Genesis) -> Pool:
        """Create and refresh the pool ourselves, closing it on failure (see the genesis module)."""
        try:
            pool = Pool(pool_create({"transactions": genesis.text}))
        except VdrError as exc:
            raise BadRequest("Genesis transactions are not valid.") from exc
        try:
            async with asyncio.timeout(self.timeout):
                await pool.refresh()
        except BaseException as exc:
            self._close_later(pool)
            if isinstance(exc, VdrError):
                raise _ledger_error(exc) from None
            if isinstance(exc, TimeoutError):
                raise LedgerUnavailable(f"Ledger did not answer within {self.timeout:g} s.") from None
            raise
        self._pools[genesis.key] = _CachedPool(pool, time.monotonic())
        while len(self._pools) > self.max_pools:
            _, evicted = self._pools.popitem(last=False)
            self._close_later(evicted.pool)
        self.on_pools_changed(len(self._pools))
        LOGGER.info("opened ledger pool %s (%d cached)", genesis.key[:12], len(self._pools))
        return pool

    def _drop(self, key: str) -> None:
        """Forget a pool that failed, so the next request opens a fresh one."""
        cached = self._pools.pop(key, None)
        if cached:
            self._close_later(cached.pool)
            self.on_pools_changed(len(self._pools))

    def _close_later(self, pool: Pool) -> None:
        """Close on a worker thread, once no request of ours is in flight on the pool."""
        if self._in_flight.get(pool):
            self._retired.add(pool)
            return
        future = asyncio.get_running_loop().run_in_executor(None, pool.close)
        self._closing.add(future)
        future.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every pool (on shutdown)."""
        for key in list(self._pools):
            self._drop(key)
        for pool in self._retired:  # shutting down: no more waiting for their requests
            self._in_flight.pop(pool, None)
            self._close_later(pool)
        self._retired.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _ledger_error(exc: VdrError) -> Exception:
    """Map indy-vdr failures: unreachable or split ledgers are 503, a refused read is 400."""
    if exc.code == VdrErrorCode.POOL_REQUEST_FAILED:
        return BadRequest(f"Ledger refused the lookup: {_nack_reason(exc)}")
    if exc.code == VdrErrorCode.POOL_NO_CONSENSUS:
        return LedgerUnavailable("Ledger nodes did not reach consensus.")
    if exc.code == VdrErrorCode.POOL_TIMEOUT:
        return LedgerUnavailable("Ledger did not answer in time.")
    return LedgerUnavailable(f"Ledger lookup failed: {exc}")


def _nack_reason(exc: VdrError) -> str:
    """The nodes' own reason from a REQNACK/REJECT reply, when indy-vdr passes it on."""
    try:
        return str(json.loads(exc.extra)["reason"])
    except (TypeError, ValueError, KeyError):
        return str(exc)


def _tails_hash_of(definition: dict, rev_reg_id: RevRegId) -> TailsHash:
    """Extract and check the definition's tailsHash."""
    if not isinstance(definition, dict):
        raise LedgerUnavailable("Ledger returned a malformed definition.")
    value = definition.get("value")
    tails_hash = value.get("tailsHash") if isinstance(value, dict) else None
    if definition.get("id") not in (None, rev_reg_id.ledger_id) or not isinstance(tails_hash, str):
        raise LedgerUnavailable("Ledger returned a malformed definition.")
    try:
        return TailsHash.parse(tails_hash)
    except BadRequest:
        raise LedgerUnavailable("Ledger returned a malformed tailsHash.") from None

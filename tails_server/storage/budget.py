"""Time budgets for object storage: a hung store costs a request a few seconds and a 503, never minutes.

Each call is bounded by botocore's connect and read timeouts with one retry (CONNECT, READ,
ATTEMPTS) and, above those, by what is left of its request's budget: the time one request may
spend waiting on the store in all, whatever number of calls it makes (a download makes one or
two, an upload by id up to five). Background work (index upkeep) has no request budget, only
the per-call bound.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar

from aiohttp import web

CONNECT, READ, ATTEMPTS = 1.0, 2.0, 2  # botocore: seconds to connect, seconds per read, tries per call
CALL_LIMIT = ATTEMPTS * (CONNECT + READ) + 1.0  # a call's own bound, with a little for the retry's back-off
BODY_RATE = 4 << 20  # bytes/s a PUT body is allowed on top (an 8 MiB file: 2 s more)
CALLS = frozenset(("get_object", "put_object", "list_objects_v2", "delete_object", "delete_objects", "copy_object", "head_object"))
READY_LIMIT = 4.0  # /readyz's probe of the store: probes time out at 5 s


class Budget:
    """What one request has left to spend waiting on the store."""

    __slots__ = ("left",)

    def __init__(self, seconds: float) -> None:
        self.left = seconds


CURRENT: ContextVar[Budget | None] = ContextVar("store_budget", default=None)


def budget_middleware(seconds: float):
    """Give each request its budget (tasks it starts share it)."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        CURRENT.set(Budget(seconds))
        return await handler(request)

    return middleware


class Budgeted:
    """An S3 client whose every call ends within the call bound and the request's budget (TimeoutError after)."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if name not in CALLS:
            return method

        async def call(*args, **kwargs):
            budget = CURRENT.get()
            limit = CALL_LIMIT if budget is None else min(CALL_LIMIT, budget.left)
            if limit <= 0:
                raise TimeoutError("the request's time for object storage is spent")
            limit += kwargs.get("ContentLength", 0) / BODY_RATE
            started = time.monotonic()
            try:
                async with asyncio.timeout(limit):
                    return await method(*args, **kwargs)
            finally:
                if budget is not None:
                    budget.left -= time.monotonic() - started

        call.__name__ = name
        return call

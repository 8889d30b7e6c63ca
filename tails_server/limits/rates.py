"""Per-client request rates: writes and listings past their rate get 429 with Retry-After; downloads never do.

A token bucket per client address (IPv6: per /64) and kind, in a table of bounded size: the
clients seen least recently are forgotten first, which can only make a limit more lenient.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from ..errors import TooManyRequests
from .clients import ClientAddress, client_key

MAX_CLIENTS = 100_000  # buckets kept per kind (~200 bytes each)
_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*", re.I)
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
WRITES, LISTINGS = "writes", "listings"
WRITE_METHODS = frozenset(("PUT", "POST", "DELETE", "PATCH"))


def parse_rate(text: str) -> tuple[int, float]:
    """'60/min' to (60, 60.0); '0' turns a limit off: (0, 1.0)."""
    if text.strip() == "0":
        return 0, 1.0
    match = _RATE.fullmatch(text)
    if not match or int(match[1]) <= 0:
        raise ValueError(f"not a rate: {text!r} (try 60/min, 10/s or 0 for none)")
    return int(match[1]), _PERIODS[match[2][0].lower()]


class RateLimit:
    """`count` requests per `period` seconds per client, in bursts of up to `count`."""

    def __init__(self, count: int, period: float) -> None:
        self.count, self.per_second = count, count / period
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def wait(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0 if allowed, else the seconds until one would be."""
        now = time.monotonic()
        tokens, then = self._buckets.pop(key, (float(self.count), now))
        tokens = min(float(self.count), tokens + (now - then) * self.per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.per_second
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


def kind_of(request: web.Request) -> str | None:
    """Which limit a request counts against: writes, listings, or none (downloads, health, metrics)."""
    if request.method in WRITE_METHODS:
        return WRITES
    path = request.path
    if path.startswith("/match/") or path == "/index.json":
        return LISTINGS
    return None


def rate_limits(limits: dict[str, RateLimit], addresses: ClientAddress, on_limited: Callable[[str], None]):
    """Middleware: 429 with Retry-After for a client past its rate; nothing else is slowed."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        kind = kind_of(request)
        limit = limits.get(kind) if kind else None
        if limit is not None:
            wait = limit.wait(client_key(addresses.of(request)))
            if wait:
                on_limited(kind)
                raise TooManyRequests(f"Too many {kind} from your address (limit {limit.count}); retry later.", wait)
        return await handler(request)

    return middleware

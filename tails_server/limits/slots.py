"""Upload slots: how many uploads run at once, in all and per client address, each with its pace."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from ..errors import TooManyRequests, Unavailable
from .clients import ClientAddress, client_key, forget_one
from .pace import Pace

PACE = web.RequestKey("tails_upload_pace", Pace)


class UploadSlots:
    """Admits an upload if a slot is free and its client holds fewer than `per_client`; gives it a Pace."""

    def __init__(self, total: int, per_client: int, min_rate: int, deadline: float, addresses: ClientAddress) -> None:
        self.total, self.per_client = total, per_client
        self.min_rate, self.deadline = min_rate, deadline
        self.addresses = addresses
        self.used = 0
        self.by_client: Counter[str] = Counter()

    @contextmanager
    def take(self, request: web.Request) -> Iterator[Pace]:
        """Hold a slot while the upload runs; 503 when all are taken, 429 when this client has its share."""
        if self.used >= self.total:
            raise Unavailable(f"Too many uploads in progress (limit {self.total}); retry shortly.")
        address = self.addresses.of(request)
        key = client_key(address)
        if self.by_client[key] >= self.per_client:
            raise TooManyRequests(f"Too many uploads from your address at once (limit {self.per_client}); retry when one ends.", 5)
        self.used += 1
        self.by_client[key] += 1
        pace = request[PACE] = Pace(self.min_rate, self.deadline)
        try:
            yield pace
        finally:
            self.used -= 1
            forget_one(self.by_client, key)

"""Prometheus metrics at GET /metrics, summed over all worker processes.

With several workers, each writes its values to PROMETHEUS_MULTIPROC_DIR (set by the command line
before this module is imported) and a scrape on any worker reads all of them.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from . import logs
from .errors import LedgerUnavailable, TailsError
from .health import free_bytes_or_none

if TYPE_CHECKING:
    from .index import Catalog
    from .ledger import LedgerClient
    from .limits import Connections
    from .storage import Storage

REQUESTS = Counter("tails_http_requests_total", "HTTP requests by route, method and status.", ["route", "method", "status"])
LATENCY = Histogram("tails_http_request_duration_seconds", "Time to answer a request.", ["route", "method"])
BYTES_IN = Counter("tails_http_received_bytes_total", "Request body bytes received.")
BYTES_OUT = Counter("tails_http_sent_bytes_total", "Response body bytes sent.")
UPLOADS = Counter("tails_uploads_total", "Uploads by outcome.", ["outcome"])
LEDGER_LATENCY = Histogram("tails_ledger_lookup_duration_seconds", "Time for a registry lookup on the ledger.")
POOLS = Gauge("tails_ledger_pools_cached", "Open ledger pools kept for reuse.", multiprocess_mode="livesum")
FREE = Gauge("tails_storage_free_bytes", "Free space on the storage filesystem.", multiprocess_mode="max")
CUT_SHORT = Counter("tails_downloads_cut_short_total", "Downloads whose body did not all leave (client gone or cut off).")
RATE_LIMITED = Counter("tails_rate_limited_total", "Requests answered 429 for coming too often, by kind (writes, listings).", ["kind"])
CONNECTIONS = Gauge("tails_connections_open", "Client connections open.", multiprocess_mode="livesum")
REFUSED = Counter("tails_connections_refused_total", "Connections answered 503 and closed at once, by reason.", ["reason"])
# The index: workers share its file, so any worker's latest reading stands for all of them.
INDEX_NAMES = Gauge("tails_index_names", "Names in the metadata index, by kind (file or id).", ["kind"], multiprocess_mode="mostrecent")
INDEX_COMPLETE = Gauge("tails_index_complete", "1 once the index is built and listings are answered.", multiprocess_mode="mostrecent")
INDEX_SYNC = Gauge("tails_index_last_sync_timestamp_seconds", "When the index last read other instances' changes.",
                   multiprocess_mode="max")  # only the worker doing the background work sets it

ERROR = "tails_error"  # the error middleware leaves a request's TailsError here
OUTCOMES = ("stored", "duplicate", "hash_mismatch", "not_on_ledger", "ledger_error", "refused", "abandoned")


def upload_outcome(status: int, error: Exception | None) -> str:
    """Name what happened to an upload, from its status and the error that ended it."""
    if status == 200:
        return "stored"
    if status == 409:
        return "duplicate"
    if status == 404:
        return "not_on_ledger"
    if status == 499:  # the uploader hung up
        return "abandoned"
    if isinstance(error, LedgerUnavailable):
        return "ledger_error"
    if isinstance(error, TailsError) and error.reason == "tailsHash does not match hash of file.":
        return "hash_mismatch"
    return "refused"


_SERIES: dict[tuple[str, str, int], tuple] = {}  # labelled children, looked up once per label set
# A scrape flushes its own worker's counts first; another worker's may be this many seconds old.
FLUSH_INTERVAL = 0.2


class Tally:
    """Answered requests kept as they come, then counted and added to the metric values in bulk every
    FLUSH_INTERVAL.

    With several workers each inc() or observe() takes a lock, asks the kernel for the pid and
    writes a shared mapping: four of those per request took a 128 KiB download from 63 to 79 us of
    CPU here (bench/ab.py). Counting itself waits for the flush too: a request only appends its
    values. Bulk updates need a histogram's values, which prometheus_client has kept as _sum and
    _buckets since its first releases; if a release drops them, `bulk` turns off and each latency
    is observed one by one at the flush.
    """

    BOUNDS = Histogram.DEFAULT_BUCKETS  # LATENCY's buckets

    def __init__(self) -> None:
        self.pending: list[tuple] = []  # (route, method, status, received, sent, elapsed, cut_short) per request
        self.due: asyncio.TimerHandle | None = None
        self.bulk = list(LATENCY._upper_bounds) == list(self.BOUNDS)  # noqa: SLF001

    def add(self, answered: tuple) -> None:
        """Keep one request's values; the first since the last flush schedules the next one."""
        self.pending.append(answered)
        if self.due is None:
            try:
                self.due = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
            except RuntimeError:  # no event loop (a command, not the server): now
                self.flush()

    def flush(self) -> None:
        """Count what was kept and add it to the metric values (a scrape, the timer, a stopping worker)."""
        if self.due is not None:
            self.due.cancel()
            self.due = None
        pending, self.pending = self.pending, []
        by_labels: dict[tuple, list] = {}  # (route, method, status) -> [requests, latency...]
        received = sent = cut_short = 0
        for route, method, status, got, gave, elapsed, short in pending:
            counts = by_labels.get((route, method, status))
            if counts is None:
                counts = by_labels[route, method, status] = [0]
            counts[0] += 1
            if elapsed is not None:
                counts.append(elapsed)
            received += got or 0
            sent += gave or 0
            cut_short += short
        for labels, (count, *latencies) in by_labels.items():
            requests, latency = _series(*labels)
            requests.inc(count)
            self._observe(latency, latencies)
        for counter, amount in ((BYTES_IN, received), (BYTES_OUT, sent), (CUT_SHORT, cut_short)):
            if amount:
                counter.inc(amount)

    def _observe(self, histogram: Histogram, latencies: list[float]) -> None:
        if not self.bulk:
            for value in latencies:
                histogram.observe(value)
            return
        if not latencies:
            return
        histogram._sum.inc(sum(latencies))  # noqa: SLF001 - observe() in bulk: the same values it writes
        per_bucket = [0] * len(self.BOUNDS)
        for value in latencies:
            per_bucket[bisect.bisect_left(self.BOUNDS, value)] += 1  # the first bucket whose bound >= value
        for bucket, count in zip(histogram._buckets, per_bucket, strict=True):  # noqa: SLF001
            if count:
                bucket.inc(count)


TALLY = Tally()


def _series(route: str, method: str, status: int) -> tuple:
    """The labelled children of a request's counter and histogram."""
    key = (route, method, status)
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES[key] = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, method))
        TALLY.bulk = TALLY.bulk and hasattr(series[1], "_sum") and hasattr(series[1], "_buckets")
    return series


def observe(request: web.BaseRequest, status: int, sent: int | None, elapsed: float | None, cut_short: bool = False) -> None:
    """Record one request answered by aiohttp (called by the access logger, once per request)."""
    try:
        resource = request.match_info.route.resource
    except (AttributeError, AssertionError):  # a request aiohttp could not parse was never routed
        resource = None
    record(resource.canonical if resource is not None else "unmatched", request.method, status, request.content_length, sent, elapsed,
           cut_short)
    if request.method == "PUT":
        UPLOADS.labels(upload_outcome(status, request.get(ERROR))).inc()


def record(route: str, method: str, status: int, received: int | None, sent: int | None, elapsed: float | None,
           cut_short: bool = False) -> None:
    """Record one answered request by its route's canonical path (the front door calls this directly)."""
    TALLY.add((route, method, status, received, sent, elapsed, cut_short))


def flush() -> None:
    """Write counts still held in this process (before a scrape, and when a worker stops)."""
    TALLY.flush()


def install(app: web.Application, storage: Storage, ledger: LedgerClient, catalog: Catalog) -> None:
    """Serve /metrics; requests are counted by the access logger, pools by the ledger client."""
    logs.AccessLogger.observe = staticmethod(observe)
    ledger.on_pools_changed = POOLS.set

    async def metrics(_request: web.Request) -> web.Response:
        free = await asyncio.get_running_loop().run_in_executor(None, free_bytes_or_none, storage)
        await read_index(catalog)
        return scrape(free)

    app.router.add_get("/metrics", metrics)


def rate_limited(kind: str) -> None:
    RATE_LIMITED.labels(kind).inc()


def watch_connections(connections: Connections) -> None:
    """Count open and refused connections."""
    connections.on_open = CONNECTIONS.inc
    connections.on_close = CONNECTIONS.dec
    connections.on_refused = lambda reason: REFUSED.labels(reason).inc()


async def read_index(catalog: Catalog) -> None:
    """Set the index gauges from its counters (O(1)); an unreadable index leaves them as they were."""
    try:
        counts = await catalog.counts()
    except Exception:  # noqa: BLE001 - /status reports why; a scrape must still answer
        return
    INDEX_NAMES.labels("file").set(counts["files"])
    INDEX_NAMES.labels("id").set(counts["ids"])
    INDEX_COMPLETE.set(1 if counts["complete"] else 0)
    if catalog.progress.last_sync is not None:
        INDEX_SYNC.set(catalog.progress.last_sync)


def scrape(storage_free: int | None) -> web.Response:
    """The exposition text, from every worker when running several."""
    flush()
    if storage_free is not None:
        FREE.set(storage_free)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


for _outcome in OUTCOMES:  # every outcome is visible from the start, at zero
    UPLOADS.labels(_outcome)
for _kind in ("writes", "listings"):
    RATE_LIMITED.labels(_kind)
for _reason in ("too_many_connections", "too_many_from_client", "out_of_descriptors"):
    REFUSED.labels(_reason)

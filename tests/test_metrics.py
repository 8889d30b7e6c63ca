"""GET /metrics: scraped and parsed; counts are right with one worker and summed over two."""

from __future__ import annotations

import asyncio

from ledger_double import DISAGREE
from prometheus_client.parser import text_string_to_metric_families
from support import id_upload, random_tails

OCTET = {"Content-Type": "application/octet-stream", "Connection": "close"}


async def scrape(http, proc) -> dict:
    async with http.get(proc.url + "/metrics", headers={"Connection": "close"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def settled(http, proc, check) -> dict:
    """Scrape until `check(samples)` holds: a request is counted just after its response is sent."""
    for _ in range(50):  # bounded: 5 s
        samples = await scrape(http, proc)
        if check(samples):
            return samples
        await asyncio.sleep(0.1)
    return samples


async def test_upload_outcomes_requests_and_bytes(new_server, http, ledger, issuer):
    proc = new_server()
    data, h = random_tails(100)
    for _ in range(2):  # stored, then duplicate
        async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTET) as resp:
            assert resp.status in (200, 409)
    _, other = random_tails(1)
    async with http.put(f"{proc.url}/hash/{other}", data=data, headers=OCTET) as resp:
        assert resp.status == 400  # hash mismatch
    missing = issuer.registry(5)
    async with http.put(proc.url + missing.path, data=id_upload(ledger.genesis_text, missing.tails)) as resp:
        assert resp.status == 404  # not on the ledger
    made = issuer.registry(5)
    ledger.publish(made.definition)
    ledger.set_modes(DISAGREE)
    async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert resp.status == 503  # ledger error
    ledger.set_modes("ok")
    async with http.put(proc.url + made.path, data=b"x", headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 400  # refused
    async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert resp.status == 200  # stored, and its pool stays open
    for _ in range(3):
        async with http.get(f"{proc.url}/hash/{h}") as resp:
            assert await resp.read() == data

    samples = await settled(http, proc, lambda s: value(s, "tails_http_requests_total", route="/hash/{tails_hash}", method="GET", status="200") >= 3)
    for outcome, expected in (("stored", 2), ("duplicate", 1), ("hash_mismatch", 1), ("not_on_ledger", 1), ("ledger_error", 1), ("refused", 1)):
        assert value(samples, "tails_uploads_total", outcome=outcome) == expected, outcome
    assert value(samples, "tails_http_requests_total", route="/hash/{tails_hash}", method="GET", status="200") == 3
    assert value(samples, "tails_http_requests_total", route="/hash/{tails_hash}", method="PUT", status="409") == 1
    assert value(samples, "tails_http_sent_bytes_total") >= 3 * len(data)
    assert value(samples, "tails_http_received_bytes_total") >= 3 * len(data)
    assert value(samples, "tails_ledger_lookup_duration_seconds_count") == 3
    assert value(samples, "tails_ledger_pools_cached") >= 1
    assert value(samples, "tails_storage_free_bytes") > 0
    assert value(samples, "tails_index_names", kind="file") == 2  # the hash upload and the id's file
    assert value(samples, "tails_index_names", kind="id") == 1
    assert value(samples, "tails_index_complete") == 1


async def test_counts_are_summed_over_workers(new_server, http):
    proc = new_server("--workers", "2")
    data, h = random_tails(10)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTET) as resp:
        assert resp.status == 200
    for _ in range(20):  # new connections: SO_REUSEPORT spreads them over both workers
        async with http.get(f"{proc.url}/hash/{h}", headers={"Connection": "close"}) as resp:
            assert resp.status == 200
    await settled(http, proc, lambda s: value(s, "tails_http_requests_total", route="/hash/{tails_hash}", method="GET", status="200") >= 20)
    for _ in range(4):  # whichever worker answers the scrape, it reports the sum
        samples = await scrape(http, proc)
        assert value(samples, "tails_http_requests_total", route="/hash/{tails_hash}", method="GET", status="200") == 20
        assert value(samples, "tails_uploads_total", outcome="stored") == 1
        assert value(samples, "tails_index_names", kind="file") == 1  # the same index file, read by either


async def test_request_latencies_and_bytes_add_up_over_workers_and_both_paths(new_server, http):
    """Counts are kept in each worker and added in bulk: the histogram must still agree with itself."""
    proc = new_server("--workers", "2")
    data, h = random_tails(10)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTET) as resp:
        assert resp.status == 200
    for _ in range(12):  # the front door answers whole-file GETs, aiohttp answers ranges
        async with http.get(f"{proc.url}/hash/{h}", headers={"Connection": "close"}) as resp:
            assert await resp.read() == data
        async with http.get(f"{proc.url}/hash/{h}", headers={"Connection": "close", "Range": "bytes=0-9"}) as resp:
            assert resp.status == 206 and await resp.read() == data[:10]
    route = {"route": "/hash/{tails_hash}", "method": "GET"}
    samples = await settled(http, proc, lambda s: value(s, "tails_http_request_duration_seconds_count", **route) >= 24)
    assert value(samples, "tails_http_requests_total", status="200", **route) == 12
    assert value(samples, "tails_http_requests_total", status="206", **route) == 12
    assert value(samples, "tails_http_request_duration_seconds_count", **route) == 24
    assert value(samples, "tails_http_request_duration_seconds_bucket", le="+Inf", **route) == 24
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                     if name == "tails_http_request_duration_seconds_bucket" and dict(labels)["route"] == route["route"]
                     and dict(labels)["method"] == "GET")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert value(samples, "tails_http_request_duration_seconds_sum", **route) > 0
    # the downloads, the PUT's answer, and the scrapes' own answers before this one
    assert value(samples, "tails_http_sent_bytes_total") >= 12 * len(data) + 12 * 10 + len(h)


def test_the_tally_writes_the_same_values_in_bulk_and_one_by_one():
    """Kept requests reach the metric values alike whether histograms are written in bulk or (a
    prometheus_client without their internals) one observation at a time."""
    from prometheus_client import REGISTRY

    from tails_server import metrics

    answered = [("/test/{tally}", "GET", 200, None, 100, 0.003, False), ("/test/{tally}", "GET", 200, None, 50, 0.2, True),
                ("/test/{tally}", "PUT", 413, 7, None, 0.04, False), ("/test/{tally}", "GET", 200, None, 25, None, False)]
    names = [("tails_http_requests_total", {"route": "/test/{tally}", "method": "GET", "status": "200"}),
             ("tails_http_requests_total", {"route": "/test/{tally}", "method": "PUT", "status": "413"}),
             ("tails_http_request_duration_seconds_sum", {"route": "/test/{tally}", "method": "GET"}),
             ("tails_http_request_duration_seconds_count", {"route": "/test/{tally}", "method": "GET"}),
             ("tails_http_request_duration_seconds_bucket", {"route": "/test/{tally}", "method": "GET", "le": "0.005"}),
             ("tails_http_request_duration_seconds_bucket", {"route": "/test/{tally}", "method": "GET", "le": "0.25"}),
             ("tails_http_request_duration_seconds_bucket", {"route": "/test/{tally}", "method": "PUT", "le": "0.05"}),
             ("tails_http_received_bytes_total", {}), ("tails_http_sent_bytes_total", {}),
             ("tails_downloads_cut_short_total", {})]

    def read() -> list[float]:
        return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in names]

    deltas = []
    for bulk in (True, False):
        tally = metrics.Tally()
        tally.bulk = bulk
        before = read()
        for values in answered:
            tally.add(values)  # no event loop here: each is written at once
        tally.pending.extend(answered)
        tally.flush()  # and the same four again, kept and written in one flush
        deltas.append([round(after - was, 9) for after, was in zip(read(), before, strict=True)])
    expected = [6, 2, 2 * 0.203, 4, 2, 4, 2, 14, 350, 2]  # a latency of None counts the request only
    assert deltas[0] == deltas[1] == [round(v, 9) for v in expected]

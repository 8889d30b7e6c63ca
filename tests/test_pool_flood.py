"""A flood of distinct genesis files: the pool cache stays bounded in pools, threads and sockets."""

from __future__ import annotations

import psutil
from ledger_double import LedgerDouble
from support import id_upload

CACHE = 4
LEDGERS = 12


async def test_distinct_genesis_flood_keeps_resources_bounded(new_server, http, issuer):
    proc = new_server("--pool-cache-size", str(CACHE))
    server = psutil.Process(proc.proc.pid)
    peaks = []
    for _ in range(LEDGERS):
        double = LedgerDouble().start()
        try:
            made = issuer.registry(5)
            double.publish(made.definition)
            async with http.put(proc.url + made.path, data=id_upload(double.genesis_text, made.tails)) as resp:
                assert resp.status == 200
        finally:
            double.stop()
        peaks.append((server.num_threads(), server.num_fds()))
        async with http.get(proc.url + "/status") as resp:
            assert (await resp.json())["ledger"]["cached_pools"] <= CACHE
    # Once the cache is full, every new ledger evicts (and closes) an old pool: no growth.
    threads, fds = zip(*peaks, strict=True)
    settled = slice(CACHE + 2, None)
    assert max(threads[settled]) - min(threads[settled]) <= 4, threads
    assert max(fds[settled]) - min(fds[settled]) <= 8, fds

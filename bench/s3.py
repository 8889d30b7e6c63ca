"""Downloads from S3 storage, through the local cache and without it, beside nginx serving the same files.

    python bench/s3.py [--runs 3]

Not one of the performance targets: it tells operators what keeping files in object storage
costs on downloads. Needs what bench/run.py needs; SeaweedFS comes from the test extras.
Every load is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import run as bench  # the same helpers: nginx, wrk, tails files, servers
from object_store import AWS_ENV, BUCKET, SeaweedFS  # noqa: E402, I001 - tests/ is on the path once run is imported

SIZES = (("128KiB", 128 * 1024, 16), ("4MiB", 4 * bench.MIB, 64))


async def one_run(workdir: Path, seconds: int) -> dict:
    store = SeaweedFS(workdir / "seaweedfs").start()
    root = workdir / "nginx-root"
    (root / "hash").mkdir(parents=True)
    files = {}
    for name, size, _ in SIZES:
        data, h = bench.tails_file(size)
        (root / "hash" / h).write_bytes(data)
        files[name] = (data, h)
    nginx = bench.start_nginx(root, workdir)
    results: dict = {}
    try:
        for cache in ("1GiB", "0"):
            spool = workdir / f"spool-{cache}"
            server = bench.start_tails_server(
                spool, 2, workdir / f"s3-{cache}.log", "--storage", f"s3://{BUCKET}/bench", "--s3-endpoint-url",
                store.endpoint, "--s3-cache-size", cache, "--log-level", "WARNING", env=AWS_ENV,
            )
            try:
                for data, h in files.values():
                    assert await bench.raw_put(server.port, f"/hash/{h}", [data], len(data)) in (200, 409)
                    urllib.request.urlopen(f"http://127.0.0.1:{server.port}/hash/{h}", timeout=30).read()
                    deadline = time.monotonic() + 30  # the first GET fills the cache in the background
                    while cache != "0" and not (spool / ".cache" / h).exists() and time.monotonic() < deadline:
                        time.sleep(0.05)
                for name, _, conns in SIZES:
                    url = f"http://127.0.0.1:{server.port}/hash/{files[name][1]}"
                    results[f"{name} cache {cache}"] = bench.wrk(url, conns, seconds)
            finally:
                server.stop()
        for name, _, conns in SIZES:
            results[f"{name} nginx"] = bench.wrk(f"http://127.0.0.1:{nginx.port}/hash/{files[name][1]}", conns, seconds)
    finally:
        nginx.stop()
        store.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tails-bench-s3-") as tmp:
            print(f"run {number + 1}/{args.runs} ...", flush=True)
            runs.append(asyncio.run(one_run(Path(tmp), args.seconds)))
    median = {key: {k: statistics.median(r[key][k] for r in runs) for k in ("req_s", "mb_s", "p50_ms", "p99_ms")} for key in runs[0]}
    print(f"\nMedians of {args.runs} run(s), S3 = SeaweedFS on loopback, tails-server --workers 2:\n")
    print("| GET | cached copies (`--s3-cache-size 1GiB`) | streamed from S3 (`--s3-cache-size 0`) | nginx, local files |")
    print("|---|---|---|---|")
    for name, _, conns in SIZES:
        cells = [median[f"{name} {kind}"] for kind in ("cache 1GiB", "cache 0", "nginx")]
        print(f"| {name}, {conns} clients | " + " | ".join(f"{c['req_s']:.0f} req/s, {c['mb_s']:.0f} MB/s, p99 {c['p99_ms']:.1f} ms" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

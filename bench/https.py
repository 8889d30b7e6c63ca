"""HTTPS downloads: tails-server's own TLS (--tls-cert/--tls-key) beside nginx with the same certificate.

    python bench/https.py [--runs 3] [--seconds 8]

Both serve the same files from the same directory with two processes (nginx worker_processes 2,
tails-server --workers 2), loaded by wrk in short alternating rounds (64 clients for 4 MiB, 16 for
128 KiB; keep-alive, so handshakes are a small share). Needs what bench/run.py needs. Every load
is bounded in time. Writes bench/results/https-latest.json.

Targets (issue: Performance II): HTTPS GET 4 MiB >= 0.9x nginx, HTTPS GET 128 KiB >= 0.8x nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

import run as bench  # the same helpers: nginx, wrk, tails files, servers
import trustme

SIZES = (("4MiB", 4 * bench.MIB, 64, "mb_s", 0.9), ("128KiB", 128 * 1024, 16, "req_s", 0.8))


async def one_run(workdir: Path, seconds: int) -> dict:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    chain, key = workdir / "chain.pem", workdir / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    storage = workdir / "storage"
    setup = bench.start_tails_server(storage, 1, workdir / "setup.log", "--log-level", "WARNING")
    files = {}
    try:
        for name, size, *_ in SIZES:
            data, h = bench.tails_file(size)
            assert await bench.raw_put(setup.port, f"/hash/{h}", [data], len(data)) in (200, 409)
            files[name] = h
    finally:
        setup.stop()
    nginx = bench.start_nginx(storage, workdir, tls=(chain, key))
    server = bench.start_tails_server(storage, 2, workdir / "https.log", "--tls-cert", str(chain), "--tls-key", str(key))
    results = {}
    try:
        for name, _, conns, unit, _ in SIZES:
            side = bench.wrk_side_by_side(
                {"tails-server": f"https://127.0.0.1:{server.port}/hash/{files[name]}",
                 "nginx": f"https://127.0.0.1:{nginx.port}/hash/{files[name]}"},
                conns, seconds,
            )
            results[name] = {**side, "ratio": side["tails-server"][unit] / side["nginx"][unit]}
    finally:
        server.stop()
        nginx.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tails-bench-https-") as tmp:
            print(f"run {number + 1}/{args.runs} ...", flush=True)
            runs.append(asyncio.run(one_run(Path(tmp), args.seconds)))
    print(f"\nMedians of {args.runs} run(s), each ratio with its runs; both servers with two processes:\n")
    print("| measure | result | runs | target | met |\n|---|---|---|---|---|")
    met = True
    for name, _, conns, unit, target in SIZES:
        ratios = [r[name]["ratio"] for r in runs]
        ratio = statistics.median(ratios)
        ours, theirs = (statistics.median(r[name][who][unit] for r in runs) for who in ("tails-server", "nginx"))
        label = "MB/s" if unit == "mb_s" else "req/s"
        print(f"| HTTPS GET {name}, {conns} clients | {ours:.0f} {label} vs nginx {theirs:.0f} = {ratio:.2f}x | "
              f"{', '.join(f'{r:.2f}' for r in ratios)} | >= {target}x | {'yes' if ratio >= target else 'NO'} |")
        met = met and ratio >= target
    out = bench.HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "https-latest.json").write_text(json.dumps({"runs": runs}, indent=1))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark tails-server against nginx (HTTP and HTTPS), hashlib, a lean upload receiver and this machine's
durable-write ceiling (uploads' disk work without the network), on loopback, side by side.

    python bench/run.py [--runs 3] [--quick]
    python bench/run.py --ledger-only --genesis POOL_GENESIS_FILE   # PUT /{id} on a real ledger too

Needs nginx and wrk on PATH (Debian: apt-get install nginx-light wrk) and tails-server
installed with its test extras (for the ledger double). Every load is bounded in time or count.
Prints medians over the runs and the ratio of each target; writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import base58

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import MANY_CLIENTS  # noqa: E402 - the benchmark's clients stand for many issuers on one address
from uploads import Ceiling, tails_file, upload_files, uploads_side_by_side  # noqa: E402

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Proc:
    """A server process we start, measure and stop."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict | None = None) -> None:
        self.port = port
        self.proc = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        wait_port(port)

    def pids(self) -> list[int]:
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        children = [int(p) for p in kids.read_text().split()] if kids.exists() else []
        return [self.proc.pid, *children]

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Sum over the process and its children (a supervisor and its workers)."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_tails_server(storage: Path, workers: int, log: Path, *extra: str, env: dict | None = None) -> Proc:
    port = free_port()
    args = [sys.executable, "-m", "tails_server", "--port", str(port), "--storage-path", str(storage), "--workers", str(workers),
            *MANY_CLIENTS, *extra]
    return Proc(args, port, log, env)


def start_nginx(root: Path, workdir: Path, tls: tuple[Path, Path] | None = None) -> Proc:
    """nginx serving `root` with two worker processes; over HTTPS with tls = (certificate chain, key).

    It logs every request, as tails-server does by default, and in the cheapest way nginx offers:
    lines buffered and written once a second or per 64 KiB, as tails-server buffers its own.
    """
    port = free_port()
    # TLS 1.3 as tails-server speaks it (nginx 1.22's default protocols stop at TLS 1.2).
    listen = f"127.0.0.1:{port}" + (
        f" ssl; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3" if tls else ""
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log {workdir}/nginx-access.log combined buffer=64k flush=1s;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  server {{ listen {listen}; root {root}; }}
}}
"""
    )
    for path in (root, *root.parents):  # nginx workers drop root: let them reach the files
        if path == Path(tempfile.gettempdir()):
            break
        path.chmod(path.stat().st_mode | 0o755)
    return Proc([shutil.which("nginx") or "nginx", "-c", str(conf)], port, workdir / "nginx.log")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
_BYTES = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def wrk(url: str, connections: int, seconds: int, headers: dict | None = None) -> dict:
    """req/s, MB/s, p50 and p99 latency (ms) from wrk --latency."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    req = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    amount, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    lat = {p: float(v) * _UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)}
    if len(lat) < 2:  # seen once in a long run; keep the evidence
        print(f"warning: no latency percentiles from wrk for {url}:\n{out}", file=sys.stderr)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors[1]} failed responses")
    return {"req_s": req, "mb_s": float(amount) * _BYTES[unit] / 1e6, "p50_ms": lat.get("50"), "p99_ms": lat.get("99")}


def wrk_side_by_side(urls: dict[str, str], connections: int, seconds: int, headers: dict | None = None, rounds: int = 4) -> dict:
    """The same load on each server in turn, in short alternating rounds after a warm-up.

    A VM's speed drifts by 10-20% within minutes; alternating keeps that drift from favouring
    whichever server runs in the quieter minute. Rates are averaged over the rounds, latency
    percentiles are their medians.
    """
    for url in urls.values():
        wrk(url, connections, 1, headers)
    per_round: dict[str, list[dict]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            per_round[name].append(wrk(url, connections, max(1, seconds // rounds), headers))
    return {
        name: {
            "req_s": statistics.mean(r["req_s"] for r in results), "mb_s": statistics.mean(r["mb_s"] for r in results),
            "p50_ms": _median_of_known(r["p50_ms"] for r in results), "p99_ms": _median_of_known(r["p99_ms"] for r in results),
        }
        for name, results in per_round.items()
    }


def _median_of_known(values) -> float | None:
    """The median of the rounds whose wrk output had the percentile (None if none had it)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def sha256_mb_s(seconds: float = 2.0) -> float:
    """This machine's single-thread sha256 over 4 MiB buffers."""
    block = os.urandom(4 * MIB)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        hashlib.sha256(block).digest()
        done += len(block)
    return done / (time.perf_counter() - start) / 1e6


async def raw_put(port: int, path: str, body_parts, length: int, content_type: str = "application/octet-stream") -> int:
    """One PUT over a fresh connection, the body streamed from an iterable of byte chunks."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    for part in body_parts:
        writer.write(part)
        await writer.drain()
    response = await asyncio.wait_for(reader.read(), 600)
    writer.close()
    return int(response.split(b" ", 2)[1])


def start_lean_receiver(root: Path, processes: int, log: Path, *options: str) -> Proc:
    port = free_port()
    return Proc([sys.executable, str(HERE / "lean_receiver.py"), str(port), str(root), str(processes), *options], port, log)


_BIG_BLOCKS: dict[str, bytes] = {}


def big_upload_body(size: int, seed: str | None = None) -> tuple:
    """A tails-format body of `size` bytes made of one repeated 1 MiB block, and its hash.

    With `seed` (a hash returned earlier) the same body is produced again without rehashing.
    """
    records = (size - 2) // 128
    length = 2 + records * 128
    if seed is None:
        block = os.urandom(MIB)
        sha = hashlib.sha256(b"\x00\x02")
        remaining = length - 2
        while remaining:
            piece = block[: min(MIB, remaining)]
            sha.update(piece)
            remaining -= len(piece)
        seed = base58.b58encode(sha.digest()).decode()
        _BIG_BLOCKS[seed] = block
    block = _BIG_BLOCKS[seed]

    def parts():
        yield b"\x00\x02"
        left = length - 2
        while left:
            piece = block[: min(MIB, left)]
            left -= len(piece)
            yield piece

    return parts(), seed, length


async def upload_while_measuring(server: Proc, storage: Path, size: int, small_url: str, seconds: int) -> dict:
    """Upload one big file again and again for `seconds` while wrk measures a small GET; sample RSS.

    The stored copy is deleted between rounds so the same body (hash precomputed) can be sent
    again; every round is a full upload through the whole pipeline.
    """
    _, h, length = big_upload_body(size)
    rss_before = server.rss_kib()
    peak = rss_before
    loop = asyncio.get_running_loop()
    latency = loop.run_in_executor(None, wrk, small_url, 4, seconds)
    rounds = 0

    async def sample_rss() -> None:
        nonlocal peak
        while not latency.done():
            peak = max(peak, server.rss_kib())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample_rss())
    while not latency.done() and rounds < 100:  # bounded
        parts, same_hash, _ = big_upload_body(size, seed=h)
        status = await raw_put(server.port, f"/hash/{same_hash}", parts, length)
        if status != 200:
            raise RuntimeError(f"big upload answered {status}")
        (storage / "hash" / same_hash).unlink()
        rounds += 1
    result = await latency
    await sampler
    if result["p99_ms"] is None:
        raise RuntimeError("wrk printed no latency distribution for the GETs during the upload")
    return {"rounds": rounds, "rss_before_mib": rss_before / 1024, "rss_peak_mib": peak / 1024,
            "get_p99_ms": result["p99_ms"], "get_p50_ms": result["p50_ms"]}


async def ledger_overhead(workdir: Path, count: int, genesis_file: Path | None = None) -> dict:
    """Median PUT /{id} (warm pool) minus median PUT /hash, vs one ledger read from this process.

    On the 4-node ledger double (fast: no state proofs), or on a real ledger given by its genesis
    (registries are written there first with the steward, as the real-ledger tests do).
    """
    import indy_vdr
    from ledger_double import LedgerDouble
    from registries import Issuer, LedgerWriter

    workdir.mkdir(parents=True, exist_ok=True)
    os.sync()  # the big uploads before this leave gigabytes to write back, which slows every fsync
    time.sleep(2)
    double = None
    if genesis_file is None:
        double = LedgerDouble().start()
        genesis_text = double.genesis_text
        issuer = Issuer("000000000000000000000000Issuer01", workdir).define_cred_def(20)
        registries = [issuer.registry(5) for _ in range(count + 1)]
        for made in registries:
            double.publish(made.definition)
        pool = await indy_vdr.open_pool(transactions=genesis_text)
    else:
        genesis_text = genesis_file.read_text()
        pool = await indy_vdr.open_pool(transactions=genesis_text)
        writer = LedgerWriter(pool, workdir)
        issuer = await writer.issuer()
        registries = [await writer.registry(issuer, 5) for _ in range(count + 1)]
    server = start_tails_server(workdir / "ledger-store", 1, workdir / "ledger-server.log", "--log-level", "WARNING")
    try:
        by_id, by_hash = await _put_id_and_hash(server.port, genesis_text, registries)
        reads = []
        for made in registries[:count]:
            start = time.perf_counter()
            await pool.submit_request(indy_vdr.ledger.build_get_revoc_reg_def_request(None, made.id))
            reads.append(time.perf_counter() - start)
    finally:
        pool.close()
        server.stop()
        if double is not None:
            double.stop()
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    return {"put_id_ms": ms(by_id), "put_hash_ms": ms(by_hash), "overhead_ms": ms(by_id) - ms(by_hash), "ledger_read_ms": ms(reads)}


async def _put_id_and_hash(port: int, genesis_text: str, registries: list) -> tuple[list, list]:
    """Upload each registry by id and a same-sized file by hash, alternately, one at a time."""
    from support import encode_multipart

    by_id, by_hash = [], []
    for i, made in enumerate(registries):
        # The same client for both routes: one write of a prepared multipart body.
        body, ctype = encode_multipart([("genesis", genesis_text.encode()), ("tails", made.tails)])
        start = time.perf_counter()
        assert await raw_put(port, made.path, [body], len(body), ctype) == 200
        if i:  # the first one opens the pool
            by_id.append(time.perf_counter() - start)
        data, h = tails_file(len(made.tails))
        body, ctype = encode_multipart([("tails", data)])
        start = time.perf_counter()
        assert await raw_put(port, f"/hash/{h}", [body], len(body), ctype) == 200
        by_hash.append(time.perf_counter() - start)
    return by_id, by_hash


async def one_run(workdir: Path, quick: bool, genesis_file: Path | None, ledger_only: bool = False) -> dict:
    if ledger_only:
        return await ledger_rows(workdir, quick, genesis_file)
    seconds = 3 if quick else 8
    storage = workdir / "storage"
    results: dict = {}
    setup = start_tails_server(storage, 1, workdir / "setup.log", "--max-tails-size", "2GiB", "--log-level", "WARNING")
    files = {}
    for name, size in (("4MiB", 4 * MIB), ("128KiB", 128 * 1024)):
        data, h = tails_file(size)
        assert await raw_put(setup.port, f"/hash/{h}", [data], len(data)) in (200, 409)
        files[name] = h
    setup.stop()

    nginx = start_nginx(storage, workdir)
    try:
        for workers in (2,):
            server = start_tails_server(storage, workers, workdir / f"get-{workers}.log")
            try:
                for name, conns in (("4MiB", 64), ("128KiB", 16)):
                    for gzip in (False, True) if name == "4MiB" else (False,):
                        headers = {"Accept-Encoding": "gzip, deflate"} if gzip else None
                        key = f"GET {name} c{conns}" + (" gzip" if gzip else "") + f" w{workers}"
                        results[key] = wrk_side_by_side(
                            {"tails-server": f"http://127.0.0.1:{server.port}/hash/{files[name]}",
                             "nginx": f"http://127.0.0.1:{nginx.port}/hash/{files[name]}"},
                            conns, seconds, headers,
                        )
            finally:
                server.stop()
    finally:
        nginx.stop()
    import https as tls_bench  # here: it imports this module for its helpers

    (workdir / "https").mkdir()
    for name, side in (await tls_bench.one_run(workdir / "https", seconds)).items():
        results[f"HTTPS GET {name}"] = side  # its ratio is set by one_run

    to_upload = upload_files(workdir / "uploads", 64, 4 * MIB)
    server = start_tails_server(storage, 2, workdir / "put.log", "--log-level", "WARNING")
    lean = start_lean_receiver(workdir / "lean", 2, workdir / "lean.log")
    leanest = start_lean_receiver(workdir / "leanest", 2, workdir / "leanest.log", "--splice")
    try:
        sha = sha256_mb_s()
        servers = {"tails-server": (server.port, storage), "lean receiver": (lean.port, workdir / "lean"),
                   "leanest receiver": (leanest.port, workdir / "leanest"), "ceiling": Ceiling(workdir / "ceiling")}
        uploads = {
            form: await uploads_side_by_side(servers, to_upload, seconds, multipart=form == "multipart")
            for form in ("raw", "multipart")
        }
        sha = statistics.mean((sha, sha256_mb_s()))
        for form, throughput in uploads.items():
            results[f"PUT /hash 4MiB c16 w2 {form}"] = {**throughput, "sha256_mb_s": sha}
    finally:
        server.stop()
        lean.stop()
        leanest.stop()

    for size in ((256 * MIB,) if quick else (256 * MIB, 1024 * MIB)):
        server = start_tails_server(storage, 1, workdir / "big.log", "--max-tails-size", "2GiB", "--log-level", "WARNING")
        try:
            small_url = f"http://127.0.0.1:{server.port}/hash/{files['128KiB']}"
            results[f"PUT {size // MIB}MiB while GET"] = await upload_while_measuring(server, storage, size, small_url, seconds)
        finally:
            server.stop()
    return {**results, **await ledger_rows(workdir, quick, genesis_file)}


async def ledger_rows(workdir: Path, quick: bool, genesis_file: Path | None) -> dict:
    results = {"PUT /{id} vs /hash, warm pool": await ledger_overhead(workdir / "double", 10 if quick else 30)}
    if genesis_file is not None:
        results["PUT /{id} vs /hash, warm pool, real ledger"] = await ledger_overhead(workdir / "real", 5 if quick else 15, genesis_file)
    return results


def add_ratios(run: dict) -> dict:
    """Each target's ratio within one run (its servers measured side by side), before medians."""
    for key, value in run.items():
        if key.startswith("GET "):
            unit = "mb_s" if "4MiB" in key else "req_s"
            value["ratio"] = value["tails-server"][unit] / value["nginx"][unit]
        elif key.startswith("PUT /hash"):
            value["ratio"] = value["tails-server"]["mb_s"] / value["sha256_mb_s"]
            value["lean_ratio"] = value["lean receiver"]["mb_s"] / value["sha256_mb_s"]
            value["ceiling_ratio"] = value["tails-server"]["mb_s"] / value["ceiling"]["mb_s"]
            value["leanest_ceiling_ratio"] = value["leanest receiver"]["mb_s"] / value["ceiling"]["mb_s"]
        elif key.startswith("PUT /{id}"):
            value["ratio"] = value["overhead_ms"] / value["ledger_read_ms"]
    return run


def median_of(runs: list[dict]) -> dict:
    """The median of every number across runs, keeping the structure of one run."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def spread(runs: list[dict], key: str, field: str = "ratio") -> str:
    """Each run's value of one ratio, in run order: how far apart the runs behind a median are."""
    return "runs: " + ", ".join(f"{r[key][field]:.2f}" for r in runs)


def _server_rows(result: dict, runs: list[dict]) -> list[tuple[str, str, str, bool]]:
    """Rows for downloads and uploads against nginx, hashlib and the durable-write ceiling."""
    rows = []
    for gzip, target in (("", 1.0), (" gzip", 0.9)):
        key = f"GET 4MiB c64{gzip} w2"
        g = result[key]
        ratio = g["ratio"]
        rows.append((f"GET 4 MiB, 64 clients{gzip and ', Accept-Encoding: gzip'}",
                     f"{g['tails-server']['mb_s']:.0f} MB/s vs nginx {g['nginx']['mb_s']:.0f} MB/s = {ratio:.2f}x ({spread(runs, key)})",
                     f">= {target}x", ratio >= target))
    g = result["GET 128KiB c16 w2"]
    ratio = g["ratio"]
    rows.append(("GET 128 KiB, 16 clients", f"{g['tails-server']['req_s']:.0f} req/s vs nginx {g['nginx']['req_s']:.0f} = {ratio:.2f}x "
                 f"({spread(runs, 'GET 128KiB c16 w2')})", ">= 0.9x", ratio >= 0.9))
    for name, unit, target in (("4MiB", "mb_s", 0.9), ("128KiB", "req_s", 0.8)):
        key = f"HTTPS GET {name}"
        if key in result:
            h = result[key]
            label = "MB/s" if unit == "mb_s" else "req/s"
            rows.append((f"HTTPS GET {name.replace('MiB', ' MiB').replace('KiB', ' KiB')}, {64 if unit == 'mb_s' else 16} clients",
                         f"{h['tails-server'][unit]:.0f} {label} vs nginx {h['nginx'][unit]:.0f} = {h['ratio']:.2f}x ({spread(runs, key)})",
                         f">= {target}x", h["ratio"] >= target))
    for form, label in (("raw", "raw body (`curl -T`)"), ("multipart", "multipart, one part `tails` (ACA-Py)")):
        key = f"PUT /hash 4MiB c16 w2 {form}"
        p = result[key]
        ratio = p["ratio"]
        rows.append((f"PUT /hash 4 MiB, 16 clients, {label}",
                     f"{p['tails-server']['uploads_s']:.1f} uploads/s, {p['tails-server']['mb_s']:.0f} MB/s vs sha256 "
                     f"{p['sha256_mb_s']:.0f} MB/s = {ratio:.2f}x ({spread(runs, key)}; lean receiver: {p['lean_ratio']:.2f}x)",
                     ">= 0.4x", ratio >= 0.4))
        ceiling = p["ceiling_ratio"]
        rows.append((f"PUT /hash 4 MiB, 16 clients, {label}, vs the durable-write ceiling",
                     f"{p['tails-server']['mb_s']:.0f} MB/s vs {p['ceiling']['mb_s']:.0f} MB/s (threads: hash, write, "
                     f"fdatasync, link, fsync the directory; no network) = {ceiling:.2f}x ({spread(runs, key, 'ceiling_ratio')}); "
                     f"the leanest receiver (splice, no HTTP framework): {p['leanest_ceiling_ratio']:.2f}x "
                     f"({spread(runs, key, 'leanest_ceiling_ratio')})",
                     ">= 0.8x", ceiling >= 0.8))
    big = [k for k in result if k.startswith("PUT ") and k.endswith("while GET")]
    for key in big:
        b = result[key]
        rows.append((f"{key.split()[1]} upload: GET p99", f"{b['get_p99_ms']:.1f} ms (p50 {b['get_p50_ms']:.1f} ms)", "<= 50 ms", b["get_p99_ms"] <= 50))
        rows.append((f"{key.split()[1]} upload: peak RSS", f"{b['rss_peak_mib']:.1f} MiB (idle {b['rss_before_mib']:.1f})", "<= 64 MiB", b["rss_peak_mib"] <= 64))
    if len(big) == 2:
        small, large = (result[k]["rss_peak_mib"] for k in big)
        rows.append(("RSS flat as the upload grows", f"{small:.1f} -> {large:.1f} MiB", "< +5 MiB", large - small < 5))
    return rows


def report(result: dict, runs: list[dict]) -> list[tuple[str, str, str, bool]]:
    """(measure, value, target, met) rows."""
    rows = []
    if "GET 4MiB c64 w2" in result:  # not with --ledger-only
        rows += _server_rows(result, runs)
    for key, label in (("PUT /{id} vs /hash, warm pool, real ledger", "real 4-node indy-node ledger"),
                       ("PUT /{id} vs /hash, warm pool", "4-node ledger double")):
        if key in result:
            o = result[key]
            rows.append((f"PUT /{{id}} overhead, warm pool, {label}",
                         f"+{o['overhead_ms']:.2f} ms (one ledger read {o['ledger_read_ms']:.2f} ms) = {o['ratio']:.2f} reads "
                         f"({spread(runs, key)})",
                         "<= 1 read", o["ratio"] <= 1))
    print("\nRatios are medians of the per-run ratios; the other numbers are medians of their own.")
    print(f"\nMedians of {len(runs)} run(s) on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}):\n")
    print("| measure | result | target | met |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {'yes' if row[3] else 'NO'} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="shorter loads and no 1 GiB upload")
    parser.add_argument("--genesis", type=Path, default=os.environ.get("TAILS_TEST_GENESIS") or None,
                        help="also measure PUT /{id} on this real ledger (steward seed 000000000000000000000000Steward1)")
    parser.add_argument("--ledger-only", action="store_true",
                        help="only the PUT /{id} rows: a real pool's node processes use CPU even when idle, so measure them apart")
    args = parser.parse_args()
    for tool in () if args.ledger_only else ("nginx", "wrk"):
        if not shutil.which(tool):
            parser.error(f"{tool} is not on PATH (Debian: apt-get install nginx-light wrk)")
    runs = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tails-bench-") as tmp:
            print(f"run {number + 1}/{args.runs} ...", flush=True)
            runs.append(add_ratios(asyncio.run(one_run(Path(tmp), args.quick, args.genesis, args.ledger_only))))
    result = median_of(runs)
    rows = report(result, runs)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / ("ledger.json" if args.ledger_only else "latest.json")).write_text(json.dumps({"runs": runs, "median": result}, indent=1))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Listings and downloads over stores of growing size, each figure as a ratio to the smallest store.

    python bench/index.py [--sizes 1000,100000,1000000] [--s3 100000] [--rounds 3] [--requests 400] [--stores DIR]

For each size it generates a store in the documented layout (hash/<tailsHash> files of 130
bytes and id/<id> symlinks to them; on S3 hash/ and id/ objects, in a SeaweedFS whose data is
kept in --stores too), or reuses one from an earlier run. It starts a server on each without an
index and times it until /readyz says the index is built (cold). Then, in rounds (--rounds, three
by default) that take the stores in turn with one server running at a time, it restarts each with
its index in place (warm: timed), measures p50/p99 of one client's requests (each kind twice over
the same names, the second pass counted) and reads its RSS; each figure is the median of the
rounds. Needs tails-server with its test extras (SeaweedFS for --s3). Every load is bounded in
count. Writes bench/results/index-latest.json.

Targets (issue: a million registries): every median at 100,000 within 1.5x of the same at
1,000; at 1,000,000 /match (selective) and an /index.json page p99 <= 20 ms; RSS <= 100 MiB;
ready within 5 s with an index in place.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import base58
import run as bench  # helpers: servers, ports, RSS
from object_store import AWS_ENV, BUCKET, SeaweedFS  # noqa: E402, I001 - tests/ is on the path once run is imported

from tails_server.auth import hash_token

PER_CRED_DEF, CRED_DEFS_PER_ISSUER = 4, 10  # so a cred def's answer is the same size in every store
READY_BOUND = 1800.0  # s a cold build may take before the run gives up
ADMIN_TOKEN = "bench-admin-token-0123456789"  # deletes what the PUT measurements uploaded
ROUNDS = 3  # by default, measurements alternate between the stores this many times; each figure is the median of the rounds


def registry(i: int) -> tuple[bytes, str, str]:
    """The i-th registry: a 130-byte tails file, its hash, and a legacy registry id."""
    data = b"\x00\x02" + hashlib.sha512(i.to_bytes(8, "big")).digest() * 2
    tails_hash = base58.b58encode(hashlib.sha256(data).digest()).decode()
    cred_def_number = i // PER_CRED_DEF
    did = base58.b58encode(hashlib.sha256(b"issuer%d" % (cred_def_number // CRED_DEFS_PER_ISSUER)).digest()[:16]).decode()
    cred_def = f"{did}:3:CL:{1000 + cred_def_number}:default"
    return data, tails_hash, f"{did}:4:{cred_def}:CL_ACCUM:{i}"


def make_local(root: Path, count: int) -> None:
    """hash/ and id/ as the server lays them out; skipped if a complete one is there."""
    done = root / ".generated"
    if done.exists() and done.read_text() == str(count):
        _prune(root, count)
        return
    (root / "hash").mkdir(parents=True, exist_ok=True)
    (root / "id").mkdir(exist_ok=True)
    for i in range(count):
        data, tails_hash, rev_reg_id = registry(i)
        path = root / "hash" / tails_hash
        if not path.exists():
            path.write_bytes(data)
        link = root / "id" / quote(rev_reg_id, safe=":")
        if not link.is_symlink():
            os.symlink(f"../hash/{tails_hash}", link)
    done.write_text(str(count))


def _prune(root: Path, count: int) -> None:
    """Remove files an older run's PUT measurements left behind (runs now delete their uploads)."""
    stored = os.listdir(root / "hash")
    if len(stored) <= count:
        return
    generated = {registry(i)[1] for i in range(count)}
    for name in stored:
        if name not in generated:
            (root / "hash" / name).unlink()
    print(f"removed {len(stored) - count} files left by an earlier run from {root.name}", flush=True)


async def make_s3(endpoint: str, prefix: str, count: int) -> None:
    """The same store as objects (one conditional-free PUT each, 64 at a time)."""
    from aiobotocore.session import get_session
    from botocore.config import Config

    for key, value in AWS_ENV.items():
        os.environ.setdefault(key, value)
    session = get_session()
    config = Config(s3={"addressing_style": "path"}, max_pool_connections=64, retries={"max_attempts": 5})
    async with session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config) as client:
        gate = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            data, tails_hash, rev_reg_id = registry(i)
            async with gate:
                await client.put_object(Bucket=BUCKET, Key=f"{prefix}/hash/{tails_hash}", Body=data)
                await client.put_object(Bucket=BUCKET, Key=f"{prefix}/id/{quote(rev_reg_id, safe=':')}", Body=tails_hash.encode())

        for start in range(0, count, 5000):
            await asyncio.gather(*(put(i) for i in range(start, min(count, start + 5000))))


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


async def wait_ready(port: int, bound: float) -> float:
    """Seconds until /readyz answers a plain "ok" (the index is built)."""
    began = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - began < bound:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if await resp.text() == "ok":
                        return time.monotonic() - began
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"not ready within {bound} s")


async def wait_merged(port: int, bound: float = 600) -> None:
    """Until /status says the index's segments are merged (after a scan, in the background)."""
    began = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - began < bound:
            async with http.get(f"http://127.0.0.1:{port}/status") as resp:
                if not (await resp.json())["index"].get("merging"):
                    return
            await asyncio.sleep(0.1)


async def first_download(port: int, tails_hash: str) -> float:
    """Seconds until a stored file is served (downloads never wait for the index)."""
    began = time.monotonic()
    async with aiohttp.ClientSession() as http:
        for _ in range(2000):
            try:
                async with http.get(f"http://127.0.0.1:{port}/hash/{tails_hash}") as resp:
                    if resp.status == 200:
                        await resp.read()
                        return time.monotonic() - began
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise RuntimeError("no download")


async def filled(cache: Path, hashes: set[str], bound: float = 120) -> None:
    """Until the S3 backend's cache holds these files (it fills them in the background after a GET)."""
    began = time.monotonic()
    while time.monotonic() - began < bound:
        if all((cache / h).exists() for h in hashes):
            return
        await asyncio.sleep(0.1)
    print(f"the cache did not fill within {bound} s: GET rows may read high", flush=True)


async def measure(port: int, count: int, requests: int, round_number: int = 0, cache: Path | None = None) -> dict:
    """p50/p99 of one keep-alive client's requests, each kind `requests` times, on random stored names.

    Each kind's requests are made twice and the second pass is measured: the first brings the
    names' files and index pages into the OS cache (and the S3 backend's local cache), so the
    figures are the server's cost per request, not this VM's disk reads, whose share grows with
    a store that outgrows the cache. With S3 (`cache`: its cache directory) the measured GET pass
    waits until the first pass's files are in the cache, as they are at 1,000 after a round:
    otherwise the ratio would compare a cache hit with a store read.
    """
    rng = random.Random(count * 100 + round_number)
    picks = [registry(rng.randrange(count)) for _ in range(requests)]
    base = f"http://127.0.0.1:{port}"
    kinds = {
        "match selective (cred def)": lambda i: f"/match/{quote(picks[i][2].split(':4:')[1].split(':CL_ACCUM:')[0], safe='')}",
        "match selective (hash part)": lambda i: f"/match/{picks[i][1][5:17]}",
        "match broad (CL_ACCUM)": lambda i: "/match/CL_ACCUM",
        "match broad (one character)": lambda i: "/match/a",
        "index.json first page": lambda i: "/index.json?limit=100",
        "index.json middle page": lambda i: f"/index.json?limit=100&after={picks[i][1]}",
        "GET /hash": lambda i: f"/hash/{picks[i][1]}",
        "HEAD /hash": lambda i: f"/hash/{picks[i][1]}",  # after GET: the S3 cache holds the picks at every size
    }
    results = {}
    async with aiohttp.ClientSession() as http:
        for kind, path in kinds.items():
            method = "HEAD" if kind.startswith("HEAD") else "GET"
            for _pass in range(2):  # the same requests twice; the second pass is measured
                if _pass and cache is not None and kind.startswith("GET"):
                    await filled(cache, {pick[1] for pick in picks})
                samples = []
                for i in range(requests):
                    began = time.perf_counter()
                    async with http.request(method, base + path(i)) as resp:
                        await resp.read()
                        assert resp.status == 200, (kind, resp.status, await resp.text())
                    samples.append(time.perf_counter() - began)
            results[kind] = percentiles(samples)
        samples, uploaded = [], []
        for _ in range(requests):
            data = b"\x00\x02" + os.urandom(128)
            tails_hash = base58.b58encode(hashlib.sha256(data).digest()).decode()
            began = time.perf_counter()
            async with http.put(f"{base}/hash/{tails_hash}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
                assert resp.status == 200, await resp.text()
            samples.append(time.perf_counter() - began)
            uploaded.append(tails_hash)
        results["PUT /hash"] = percentiles(samples)
        for tails_hash in uploaded:  # the store stays as generated, for the next round and run
            async with http.delete(f"{base}/hash/{tails_hash}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
                assert resp.status == 200, await resp.text()
    return results


class Store:
    """One store under test: its server (running only while it is measured) and what it measured."""

    def __init__(self, label: str, count: int, storage: Path, extra: list[str], env: dict, workdir: Path) -> None:
        self.label, self.count, self.storage, self.env = label, count, storage, env
        self.index = workdir / f"index-{label.replace(' ', '-').replace(',', '')}.sqlite3"
        self.args = ["--index-path", str(self.index), "--log-level", "WARNING", "--allow-delete",
                     "--admin-key-hash", hash_token(ADMIN_TOKEN), *extra]
        self.log = workdir / f"server-{label.replace(' ', '-').replace(',', '')}.log"
        self.figures: dict = {"registries": count}
        self.rounds: list[dict] = []
        self.warm: list[dict] = []  # per round: time to ready with the index in place, RSS

    async def build_cold(self) -> None:
        """Start without an index: time the first download, the build and the merge; then stop."""
        for suffix in ("", "-wal", "-shm", ".lead"):
            Path(f"{self.index}{suffix}").unlink(missing_ok=True)
        began = time.monotonic()
        server = bench.start_tails_server(self.storage, 1, self.log, *self.args, env=self.env)
        try:
            await first_download(server.port, registry(0)[1])
            self.figures["first download s"] = time.monotonic() - began  # from the process's start
            await wait_ready(server.port, READY_BOUND)
            self.figures["ready cold s"] = time.monotonic() - began
            await wait_merged(server.port)
            self.figures["merged s"] = time.monotonic() - began
            self.figures["rss after build MiB"] = server.rss_kib() / 1024
        finally:
            server.stop()

    async def measure_round(self, requests: int) -> None:
        """Start with the index in place (timed), measure one round, read the RSS, stop."""
        began = time.monotonic()
        server = bench.start_tails_server(self.storage, 1, self.log, *self.args, env=self.env)
        try:
            await wait_ready(server.port, 60)
            warm = {"ready warm s": time.monotonic() - began, "rss warm MiB": server.rss_kib() / 1024}
            cache = self.storage / ".cache" if "--storage" in self.args else None
            self.rounds.append(await measure(server.port, self.count, requests, len(self.rounds), cache))
            warm["rss after requests MiB"] = server.rss_kib() / 1024
            warm["rss peak MiB"] = server.rss_kib("VmHWM") / 1024
            self.warm.append(warm)
        finally:
            server.stop()

    def summarize(self) -> None:
        """Each figure: the median over the rounds (RSS: the highest)."""
        self.figures["requests"] = {
            kind: {q: statistics.median(r[kind][q] for r in self.rounds) for q in ("p50_ms", "p99_ms")}
            for kind in self.rounds[0]
        }
        for key in ("ready warm s", "rss warm MiB"):
            self.figures[key] = statistics.median(w[key] for w in self.warm)
        for key in ("rss after requests MiB", "rss peak MiB"):
            self.figures[key] = max(w[key] for w in self.warm)
        self.figures["index MiB"] = self.index.stat().st_size / (1 << 20)
        self.figures["rounds"] = self.rounds


def table(results: dict[str, dict]) -> str:
    """A markdown table: each figure per store, with its ratio to the first (smallest) store."""
    labels = list(results)
    base = results[labels[0]]
    lines = ["| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]

    def row(name: str, get) -> None:
        cells = []
        for label in labels:
            value, ref = get(results[label]), get(base)
            ratio = f" ({value / ref:.2f}x)" if label != labels[0] and ref else ""
            cells.append(f"{value:.2f}{ratio}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    for kind in base["requests"]:
        row(f"{kind} p50 ms", lambda r, k=kind: r["requests"][k]["p50_ms"])
        row(f"{kind} p99 ms", lambda r, k=kind: r["requests"][k]["p99_ms"])
    for figure in ("ready cold s", "merged s", "ready warm s", "first download s", "rss after requests MiB", "rss peak MiB", "rss warm MiB", "index MiB"):
        if all(figure in r for r in results.values()):
            row(figure, lambda r, f=figure: r[f])
    return "\n".join(lines)


async def main_async(options) -> dict:
    """Cold builds first; then --rounds rounds that take the stores in turn, one server running at a
    time (started with its index in place, which times the warm start), so that a busy minute of
    the machine weighs on every store alike and no server's background work slows another's."""
    stores_dir = Path(options.stores)
    stores_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(options.workdir) if options.workdir else Path(tempfile.mkdtemp(prefix="tails-index-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stores: list[Store] = []
    seaweed = None
    try:
        for count in options.sizes:
            root = stores_dir / f"local-v2-{count}"
            began = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, make_local, root, count)
            print(f"local store of {count:,} ready in {time.monotonic() - began:.0f} s", flush=True)
            stores.append(Store(f"local {count:,}", count, root, [], {}, workdir))
        if options.s3:
            seaweed = SeaweedFS(stores_dir / "seaweedfs")  # kept: its stores are reused like local ones
            port = stores_dir / "seaweedfs" / ".s3-port"  # the same endpoint each run: indexes name it
            if port.exists():
                seaweed.ports["s3"] = int(port.read_text())
            seaweed.start()
            port.write_text(str(seaweed.ports["s3"]))
            for count in (min(options.sizes), options.s3):
                prefix = f"bench-v2-{count}"
                began = time.monotonic()
                done = stores_dir / "seaweedfs" / f".generated-{prefix}"
                if not done.exists():
                    await make_s3(seaweed.endpoint, prefix, count)
                    done.touch()
                print(f"S3 store of {count:,} ready in {time.monotonic() - began:.0f} s", flush=True)
                extra = ["--storage", f"s3://{BUCKET}/{prefix}", "--s3-endpoint-url", seaweed.endpoint]
                stores.append(Store(f"S3 {count:,}", count, workdir / f"spool-{count}", extra, AWS_ENV, workdir))
            await settle(seaweed)
        for store in stores:
            if options.reuse_index and store.index.exists():
                continue  # built by an earlier run in this --workdir: no cold figures this time
            await store.build_cold()
            print(f"{store.label}: built in {store.figures['ready cold s']:.1f} s", flush=True)
        for round_number in range(options.rounds):  # one server at a time, the stores in turn
            for store in stores:
                await store.measure_round(options.requests)
            print(f"round {round_number + 1} of {options.rounds} done", flush=True)
        for store in stores:
            store.summarize()
            print(json.dumps({store.label: {k: v for k, v in store.figures.items() if k != "rounds"}}), flush=True)
    finally:
        if seaweed is not None:
            seaweed.stop()
    return {store.label: store.figures for store in stores}


async def settle(seaweed: SeaweedFS, bound: float = 300) -> None:
    """Wait until the store's processes use under a tenth of a core (bulk loads leave it busy a while)."""
    began = time.monotonic()
    while time.monotonic() - began < bound:
        before = sum(cpu_seconds(p.pid) for p in seaweed.processes)
        await asyncio.sleep(5)
        if sum(cpu_seconds(p.pid) for p in seaweed.processes) - before < 0.5:
            return
    print("the S3 store stayed busy: its rows may read high", flush=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000", type=lambda t: [int(x) for x in t.split(",")])
    parser.add_argument("--s3", type=int, default=100000, help="registries in the S3 store (0: no S3 rows)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of measurements; each figure is their median")
    parser.add_argument("--requests", type=int, default=400, help="requests of each kind per store and round")
    parser.add_argument("--stores", default=str(Path(tempfile.gettempdir()) / "tails-index-stores"),
                        help="where generated stores are kept for later runs")
    parser.add_argument("--workdir", help="where indexes and logs go (default: a new temporary directory)")
    parser.add_argument("--reuse-index", action="store_true", help="skip the cold build of a store whose index is in --workdir")
    options = parser.parse_args()
    results = asyncio.run(main_async(options))
    local = {k: v for k, v in results.items() if k.startswith("local")}
    s3 = {k: v for k, v in results.items() if k.startswith("S3")}
    for part in (local, s3):
        if part:
            print(table(part))
            print()
    out = bench.HERE / "results" / "index-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"python": sys.version.split()[0], "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

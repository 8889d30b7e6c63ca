"""Downloads or uploads A/B: an earlier commit's tails-server beside this tree's, with a yardstick.

    python bench/ab.py --base HEAD~1 [--size 128] [--clients 16] [--rounds 6] [--seconds 3] [--tls]
    python bench/ab.py --base HEAD~1 --uploads raw|multipart [--rounds 6] [--seconds 3]

Both servers run `--workers 2` on the same files, nginx `worker_processes 2`; with --tls all three
serve HTTPS with the same certificate (tails-server's own --tls-cert/--tls-key). wrk loads each in
turn, in rounds whose order flips every round, so this VM's drift (10-20% within minutes) falls on
all three alike. Prints, per server, the median req/s, the median CPU time per request (user and
system, all its processes, from /proc), the load generator's CPU time per request beside it (on
loopback the client shares the cores: a change that moves work to it shows there), and the median
of its per-round ratios to nginx. A change
worth keeping moves the CPU per request by more than the rounds' spread, and by more than an A/A
run (`--base HEAD` with a clean tree) moves it: with 2 short rounds that was 62 against 69 us here. Every load is bounded in
time. Both run from source, ahead of whatever is installed (an editable install would otherwise
shadow the base): the base from `git archive`, the tree from this checkout, uncommitted changes
included.

With --uploads, 16 clients PUT /hash distinct 4 MiB tails files (as bench/run.py does) and the
yardstick is the durable-write ceiling: the same files hashed, written, fdatasync'ed and linked by
threads of this process, with no network. CPU per upload is in ms; the client's is this process's.
Then each server's CPU per upload by kind of thread, from the names the kernel has for them
(tails-receive, tails-index-wri, tails-io, ...; the main threads run the event loops).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import run as bench  # nginx, wrk, tails files, servers
from uploads import Ceiling, upload_files, upload_throughput

LAUNCHER = """import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # an editable install's finder
sys.path.insert(0, {tree!r})
import tails_server
assert tails_server.__file__.startswith({tree!r}), tails_server.__file__
sys.argv[0] = "tails_server"
runpy.run_module("tails_server", run_name="__main__", alter_sys=True)
"""


def own_seconds() -> float:
    """User and system CPU seconds of this process: the upload clients, or the ceiling's threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_seconds() -> float:
    """User and system CPU seconds of the finished load generators (wrk runs as our child, waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_ticks(proc: bench.Proc) -> int:
    """User and system clock ticks of a server and its workers."""
    total = 0
    for pid in proc.pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def ticks_by_thread(proc: bench.Proc) -> Counter[str]:
    """Clock ticks of a server's live threads by kind: the kernel's thread name without its number."""
    ticks: Counter[str] = Counter()
    for pid in proc.pids():
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:  # the thread ended meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()
            kind = "event loop" if task.name == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")].rstrip("0123456789_")
            ticks[kind] += int(fields[11]) + int(fields[12])
    return ticks


def start_from(tree: Path, name: str, workdir: Path, storage: Path, *extra: str) -> bench.Proc:
    """tails-server from the package directory in `tree`, whatever is installed."""
    launcher = workdir / f"launch_{name}.py"
    launcher.write_text(LAUNCHER.format(tree=str(tree)))
    port = bench.free_port()
    args = [sys.executable, str(launcher), "--port", str(port), "--storage-path", str(storage), "--workers", "2", *bench.MANY_CLIENTS, *extra]
    return bench.Proc(args, port, workdir / f"{name}.log")


def checkout(rev: str, workdir: Path) -> Path:
    """The tails_server package as it was at `rev`, in a directory of its own."""
    tree = workdir / "base"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "tails_server"], cwd=bench.HERE.parent, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def certificate(workdir: Path) -> tuple[Path, Path]:
    """A certificate chain and key for 127.0.0.1 from a throwaway authority (wrk does not verify it)."""
    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    chain, key = workdir / "chain.pem", workdir / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    return chain, key


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (git rev)")
    parser.add_argument("--size", type=int, default=128, help="file size in KiB")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3, help="per server per round")
    parser.add_argument("--tls", action="store_true", help="HTTPS, one certificate for all three servers")
    parser.add_argument("--uploads", choices=("raw", "multipart"), help="compare PUT /hash 4 MiB throughput instead")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tails-ab-"))
    if options.uploads:
        return await uploads_ab(options, workdir)
    storage = workdir / "storage"
    setup = bench.start_tails_server(storage, 1, workdir / "setup.log", "--log-level", "WARNING")
    try:
        data, tails_hash = bench.tails_file(options.size * 1024)
        assert await bench.raw_put(setup.port, f"/hash/{tails_hash}", [data], len(data)) == 200
    finally:
        setup.stop()
    tls, extra = None, ()
    if options.tls:
        tls, extra = certificate(workdir), ("--tls-cert", str(workdir / "chain.pem"), "--tls-key", str(workdir / "key.pem"))
    servers = {"base": start_from(checkout(options.base, workdir), "base", workdir, storage, *extra),
               "tree": start_from(bench.HERE.parent, "tree", workdir, storage, *extra),
               "nginx": bench.start_nginx(storage, workdir, tls=tls)}
    scheme = "https" if options.tls else "http"
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
    try:
        for proc in servers.values():
            bench.wrk(f"{scheme}://127.0.0.1:{proc.port}/hash/{tails_hash}", options.clients, 1)  # warm-up
        for number in range(options.rounds):
            order = list(servers.items())
            for name, proc in order if number % 2 == 0 else reversed(order):
                before, client_before = cpu_ticks(proc), client_seconds()
                load = bench.wrk(f"{scheme}://127.0.0.1:{proc.port}/hash/{tails_hash}", options.clients, options.seconds)
                ticks, client = cpu_ticks(proc) - before, client_seconds() - client_before
                requests = load["req_s"] * options.seconds
                results[name].append((load["req_s"], ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6, client / requests * 1e6))
    finally:
        for proc in servers.values():
            proc.stop()
    report(f"{'HTTPS ' if options.tls else ''}GET {options.size} KiB, {options.clients} clients, {options.rounds} rounds of {options.seconds} s (base: {options.base})",
           results, "nginx", ("req/s", "us CPU/request", "wrk"))
    return 0


def report(title: str, results: dict[str, list[tuple[float, float, float]]], yardstick: str, units: tuple[str, str, str]) -> None:
    """Per server: the median rate, CPU per request and its client's beside it, and the median ratio to the yardstick."""
    rate, cpu, client = units
    print(title)
    for name, rounds in results.items():
        ratios = [mine[0] / other[0] for mine, other in zip(rounds, results[yardstick], strict=True)]
        print(f"{name:7s} {statistics.median(r for r, _, _ in rounds):9.0f} {rate}  "
              f"{statistics.median(c for _, c, _ in rounds):7.2f} {cpu}  "
              f"({client} {statistics.median(w for _, _, w in rounds):6.2f})  "
              f"{statistics.median(ratios):.3f}x {yardstick} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")


async def uploads_ab(options: argparse.Namespace, workdir: Path) -> int:
    """Upload throughput and CPU per upload of both commits, in alternating rounds beside the durable-write ceiling."""
    files = upload_files(workdir / "uploads", 64, 4 << 20)
    quiet = ("--log-level", "WARNING")
    servers: dict[str, tuple[bench.Proc, Path] | Ceiling] = {
        "base": (start_from(checkout(options.base, workdir), "base", workdir, workdir / "base-store", *quiet), workdir / "base-store"),
        "tree": (start_from(bench.HERE.parent, "tree", workdir, workdir / "tree-store", *quiet), workdir / "tree-store"),
        "ceiling": Ceiling(workdir / "ceiling"),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
    by_thread: dict[str, Counter[str]] = {name: Counter() for name in servers}
    uploads: Counter[str] = Counter()
    try:
        for number in range(options.rounds):
            order = list(servers.items())
            for name, server in order if number % 2 == 0 else reversed(order):
                mine_before = own_seconds()
                if isinstance(server, Ceiling):  # its threads are this process: their CPU goes in the first column
                    load, ticks = await server.throughput(files, options.seconds), None
                else:
                    proc, store = server
                    before, threads_before = cpu_ticks(proc), ticks_by_thread(proc)
                    load = await upload_throughput(proc.port, files, 16, store, options.seconds, options.uploads == "multipart")
                    ticks = cpu_ticks(proc) - before
                    by_thread[name] += ticks_by_thread(proc) - threads_before
                count = load["uploads_s"] * load["seconds"]
                uploads[name] += count
                mine = own_seconds() - mine_before
                served = mine if ticks is None else ticks / os.sysconf("SC_CLK_TCK")
                results[name].append((load["mb_s"], served / count * 1e3, 0.0 if ticks is None else mine / count * 1e3))
    finally:
        for server in servers.values():
            if not isinstance(server, Ceiling):
                server[0].stop()
        shutil.rmtree(workdir, ignore_errors=True)  # 64 files of 4 MiB and three stores
    report(f"PUT /hash 4 MiB {options.uploads}, 16 clients, {options.rounds} rounds of {options.seconds} s (base: {options.base})",
           results, "ceiling", ("MB/s", "ms CPU/upload", "this process"))
    print("ms CPU per upload by thread, all rounds:")
    tick = 1e3 / os.sysconf("SC_CLK_TCK")
    for name, ticks in by_thread.items():
        if ticks:
            print(f"{name:7s} " + "  ".join(f"{kind} {n * tick / uploads[name]:.2f}" for kind, n in ticks.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

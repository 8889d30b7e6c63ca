"""Random POSIX I/O faults (libfiu) while uploads and downloads run: never a 500, never a wrong file.

The server starts under `fiu-run -x` with no fault enabled (enabling faults before start-up breaks
Python's imports); `fiu-ctrl` then makes open, read, write, sync, unlink, rename and directory
calls fail at random, leaving out the `*/reduce` points, which crash libfiu itself, and close().
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import pytest
from support import random_tails

OCTETS = {"Content-Type": "application/octet-stream"}
# Not close(): libfiu fails it without closing the descriptor, which no Linux kernel does (close()
# always releases it), so a connection whose close "failed" stayed open until the client gave up.
POINTS = (
    "posix/io/oc/open", "posix/io/rw/read", "posix/io/rw/write", "posix/io/rw/pread",
    "posix/io/rw/pwrite", "posix/io/rw/ftruncate", "posix/io/sync/fsync", "posix/io/sync/fdatasync",
    "posix/io/dir/unlink", "posix/io/dir/rename", "posix/io/dir/opendir", "posix/io/dir/readdir",
)
PROBABILITY = 0.03
SECONDS, MAX_REQUESTS = 15.0, 600  # the load is bounded both ways

pytestmark = pytest.mark.skipif(shutil.which("fiu-run") is None or shutil.which("fiu-ctrl") is None,
                                reason="libfiu's fiu-run/fiu-ctrl are not installed (Debian: fiu-utils)")


def faults(pid: int, on: bool) -> None:
    for point in POINTS:
        command = f"enable_random name={point},probability={PROBABILITY}" if on else f"disable name={point}"
        subprocess.run(["fiu-ctrl", "-c", command, str(pid)], check=True, timeout=10)


async def test_no_500_and_no_wrong_file_under_random_io_faults(new_server, tmp_path):
    proc = new_server("--idle-timeout", "5", "--read-timeout", "5", launcher=["fiu-run", "-x"])
    stored: dict[str, bytes] = {}
    for _ in range(5):  # files to download while faults happen
        data, h = random_tails(random.randint(1, 300))
        async with aiohttp.ClientSession() as http, http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
            assert resp.status == 200
        stored[h] = data
    statuses: Counter = Counter()
    accepted: dict[str, bytes] = {}
    wrong: list[str] = []
    faults(proc.proc.pid, True)
    try:
        deadline = time.monotonic() + SECONDS
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async def one(i: int) -> None:
                try:
                    if i % 3 == 0:
                        data, h = random_tails(random.randint(1, 2000))
                        async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
                            statuses[("PUT", resp.status)] += 1
                            if resp.status == 200:
                                accepted[h] = data
                    else:
                        h = random.choice(list(stored))
                        async with http.get(f"{proc.url}/hash/{h}") as resp:
                            body = await resp.read()
                            statuses[("GET", resp.status)] += 1
                            if resp.status == 200 and body != stored[h]:
                                wrong.append(h)
                except (TimeoutError, aiohttp.ClientError) as exc:  # a connection cut under a fault
                    statuses[("cut", type(exc).__name__)] += 1

            sent = 0
            while time.monotonic() < deadline and sent < MAX_REQUESTS:
                await asyncio.gather(*(one(sent + k) for k in range(6)))
                sent += 6
    finally:
        faults(proc.proc.pid, False)
    assert proc.proc.poll() is None, proc.log()[-3000:]
    assert not [k for k in statuses if k[1] == 500], (statuses, proc.log()[-5000:])
    assert not wrong, wrong
    assert statuses[("PUT", 200)] + statuses[("GET", 200)] > 0, statuses  # the faults left room for work
    assert statuses[("PUT", 503)] + statuses[("GET", 503)] > 0, statuses  # and they did happen
    async with aiohttp.ClientSession() as http:
        for h, data in accepted.items():  # every upload answered 200 is stored, exactly
            async with http.get(f"{proc.url}/hash/{h}") as resp:
                assert resp.status == 200 and await resp.read() == data, h
    proc.stop()
    check = subprocess.run([sys.executable, "-m", "tails_server", "verify", *proc.storage_args()],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr

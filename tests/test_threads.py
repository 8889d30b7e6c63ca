"""Worker threads carry their names into the kernel, where top -H, ps -L and profilers read them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from support import random_tails

from tails_server import threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread names from /proc")


def kernel_name(pid: int | str, tid: int | str) -> str:
    return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (a server with --workers forks them)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_pool_threads_are_named_for_the_kernel() -> None:
    pool = threads.pool(2, "tails-test")
    try:
        names = {pool.submit(lambda: (threading.current_thread().name, kernel_name("self", threading.get_native_id()))).result()
                 for _ in range(4)}
    finally:
        pool.shutdown(wait=True)
    for python_name, native_name in names:
        assert python_name.startswith("tails-test_")
        assert native_name == python_name[:15]


def test_a_long_name_is_cut_to_the_kernels_limit() -> None:
    pool = threads.pool(1, "tails-index-write")
    try:
        assert pool.submit(lambda: kernel_name("self", threading.get_native_id())).result() == "tails-index-wri"
    finally:
        pool.shutdown(wait=True)


async def test_a_running_server_shows_its_thread_roles(new_server, http) -> None:
    """After an upload that a receiving thread took in, a listing of the server's threads names each role."""
    proc = new_server()
    data, h = random_tails(20_000)  # ~2.5 MiB: more than arrives with the head, so a thread reads it
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
        assert await resp.text() == h
    names = {kernel_name(pid, task.name) for pid in process_tree(proc.proc.pid) for task in Path(f"/proc/{pid}/task").iterdir()}
    for role in ("tails-receive_0", "tails-index-wri", "tails-io_0"):
        assert role in names, f"no thread named {role} among {sorted(names)}"
    assert (proc.storage / "hash" / h).read_bytes() == data

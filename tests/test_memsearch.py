"""The GIL-free delimiter search finds exactly what mmap.find finds, in a real mapped file."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import given, settings

from tails_server import memsearch

NEEDLE = b"\r\n--" + b"0123456789abcdef" * 2


def mapped_file(path: Path, data: bytes | None, offset: int = 0):
    """`data` written to `path` (None: as it is) and mapped from `offset` to its end."""
    if data is not None:
        path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        return memsearch.map_region(fd, os.fstat(fd).st_size - offset, offset)
    finally:
        os.close(fd)  # the mapping outlives the descriptor, as mmap allows


def test_libc_memmem_is_used_here() -> None:
    """On Linux the search must not fall back to mmap.find (which holds the GIL)."""
    assert memsearch._MEMMEM is not None


@settings(max_examples=200, deadline=None)
@given(
    before=st.binary(max_size=300),
    after=st.binary(max_size=300),
    copies=st.integers(0, 3),
    start=st.integers(0, 400),
)
def test_same_answer_as_mmap_find(tmp_path_factory, before: bytes, after: bytes, copies: int, start: int) -> None:
    data = before + (NEEDLE + after) * copies + b"tail"
    with mapped_file(tmp_path_factory.mktemp("m") / "f", data) as mapped:
        assert memsearch.find(mapped, NEEDLE, start) == mapped.find(NEEDLE, start) == data.find(NEEDLE, start)
        assert memsearch.find(mapped, NEEDLE[:5], start) == data.find(NEEDLE[:5], start)


def test_without_memmem_mmap_find_answers(tmp_path: Path, monkeypatch) -> None:
    """Where libc has no memmem the module falls back on mmap.find: the same answers."""
    monkeypatch.setattr(memsearch, "_MEMMEM", None)
    data = b"x" * 5000 + NEEDLE + b"y" * 100 + NEEDLE
    with mapped_file(tmp_path / "f", data, offset=4096) as mapped:
        assert memsearch.find(mapped, NEEDLE) == 5000 - 4096
        assert memsearch.find(mapped, NEEDLE, 5000 - 4096 + 1) == data.find(NEEDLE, 5001) - 4096
        assert memsearch.find(mapped, NEEDLE, len(mapped) - 3) == -1


def test_first_of_many_in_a_large_region_at_an_offset(tmp_path: Path) -> None:
    """A region mapped from a page offset, with a partial delimiter at every page edge before the real one."""
    page = 4096
    body = bytearray(os.urandom(64 * page))
    for edge in range(page, len(body), page):
        body[edge - 10 : edge + 10] = NEEDLE[:20]  # the delimiter cut short: never a match
    where = 40 * page + 123
    body[where : where + len(NEEDLE)] = NEEDLE
    body[50 * page : 50 * page + len(NEEDLE)] = NEEDLE
    data = bytes(body)
    with mapped_file(tmp_path / "f", data, offset=8 * page) as mapped:
        assert memsearch.find(mapped, NEEDLE) == where - 8 * page
        assert memsearch.find(mapped, NEEDLE, where - 8 * page + 1) == 42 * page
        assert memsearch.find(mapped, NEEDLE, 42 * page + 1) == -1
        assert memsearch.find(mapped, NEEDLE, len(mapped)) == -1
    assert data[where : where + len(NEEDLE)] == NEEDLE and (tmp_path / "f").read_bytes() == data  # never written


def test_the_mapping_can_be_closed_after_a_search(tmp_path: Path) -> None:
    """The search gives its buffer export back: closing the mapping right after must not raise BufferError."""
    mapped = mapped_file(tmp_path / "f", b"x" * 100 + NEEDLE)
    assert memsearch.find(mapped, NEEDLE) == 100
    mapped.close()
    assert mapped.closed


def test_other_threads_run_during_a_search(tmp_path: Path) -> None:
    """The point of the module: another Python thread keeps running while a search scans.

    A counting thread runs beside four scans of 128 MiB. Only its counts between the moment a
    scan starts and the moment it returns are summed: with the GIL held through the scan (as
    mmap.find holds it) they come only from the GIL's hand-overs at the call's edges, a few
    thousand with a 0.1 ms switch interval, against millions while the GIL is free.
    """
    path = tmp_path / "f"
    with open(path, "wb") as file:
        file.truncate(128 << 20)  # a hole: zero pages, no disk
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    with mapped_file(path, None) as mapped:
        memsearch.find(mapped, NEEDLE)  # fault the pages in first: only the scan itself is watched
        counter = threading.Thread(target=count)
        counter.start()
        during = 0
        try:
            for _ in range(4):
                before = ticks
                found = memsearch.find(mapped, NEEDLE)
                during += ticks - before
                assert found == -1
        finally:
            stop.set()
            counter.join()
            sys.setswitchinterval(interval)
    assert during > 200_000, f"only {during} counts by another thread during four scans of 128 MiB"

"""Group commit of the index's small writes, on a real SQLite file: one transaction, each write undone alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tails_server.index import db
from tails_server.index.group import GroupCommit


@pytest.fixture
def index(tmp_path):
    path = tmp_path / "index.sqlite3"
    db.create(path, "test store")
    writer_thread = ThreadPoolExecutor(1)
    writer = db.Writer(path)
    yield path, writer_thread, writer
    writer_thread.submit(writer.close).result()
    writer_thread.shutdown()


def busy(writer_thread: ThreadPoolExecutor, writer: db.Writer, name: str) -> tuple[threading.Event, asyncio.Future]:
    """Keep the writer thread busy, after one write of its own, until the event is set."""
    go = threading.Event()

    def hold() -> None:
        writer.begin([name])
        go.wait(10)

    return go, asyncio.get_running_loop().run_in_executor(writer_thread, hold)


def pending_names(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM pending"))


def failing(writer: db.Writer) -> None:
    """A write that changes a row and then fails: its change must not be stored."""
    writer.begin(["half-done"])
    raise ValueError("this write fails")


async def test_writes_queued_together_share_one_commit_and_a_failure_is_undone_alone(index):
    path, writer_thread, writer = index
    group = GroupCommit(writer_thread, lambda: writer)
    commits = []
    real_grouped = writer.grouped

    def counted(writes):  # counts the transactions; the writes themselves run for real
        commits.append(len(writes))
        return real_grouped(writes)

    writer.grouped = counted
    go, blocker = busy(writer_thread, writer, "first")
    futures = [group.run(lambda w, n=n: w.begin([f"name-{n}"])) for n in range(5)]
    futures.insert(2, group.run(failing))
    go.set()
    await blocker
    outcomes = await asyncio.gather(*futures, return_exceptions=True)

    assert commits == [6]  # all queued while the writer was busy: one transaction
    assert isinstance(outcomes[2], ValueError)
    assert [o for i, o in enumerate(outcomes) if i != 2] == [None] * 5
    assert pending_names(path) == ["first", *(f"name-{n}" for n in range(5))]  # not "half-done"


async def test_a_write_submitted_between_groups_keeps_its_place(index):
    path, writer_thread, writer = index
    group = GroupCommit(writer_thread, lambda: writer)
    order = []
    loop = asyncio.get_running_loop()
    go, hold = busy(writer_thread, writer, "hold")
    early = group.run(lambda w: order.append("early"))
    group.close_group()  # as Catalog.write does before a write of its own
    direct = loop.run_in_executor(writer_thread, lambda: order.append("direct"))
    late = group.run(lambda w: order.append("late"))
    go.set()
    await asyncio.gather(hold, early, direct, late)
    assert order == ["early", "direct", "late"]


async def test_a_lost_transaction_fails_the_whole_group(index):
    path, writer_thread, writer = index
    group = GroupCommit(writer_thread, lambda: writer)

    def rolls_everything_back(w: db.Writer) -> None:
        w.conn.execute("ROLLBACK")  # as SQLite does itself on a full disk or an I/O error
        raise sqlite3.OperationalError("disk I/O error")

    go, hold = busy(writer_thread, writer, "hold")
    before = group.run(lambda w: w.begin(["before"]))
    lost = group.run(rolls_everything_back)
    after = group.run(lambda w: w.begin(["after"]))
    go.set()
    await hold
    outcomes = await asyncio.gather(before, lost, after, return_exceptions=True)
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    assert pending_names(path) == ["hold"]
    assert not writer.conn.in_transaction


async def test_no_connection_fails_the_group_instead_of_leaving_it_waiting(tmp_path):
    writer_thread = ThreadPoolExecutor(1)

    def unopenable() -> db.Writer:
        return db.Writer(tmp_path / "missing" / "index.sqlite3")  # its directory does not exist

    group = GroupCommit(writer_thread, unopenable)
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(group.run(lambda w: w.begin(["a"])), group.run(lambda w: w.begin(["b"])), return_exceptions=True), 10
        )
    finally:
        writer_thread.shutdown()
    assert [type(o) for o in outcomes] == [sqlite3.OperationalError] * 2

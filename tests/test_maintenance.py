"""`tails-server verify` finds a flipped byte; `tails-server import` migrates a reference storage directory."""

from __future__ import annotations

import os
import subprocess
import sys

from object_store import AWS_ENV
from support import free_port, id_upload, random_tails, tails_hash


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tails_server", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


async def test_verify_finds_a_flipped_byte_and_quarantines_it(backend, new_server, http, ledger, issuer):
    proc = new_server(backend=backend)
    made = issuer.registry(100)
    ledger.publish(made.definition)
    async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert resp.status == 200
    good, good_hash = random_tails(10)
    async with http.put(f"{proc.url}/hash/{good_hash}", data=good, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    env = proc.env
    assert run("verify", *proc.storage_args(), env=env).returncode == 0

    flipped = bytearray(made.tails)
    flipped[1000] ^= 0x01
    proc.view.overwrite(made.tails_hash, bytes(flipped))  # what disk rot would do
    result = run("verify", *proc.storage_args(), env=env)
    assert result.returncode == 1
    assert f"BAD hash/{made.tails_hash}: content does not match its hash" in result.stdout
    assert "1 verified" in result.stdout

    assert run("verify", *proc.storage_args(), "--quarantine", env=env).returncode == 1
    assert proc.view.quarantined(made.tails_hash) == bytes(flipped)
    assert proc.view.file_for_id(made.id) is None and proc.view.file(made.tails_hash) is None
    assert run("verify", *proc.storage_args(), env=env).returncode == 0
    async with http.get(proc.url + made.path) as resp:
        assert resp.status == 404  # never the corrupt bytes
    async with http.get(f"{proc.url}/hash/{good_hash}") as resp:
        assert await resp.read() == good


def test_verify_of_an_unreachable_store_says_why(tmp_path):
    result = run("verify", "--storage-path", str(tmp_path), "--storage", "s3://tails/x", "--s3-endpoint-url",
                 f"http://127.0.0.1:{free_port()}", env=AWS_ENV)
    assert result.returncode == 3 and "Object storage is unreachable" in result.stderr and "Traceback" not in result.stderr


async def test_import_a_reference_storage_directory(new_server, http, issuer, tmp_path):
    """Files named by raw registry id at the top, by hash under hash/, as the reference wrote them."""
    source = tmp_path / "reference"
    (source / "hash").mkdir(parents=True)
    by_id = issuer.registry(5, tag="imported tag")
    (source / by_id.id).write_bytes(by_id.tails)
    data, h = random_tails(20)
    (source / "hash" / h).write_bytes(data)
    _, wrong_name = random_tails(3)
    (source / "hash" / wrong_name).write_bytes(random_tails(3)[0])  # content under someone else's hash
    (source / f"{issuer.did}:4:{issuer.cred_def_id}:CL_ACCUM:broken").write_bytes(b"not a tails file")
    (source / "README.txt").write_text("not ours")
    storage = tmp_path / "storage"

    result = run("import", str(source), "--storage-path", str(storage))
    assert result.returncode == 1, result.stdout  # something was refused
    assert "2 imported, 1 skipped, 2 bad" in result.stdout
    assert f"BAD {wrong_name}: content does not match its hash" in result.stdout
    again = run("import", str(source), "--storage-path", str(storage))
    assert "0 imported, 3 skipped, 2 bad" in again.stdout  # idempotent

    proc = new_server(storage=storage)
    async with http.get(proc.url + by_id.path) as resp:
        assert resp.status == 200 and tails_hash(await resp.read()) == by_id.tails_hash
    async with http.get(f"{proc.url}/hash/{h}") as resp:
        assert await resp.read() == data
    async with http.get(f"{proc.url}/hash/{wrong_name}") as resp:
        assert resp.status == 404
    assert run("verify", "--storage-path", str(storage)).returncode == 0

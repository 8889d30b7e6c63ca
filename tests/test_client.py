"""`tails-server upload` and `download` round-trip real tails files through a real server."""

from __future__ import annotations

import asyncio
import sys

from support import random_tails, tails_hash


async def cli(*args: str, cwd=None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tails_server", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode().strip(), err.decode().strip()


async def test_round_trip_by_registry_id(server, ledger, issuer, tmp_path):
    made = issuer.registry(1000, tag="client tag")
    ledger.publish(made.definition)
    tails, genesis = tmp_path / "registry.tails", tmp_path / "genesis.txn"
    tails.write_bytes(made.tails)
    genesis.write_text(ledger.genesis_text)
    code, out, _ = await cli("upload", server.url, str(tails), "--rev-reg-id", made.id, "--genesis", str(genesis))
    assert (code, out) == (0, made.tails_hash)
    code, _, err = await cli("upload", server.url, str(tails), "--rev-reg-id", made.id, "--genesis", str(genesis))
    assert (code, err) == (0, "already stored")
    target = tmp_path / "got.tails"
    code, out, _ = await cli("download", server.url + made.path, "-o", str(target))
    assert (code, out) == (0, made.tails_hash)
    assert target.read_bytes() == made.tails


async def test_round_trip_by_hash_and_exit_codes(server, tmp_path):
    data, h = random_tails(300)
    (tmp_path / "file.tails").write_bytes(data)
    code, out, _ = await cli("upload", server.url, str(tmp_path / "file.tails"))
    assert (code, out) == (0, h)
    code, out, _ = await cli("download", f"{server.url}/hash/{h}", cwd=tmp_path)  # named by its hash
    assert (code, out) == (0, h) and (tmp_path / h).read_bytes() == data
    _, other = random_tails(1)
    code, _, err = await cli("download", f"{server.url}/hash/{h}", "--hash", other, "-o", str(tmp_path / "x"))
    assert code == 5 and "hash mismatch" in err and not (tmp_path / "x").exists()
    code, _, _ = await cli("download", f"{server.url}/hash/{other}", "-o", str(tmp_path / "y"))
    assert code == 3  # 404
    (tmp_path / "bad.tails").write_bytes(b"not tails")
    code, _, err = await cli("upload", server.url, str(tmp_path / "bad.tails"))
    assert code == 3 and '"00 02"' in err
    code, _, _ = await cli("download", "http://127.0.0.1:9/hash/" + h, "-o", str(tmp_path / "z"))
    assert code == 4  # nothing listens there
    assert tails_hash(data) == h

"""100 uploads killed with SIGKILL at random points: nothing partial or unverified is ever published."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from urllib.parse import unquote

import base58
from support import SlowUpload, encode_multipart, random_tails

ROUNDS, UPLOADS_PER_ROUND = 20, 5  # 100 uploads in all


def audit(storage, ledger) -> tuple[int, int]:
    """Every published name holds exactly the bytes it promises; return (files, ids)."""
    files = 0
    for path in (storage / "hash").iterdir():
        assert base58.b58encode(hashlib.sha256(path.read_bytes()).digest()).decode() == path.name, path
        files += 1
    ids = 0
    for link in (storage / "id").iterdir():
        target = os.readlink(link)
        tails_hash = target.rsplit("/", 1)[1]
        assert ledger.definitions[unquote(link.name)]["value"]["tailsHash"] == tails_hash
        if (storage / "hash" / tails_hash).exists():  # a dangling link counts as absent (see the storage module)
            assert base58.b58encode(hashlib.sha256(link.read_bytes()).digest()).decode() == tails_hash
            ids += 1
    return files, ids


async def test_sigkill_storm(new_server, ledger, issuer, tmp_path):
    rng = random.Random(20261121)
    storage = tmp_path / "storage"
    killed = 0
    for _ in range(ROUNDS):
        proc = new_server(storage=storage)
        uploads = []
        for _ in range(UPLOADS_PER_ROUND):
            if rng.random() < 0.5:
                data, h = random_tails(rng.choice([8, 2048, 16384]))
                uploads.append(SlowUpload(proc.port, f"/hash/{h}", data, "application/octet-stream"))
            else:
                made = issuer.registry(rng.choice([5, 100, 1000]))
                ledger.publish(made.definition)
                body, ctype = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", made.tails)])
                uploads.append(SlowUpload(proc.port, made.path, body, ctype))
        await asyncio.gather(*(u.send_first_half() for u in uploads))
        finishing = [asyncio.ensure_future(u.finish()) for u in uploads if rng.random() < 0.6]
        await asyncio.sleep(rng.uniform(0, 0.15))  # some finish, some are mid-write, some mid-publish
        proc.kill()
        killed += len(uploads)
        for upload in uploads:
            upload.abandon()
        await asyncio.gather(*finishing, return_exceptions=True)
        audit(storage, ledger)
    survivor = new_server(storage=storage)
    assert list((storage / ".tmp").iterdir()) == []  # no orphan survives a restart
    files, ids = audit(storage, ledger)
    assert killed == ROUNDS * UPLOADS_PER_ROUND
    assert files > 0 and ids > 0  # some uploads did complete, so the audit saw real files
    survivor.stop()

"""Against a real Indy ledger: write registries with the steward, then upload and download them.

Runs only when TAILS_TEST_GENESIS names the ledger's genesis file (steward seed
000000000000000000000000Steward1, as on von-network).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import indy_vdr
import pytest
from registries import LedgerWriter
from support import id_upload, tails_hash

GENESIS = os.environ.get("TAILS_TEST_GENESIS")

pytestmark = [
    pytest.mark.real_ledger,
    pytest.mark.skipif(not GENESIS, reason="set TAILS_TEST_GENESIS to a real ledger's genesis file to run"),
]


@pytest.fixture(scope="module")
def genesis_text() -> str:
    return Path(GENESIS).read_text()


@pytest.fixture
async def writer(tmp_path):
    pool = await indy_vdr.open_pool(transactions_path=GENESIS)
    yield LedgerWriter(pool, tmp_path)
    pool.close()


@pytest.fixture
def real_server(new_server):
    return new_server("--ledger-timeout", "8")


async def test_registry_on_real_ledger_round_trips(http, real_server, writer, genesis_text):
    issuer = await writer.issuer()
    small, large = await writer.registry(issuer, 5), await writer.registry(issuer, 1000)
    for made in (small, large):
        async with http.put(real_server.url + made.path, data=id_upload(genesis_text, made.tails)) as resp:
            assert (resp.status, await resp.text()) == (200, made.tails_hash)
        async with http.get(real_server.url + made.path) as resp:
            body = await resp.read()
            assert resp.status == 200 and body == made.tails and tails_hash(body) == made.tails_hash
        async with http.put(real_server.url + made.path, data=id_upload(genesis_text, made.tails)) as resp:
            assert resp.status == 409
    async with http.get(f"{real_server.url}/match/{issuer.cred_def_id}") as resp:
        assert sorted(await resp.json()) == sorted([small.id, large.id])


async def test_wrong_file_and_unknown_id_on_real_ledger(http, real_server, writer, genesis_text):
    issuer = await writer.issuer()
    made = await writer.registry(issuer, 5)
    other = issuer.create_new(5, "other")  # never written to the ledger
    async with http.put(real_server.url + made.path, data=id_upload(genesis_text, other.tails)) as resp:
        assert (resp.status, await resp.text()) == (400, "tailsHash does not match hash of file.")
    async with http.put(real_server.url + other.path, data=id_upload(genesis_text, other.tails)) as resp:
        assert resp.status == 404
    assert json.loads(genesis_text.splitlines()[0])["txn"]["type"] == "0"

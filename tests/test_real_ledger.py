"""Against a real Indy ledger: write registries with the steward, then upload and download them.

Runs only when TAILS_TEST_GENESIS names the ledger's genesis file (steward seed
000000000000000000000000Steward1, as on von-network).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import indy_vdr
import nacl.signing
import pytest
from indy_vdr import ledger as requests
from registries import Issuer, Registry, did_and_verkey
from support import id_upload, tails_hash

GENESIS = os.environ.get("TAILS_TEST_GENESIS")
STEWARD_SEED = "000000000000000000000000Steward1"

pytestmark = [
    pytest.mark.real_ledger,
    pytest.mark.skipif(not GENESIS, reason="set TAILS_TEST_GENESIS to a real ledger's genesis file to run"),
]


def signed(request, seed: str):
    request.set_signature(nacl.signing.SigningKey(seed.encode()).sign(request.signature_input).signature)
    return request


class LedgerWriter:
    """Puts an issuer, a schema, a revocable cred def and registries on the real ledger."""

    def __init__(self, pool: indy_vdr.Pool, tails_dir: Path) -> None:
        self.pool = pool
        self.tails_dir = tails_dir

    async def issuer(self) -> Issuer:
        steward_did, _ = did_and_verkey(STEWARD_SEED)
        seed = uuid.uuid4().hex[:32]
        did, verkey = did_and_verkey(seed)
        await self.pool.submit_request(signed(requests.build_nym_request(steward_did, did, verkey=verkey, role="ENDORSER"), STEWARD_SEED))
        issuer = Issuer(seed, self.tails_dir, schema_version=f"{int(time.time())}.{uuid.uuid4().int % 1000}")
        reply = await self.pool.submit_request(signed(requests.build_schema_request(did, issuer.schema_for_ledger()), seed))
        issuer.define_cred_def(reply["txnMetadata"]["seqNo"])
        await self.pool.submit_request(signed(requests.build_cred_def_request(did, issuer.cred_def), seed))
        return issuer

    async def registry(self, issuer: Issuer, max_cred_num: int) -> Registry:
        made = issuer.create_new(max_cred_num, uuid.uuid4().hex[:12])
        await self.pool.submit_request(signed(requests.build_revoc_reg_def_request(issuer.did, made.definition), issuer.seed))
        for _ in range(50):  # a fresh write may not be on every node yet: poll, bounded
            reply = await self.pool.submit_request(requests.build_get_revoc_reg_def_request(None, made.id))
            if reply.get("data"):
                return made
            await asyncio.sleep(0.2)
        raise AssertionError("the registry never became readable")


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

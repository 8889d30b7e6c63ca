"""Real revocation registries and tails files made with anoncreds."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import base58
import nacl.signing
from anoncreds import CredentialDefinition, RevocationRegistryDefinition, Schema
from indy_vdr import ledger as requests
from indy_vdr.pool import Pool


def did_and_verkey(seed: str) -> tuple[str, str]:
    """An Indy DID is base58 of the first 16 bytes of the Ed25519 verkey."""
    verkey = bytes(nacl.signing.SigningKey(seed.encode()).verify_key)
    return base58.b58encode(verkey[:16]).decode(), base58.b58encode(verkey).decode()


@dataclass(frozen=True)
class Registry:
    """A registry definition in ledger form, with its tails file."""

    definition: dict
    tails: bytes

    @property
    def id(self) -> str:
        return self.definition["id"]

    @property
    def tails_hash(self) -> str:
        return self.definition["value"]["tailsHash"]

    @property
    def path(self) -> str:
        """The URL path ACA-Py uses: quote(id, safe=':')."""
        return "/" + quote(self.id, safe=":")


class Issuer:
    """One issuer DID and revocable credential definition; registries of any size on demand."""

    def __init__(self, seed: str, tails_dir: Path, schema_version: str = "1.0") -> None:
        self.seed = seed
        self.did, self.verkey = did_and_verkey(seed)
        self.tails_dir = tails_dir
        self.schema_id = f"{self.did}:2:tails-test:{schema_version}"
        self.schema = Schema.create("tails-test", schema_version, self.did, ["name", "age"])
        self._made: dict[int, Registry] = {}

    def schema_for_ledger(self) -> dict:
        return {**self.schema.to_dict(), "ver": "1.0", "id": self.schema_id}

    def define_cred_def(self, schema_seq_no: int) -> Issuer:
        """A revocable cred def on the schema with this ledger sequence number (2-4 s)."""
        self.schema_seq_no = schema_seq_no
        self.cred_def_id = f"{self.did}:3:CL:{schema_seq_no}:default"
        cred_def, _, _ = CredentialDefinition.create(
            self.schema_id, self.schema, self.did, "default", "CL", support_revocation=True
        )
        self._cred_def = cred_def  # anoncreds form, to make registries
        self.cred_def = cred_def.to_dict()  # ledger form, to write to a ledger
        self.cred_def.update({"ver": "1.0", "id": self.cred_def_id, "schemaId": str(schema_seq_no)})
        self.cred_def.pop("issuerId", None)
        return self

    def registry(self, max_cred_num: int, tag: str | None = None) -> Registry:
        """A registry with a fresh tag; one real tails file per size, reused across tags."""
        tag = tag or uuid.uuid4().hex
        if max_cred_num not in self._made:
            self._made[max_cred_num] = self._create(max_cred_num, tag)
        base = copy.deepcopy(self._made[max_cred_num].definition)
        base.update({"id": f"{self.did}:4:{self.cred_def_id}:CL_ACCUM:{tag}", "tag": tag})
        return Registry(base, self._made[max_cred_num].tails)

    def create_new(self, max_cred_num: int, tag: str) -> Registry:
        """A registry with its own new tails file (for writing to a real ledger)."""
        return self._create(max_cred_num, tag)

    def _create(self, max_cred_num: int, tag: str) -> Registry:
        definition, _ = RevocationRegistryDefinition.create(
            self.cred_def_id, self._cred_def, self.did, tag, "CL_ACCUM", max_cred_num,
            tails_dir_path=str(self.tails_dir),
        )
        data = definition.to_dict()
        data.pop("issuerId", None)
        data["ver"] = "1.0"
        data["id"] = f"{self.did}:4:{self.cred_def_id}:CL_ACCUM:{tag}"
        data["value"]["issuanceType"] = "ISSUANCE_BY_DEFAULT"
        tails = (self.tails_dir / data["value"]["tailsHash"]).read_bytes()
        return Registry(data, tails)


STEWARD_SEED = "000000000000000000000000Steward1"  # trustee/steward on von-network style test pools


def signed(request, seed: str):
    request.set_signature(nacl.signing.SigningKey(seed.encode()).sign(request.signature_input).signature)
    return request


class LedgerWriter:
    """Puts an issuer, a schema, a revocable cred def and registries on the real ledger."""

    def __init__(self, pool: Pool, tails_dir: Path) -> None:
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

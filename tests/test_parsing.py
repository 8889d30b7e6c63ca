"""The edge parsers: registry ids, tails hashes and genesis transactions."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from ledger_double import LedgerDouble
from poison import poison_genesis

from tails_server.errors import BadRequest
from tails_server.genesis import Genesis, InvalidGenesis
from tails_server.ids import RevRegId, TailsHash

DID = "WgWxqztrNooG92RXvxSTWv"
LEGACY = f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:0"


@pytest.mark.parametrize(
    "raw, value, ledger_id",
    [
        (LEGACY, LEGACY, LEGACY),
        (f"{DID}:4:{DID}:3:CL:20:my%20tag:CL_ACCUM:a%20b", f"{DID}:4:{DID}:3:CL:20:my tag:CL_ACCUM:a b", None),
        (f"{DID}:4:{DID}:3:CL:{DID}:2:schema:1.0:tag:CL_ACCUM:t", None, None),
        (f"{DID}:4:{DID}:3:CL:20:CL_ACCUM:t", None, None),
        (
            f"did:indy:sovrin:staging:{DID}/anoncreds/v0/REV_REG_DEF/56495/npdb/TAG1",
            None,
            f"{DID}:4:{DID}:3:CL:56495:npdb:CL_ACCUM:TAG1",
        ),
    ],
)
def test_valid_ids(raw, value, ledger_id):
    parsed = RevRegId.from_raw_path(raw)
    assert parsed.value == (value or raw)
    assert parsed.ledger_id == (ledger_id or parsed.value)
    assert "/" not in parsed.storage_name and parsed.storage_name not in (".", "..")
    assert RevRegId.from_storage_name(parsed.storage_name) == RevRegId.parse(parsed.value, _segments=[parsed.value] if "/" not in parsed.value else None)


@pytest.mark.parametrize(
    "raw",
    [
        "bad-id",
        "",
        "..",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:..%2F..%2Fetc",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:a%00b",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:a%252Fb",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:a%ZZ",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:%FF",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:a%0Ab",
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:" + "x" * 600,
        f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:",
        f"0OIl{DID[4:]}:4:{DID}:3:CL:20:tag:CL_ACCUM:0",
        f"{DID}:5:{DID}:3:CL:20:tag:CL_ACCUM:0",
        f"{DID}:4:{DID}:3:CL:020:tag:CL_ACCUM:0",
        f"did:indy:sovrin:{DID}/anoncreds/v0/REV_REG_DEF/1/a/..",
        f"did:indy:sovrin:{DID}/anoncreds/v0/REV_REG_DEF/1/a%2Fb/c",
        f"did:indy:sovrin:{DID}/anoncreds/v0/CLAIM_DEF/1/a/b",
        f"did:indy:Sovrin:{DID}/anoncreds/v0/REV_REG_DEF/1/a/b",
        f"{LEGACY}/extra",
    ],
)
def test_invalid_ids(raw):
    with pytest.raises(BadRequest) as exc:
        RevRegId.from_raw_path(raw)
    assert "\n" not in exc.value.reason


def test_storage_names_are_injective():
    ids = [f"{DID}:4:{DID}:3:CL:20:tag:CL_ACCUM:{t}" for t in ("a b", "a%20b".replace("%", "_"), "a+b", "a.b", "a~b", "é")]
    names = [RevRegId.parse(i).storage_name for i in ids]
    assert len(set(names)) == len(names)
    assert RevRegId.parse(ids[-1]).storage_name.endswith(quote("é"))


def test_tails_hash_is_canonical_32_bytes():
    good = "4ANLaDmJVzMTUaQdhVbqLP8vobQGsDL7Lbm6pHsGsUta"
    assert TailsHash.parse(good).value == good
    for bad in ("", "1" * 44, good[:-1], good + "1", "0" + good[1:], good.replace("4", "/"), "11" + good):
        with pytest.raises(BadRequest):
            TailsHash.parse(bad)


@pytest.fixture(scope="module")
def genesis_text():
    double = LedgerDouble()
    yield double.genesis_text
    double.stop()


def test_valid_genesis_key_ignores_layout(genesis_text):
    parsed = Genesis.parse(genesis_text.encode())
    relaid = "\r\n\n".join(json.dumps(json.loads(line), indent=None, sort_keys=True) for line in genesis_text.splitlines())
    assert Genesis.parse(relaid.encode()).key == parsed.key
    assert Genesis.parse(("\ufeff" + genesis_text).encode()).key == parsed.key


def test_each_poison_is_refused_with_a_reason(genesis_text):
    for name, text in poison_genesis(genesis_text).items():
        with pytest.raises(InvalidGenesis) as exc:
            Genesis.parse(text.encode())
        assert exc.value.reason == "Genesis transactions are not valid." and exc.value.detail, name


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t["txn"]["data"]["data"].__setitem__("client_port", 70000),
        lambda t: t["txn"]["data"]["data"].__setitem__("client_ip", "not-an-ip"),
        lambda t: t["txn"]["data"].__setitem__("dest", "abc"),
        lambda t: t["txn"]["data"]["data"].__setitem__("services", "VALIDATOR"),
        lambda t: t["txnMetadata"].__setitem__("seqNo", "1"),
        lambda t: t["txn"]["data"]["data"].pop("alias"),
        lambda t: t.pop("reqSignature"),
    ],
)
def test_malformed_node_fields_are_refused(genesis_text, mutate):
    lines = [json.loads(line) for line in genesis_text.splitlines()]
    mutate(lines[0])
    with pytest.raises(InvalidGenesis):
        Genesis.parse("\n".join(json.dumps(t) for t in lines).encode())


def test_genesis_without_validators_or_text_is_refused(genesis_text):
    no_validators = genesis_text.replace('"VALIDATOR"', '"OBSERVER"')
    for text in (no_validators, "", "\xff", "[]", "1\n2"):
        with pytest.raises(InvalidGenesis):
            Genesis.parse(text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff")

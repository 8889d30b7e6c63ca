"""Property-based tests (hypothesis) for the parsers at the edge and for multipart bodies on a live server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote

import base58
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_double import LedgerDouble

from tails_server.errors import BadRequest
from tails_server.genesis import Genesis, InvalidGenesis
from tails_server.ids import RevRegId, TailsHash

DID = "WgWxqztrNooG92RXvxSTWv"
TAGS = st.text(min_size=0, max_size=40)
VALID_GENESIS = LedgerDouble._node_txn  # noqa: SLF001 - reuse the double's node transaction builder


def check_parsed_id(parsed: RevRegId) -> None:
    name = parsed.storage_name
    assert "/" not in name and "\x00" not in name and name not in (".", "..") and len(name.encode()) <= 255
    assert parsed.value.isprintable()
    assert RevRegId.from_storage_name(name).value == parsed.value


@given(st.text(max_size=300))
def test_any_path_is_refused_or_maps_to_a_safe_name(text):
    try:
        parsed = RevRegId.from_raw_path(text)
    except BadRequest as exc:
        assert "\n" not in exc.reason
        return
    check_parsed_id(parsed)


@given(TAGS, TAGS, st.sampled_from(["", "%20", "%2F", "%25", "%00", "/", ".."]))
def test_near_valid_legacy_ids(cd_tag, tag, noise):
    raw = quote(f"{DID}:4:{DID}:3:CL:20:{cd_tag}:CL_ACCUM:{tag}", safe=":") + noise
    try:
        parsed = RevRegId.from_raw_path(raw)
    except BadRequest:
        return
    check_parsed_id(parsed)
    assert parsed.issuer_did == DID


@given(TAGS, TAGS)
def test_near_valid_did_indy_ids(cd_tag, tag):
    raw = f"did:indy:sovrin:{DID}/anoncreds/v0/REV_REG_DEF/7/{quote(cd_tag, safe='')}/{quote(tag, safe='')}"
    try:
        parsed = RevRegId.from_raw_path(raw)
    except BadRequest:
        return
    check_parsed_id(parsed)
    assert parsed.ledger_id == f"{DID}:4:{DID}:3:CL:7:{cd_tag}:CL_ACCUM:{tag}"


@given(st.binary(min_size=32, max_size=32))
def test_every_digest_round_trips(digest):
    parsed = TailsHash.parse(TailsHash.of_digest(digest).value)
    assert base58.b58decode(parsed.value) == digest


@given(st.text(max_size=60))
def test_any_text_is_a_hash_only_if_it_is_32_bytes(text):
    try:
        parsed = TailsHash.parse(text)
    except BadRequest:
        return
    assert len(base58.b58decode(parsed.value)) == 32


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=2000))
def test_any_bytes_are_a_genesis_or_refused(raw):
    try:
        Genesis.parse(raw)
    except InvalidGenesis as exc:
        assert exc.detail


@given(st.lists(JSON, min_size=1, max_size=5))
def test_any_json_lines_are_a_genesis_or_refused(values):
    try:
        Genesis.parse("\n".join(json.dumps(v) for v in values).encode())
    except InvalidGenesis:
        pass


def _mutated(path: list, value) -> bytes:
    import nacl.signing

    txn = VALID_GENESIS(0, nacl.signing.SigningKey(b"0" * 32), 9702)
    target = txn
    for key in path[:-1]:
        if not isinstance(target, dict) or key not in target:
            break
        target = target[key]
    if isinstance(target, dict):
        target[path[-1]] = value
    return (json.dumps(txn) + "\n").encode()


FIELDS = st.sampled_from([
    ["ver"], ["reqSignature"], ["txnMetadata"], ["txnMetadata", "seqNo"], ["txn"], ["txn", "type"],
    ["txn", "metadata"], ["txn", "metadata", "from"], ["txn", "data"], ["txn", "data", "dest"],
    ["txn", "data", "data"], ["txn", "data", "data", "alias"], ["txn", "data", "data", "client_ip"],
    ["txn", "data", "data", "client_port"], ["txn", "data", "data", "node_port"], ["txn", "data", "data", "services"],
    ["txn", "data", "data", "blskey"],
])


@given(FIELDS, JSON)
def test_mutated_node_transactions_are_valid_or_refused(path, value):
    try:
        Genesis.parse(_mutated(path, value))
    except InvalidGenesis:
        pass


BOUNDARY = "b0undary"
PART = st.tuples(st.sampled_from(["genesis", "tails", "other", ""]), st.binary(max_size=300))


@st.composite
def multipart_bodies(draw):
    """Well-formed, truncated and garbled multipart bodies."""
    parts = draw(st.lists(PART, max_size=3))
    body = b""
    for name, data in parts:
        disposition = f'form-data; name="{name}"' if name else "form-data"
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += draw(st.sampled_from([f"--{BOUNDARY}--\r\n".encode(), b"", b"--", b"garbage"]))
    cut = draw(st.integers(min_value=0, max_value=len(body)))
    return body[:cut] if draw(st.booleans()) else body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=multipart_bodies(), by_hash=st.booleans())
def test_multipart_bodies_never_cause_a_server_error(server, body, by_hash):
    path = "/hash/4ANLaDmJVzMTUaQdhVbqLP8vobQGsDL7Lbm6pHsGsUta" if by_hash else f"/{DID}:4:{DID}:3:CL:20:t:CL_ACCUM:prop"
    request = urllib.request.Request(
        server.url + path, data=body, method="PUT", headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status < 500 or status == 503  # 503: the genesis pointed at no reachable ledger


def test_atheris_fuzzing_of_the_parsers(tmp_path):
    """Bounded coverage-guided fuzzing in a child process (libFuzzer exits non-zero on a crash)."""
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    pytest.importorskip("atheris", reason="atheris is not installable on this Python")
    harness = Path(__file__).with_name("fuzz_parsers.py")
    result = subprocess.run(
        [sys.executable, str(harness), "-runs=200000", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 200000 runs" in result.stderr

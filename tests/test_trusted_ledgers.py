"""--ledger NAME=GENESIS_FILE: uploads are checked only against the operator's ledgers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ledger_double import LedgerDouble
from support import hash_upload, id_upload

from tails_server.config import load_settings


@pytest.fixture
def fake_ledger():
    """Somebody else's ledger, claiming the same registry ids with other files."""
    double = LedgerDouble().start()
    yield double
    double.stop()


@pytest.fixture
def trusting_server(new_server, ledger, tmp_path):
    genesis = tmp_path / "trusted.txn"
    genesis.write_text(ledger.genesis_text)
    proc = new_server("--ledger", f"test={genesis}")
    assert "checked only on the trusted ledgers test" in proc.log()
    return proc


async def test_genesis_of_a_trusted_ledger_is_accepted_in_any_layout(http, trusting_server, ledger, registry):
    relaid = "\r\n".join(json.dumps(json.loads(line), sort_keys=True, indent=None) for line in reversed(ledger.genesis_text.splitlines()))
    async with http.put(trusting_server.url + registry.path, data=id_upload(relaid, registry.tails)) as resp:
        assert (resp.status, await resp.text()) == (200, registry.tails_hash)


async def test_genesis_of_an_unknown_ledger_is_403(http, trusting_server, fake_ledger, issuer):
    claimed = issuer.registry(100)  # the id is real elsewhere; the fake ledger says it has this file
    fake_ledger.publish(claimed.definition)
    async with http.put(trusting_server.url + claimed.path, data=id_upload(fake_ledger.genesis_text, claimed.tails)) as resp:
        assert (resp.status, await resp.text()) == (403, "Genesis does not match a ledger trusted by this server.")
    assert fake_ledger.requests == 0  # the untrusted ledger was never asked
    assert list((trusting_server.storage / "id").iterdir()) == []


async def test_did_indy_id_of_a_trusted_namespace_needs_no_genesis(http, trusting_server, ledger, issuer):
    made = issuer.registry(5)
    ledger.publish(made.definition)
    tag = made.definition["tag"]
    path = f"/did:indy:test:{issuer.did}/anoncreds/v0/REV_REG_DEF/{issuer.schema_seq_no}/default/{tag}"
    async with http.put(trusting_server.url + path, data=hash_upload(made.tails)) as resp:  # `tails` alone
        assert (resp.status, await resp.text()) == (200, made.tails_hash)
    other = f"/did:indy:elsewhere:{issuer.did}/anoncreds/v0/REV_REG_DEF/{issuer.schema_seq_no}/default/{tag}"
    async with http.put(trusting_server.url + other, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert (resp.status, await resp.text()) == (403, "Ledger 'elsewhere' is not trusted by this server.")


async def test_did_indy_id_with_a_foreign_genesis_is_403(http, trusting_server, fake_ledger, issuer):
    made = issuer.registry(5)
    path = f"/did:indy:test:{issuer.did}/anoncreds/v0/REV_REG_DEF/{issuer.schema_seq_no}/default/{made.definition['tag']}"
    async with http.put(trusting_server.url + path, data=id_upload(fake_ledger.genesis_text, made.tails)) as resp:
        assert (resp.status, await resp.text()) == (403, "Genesis does not match the trusted ledger 'test'.")


async def test_without_the_option_a_genesis_is_still_required(http, server, ledger, issuer):
    made = issuer.registry(5)
    ledger.publish(made.definition)
    path = f"/did:indy:test:{issuer.did}/anoncreds/v0/REV_REG_DEF/{issuer.schema_seq_no}/default/{made.definition['tag']}"
    async with http.put(server.url + path, data=hash_upload(made.tails)) as resp:
        assert (resp.status, await resp.text()) == (400, "First field in multipart request must have name 'genesis'")
    assert "as the reference server does" in server.log()


def test_ledger_options(tmp_path, ledger):
    good = tmp_path / "g.txn"
    good.write_text(ledger.genesis_text)
    bad = tmp_path / "bad.txn"
    bad.write_text('{"foo": 1}\n')
    settings = load_settings([], env={"TAILS_SERVER_LEDGER": f"a={good}, b:net={good}"})
    assert settings.ledgers == {"a": good, "b:net": good}
    assert load_settings(["--ledger", f"c={good}"], env={"TAILS_SERVER_LEDGER": f"a={good}"}).ledgers == {"c": good}
    base = [sys.executable, "-m", "tails_server", "--storage-path", str(tmp_path / "s")]
    for value in (f"Bad Name={good}", "noequals", f"x={bad}", f"x={tmp_path / 'missing'}"):
        result = subprocess.run([*base, "--ledger", value], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "ledger" in result.stderr.lower(), value
    with pytest.raises(SystemExit):
        load_settings([], env={"TAILS_SERVER_LEDGER": "not a pair"})

"""Optional upload authentication: Bearer or Basic, hashes only on the server, reads public."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from support import random_tails

from tails_server.auth import hash_token

OCTET = {"Content-Type": "application/octet-stream"}
TOKEN, OTHER = "s3cret-token-for-uploads", "second-token-0f-two"


def test_hash_api_key_command():
    out = subprocess.run([sys.executable, "-m", "tails_server", "hash-api-key"], input=TOKEN + "\n", capture_output=True, text=True, check=True)
    line = out.stdout.strip()
    assert line.startswith("scrypt$") and TOKEN not in line
    generated = subprocess.run([sys.executable, "-m", "tails_server", "hash-api-key", "--generate"], capture_output=True, text=True, check=True)
    assert generated.stderr.startswith("token: ") and generated.stdout.startswith("scrypt$")


@pytest.fixture
def guarded(new_server, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# uploaders\n{hash_token(OTHER)}\n\n")
    return new_server("--api-key-hash", hash_token(TOKEN), "--api-keys-file", str(keys))


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Bearer ", "Basic !!!", f"Basic {base64.b64encode(b'user:nope').decode()}", f"Token {TOKEN}"])
async def test_missing_or_wrong_token_is_401(http, guarded, authorization):
    data, h = random_tails(3)
    headers = {**OCTET, **({"Authorization": authorization} if authorization else {})}
    async with http.put(f"{guarded.url}/hash/{h}", data=data, headers=headers) as resp:
        assert resp.status == 401
        assert "Bearer" in resp.headers["WWW-Authenticate"] and "Basic" in resp.headers["WWW-Authenticate"]
    assert not (guarded.storage / "hash" / h).exists()


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {OTHER}", f"Basic {base64.b64encode(f'issuer:{TOKEN}'.encode()).decode()}"])
async def test_right_token_uploads_and_reads_stay_public(http, guarded, authorization):
    data, h = random_tails(3)
    async with http.put(f"{guarded.url}/hash/{h}", data=data, headers={**OCTET, "Authorization": authorization}) as resp:
        assert (resp.status, await resp.text()) == (200, h)
    async with http.get(f"{guarded.url}/hash/{h}") as resp:
        assert resp.status == 200 and await resp.read() == data
    assert TOKEN not in guarded.log() and OTHER not in guarded.log()


def test_bad_hash_options_stop_the_start(tmp_path):
    base = [sys.executable, "-m", "tails_server", "--storage-path", str(tmp_path / "s")]
    for args in (["--api-key-hash", "plain-token"], ["--api-keys-file", str(tmp_path / "missing")]):
        result = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "api key" in result.stderr.lower(), args


def test_every_hash_is_tried_with_a_constant_time_compare(monkeypatch):
    """No early exit on a match, and digests are compared with hmac.compare_digest."""
    import hashlib
    import hmac

    from tails_server.auth import ApiKeys

    keys = ApiKeys([hash_token(TOKEN), hash_token(OTHER), hash_token("third-token-xyz")])
    compares, derivations = [], []
    real_compare, real_scrypt = hmac.compare_digest, hashlib.scrypt
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compares.append(1) or real_compare(a, b))
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: derivations.append(1) or real_scrypt(*a, **k))
    assert keys._matches(TOKEN) is True  # the first hash matches...
    assert (len(compares), len(derivations)) == (3, 3)  # ...and the other two are still computed
    assert keys._matches("wrong") is False
    assert (len(compares), len(derivations)) == (6, 6)

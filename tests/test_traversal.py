"""Path traversal on every route and method: nothing outside storage is ever read or written."""

from __future__ import annotations

import json
import os

import pytest
from support import encode_multipart, random_tails, raw_request

ID = "WgWxqztrNooG92RXvxSTWv:4:WgWxqztrNooG92RXvxSTWv:3:CL:20:tag:CL_ACCUM:"
ESCAPES = [
    "..%2F..%2F..%2Fetc%2Fhostname",
    "..%2fsecret.txt",
    "..%2F..%2Fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "%2E%2E%2F%2E%2E%2Fetc%2Fhostname",
    "..%252F..%252Fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "..%5Csecret.txt",
    "..\\secret.txt",
    "%2Fetc%2Fhostname",
    "%2F%2Fetc%2Fhostname",
    "secret.txt%00",
    "%00",
    "a%00b",
    "..%00%2Fsecret.txt",
    "%C0%AE%C0%AE%2Fsecret.txt",
    "%E2%80%A5%2Fsecret.txt",
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret.txt",
    "%ZZ",
    "A" * 5000,
    "1" * 300,
]
TARGETS = (
    [f"/hash/{e}" for e in ESCAPES]
    + [f"/{e}" for e in ESCAPES]
    + [f"/{ID}{e}" for e in ESCAPES]
    + ["/../secret.txt", "/hash/../../secret.txt", "/./../secret.txt", "//etc/hostname", "/hash//etc/hostname"]
    + ["/did:indy:x:WgWxqztrNooG92RXvxSTWv/anoncreds/v0/REV_REG_DEF/1/..%2F../secret.txt"]
)


@pytest.fixture(scope="module")
def canary(server):
    """A secret beside the storage directory, which no request may ever return."""
    path = server.storage.parent / "secret.txt"
    path.write_text("CANARY-5f0c1a")
    return path


def outside_storage(server) -> set[str]:
    return {p for p in os.listdir(server.storage.parent) if not p.startswith("server-")}


@pytest.mark.parametrize("target", TARGETS)
async def test_reads_never_escape(server, canary, target):
    for method in ("GET", "HEAD"):
        status, body = await raw_request(server.port, method, target)
        assert status in (400, 404), (method, target, status, body[:100])
        assert b"CANARY" not in body


@pytest.mark.parametrize("target", TARGETS)
async def test_writes_never_escape(server, canary, ledger, target):
    before = outside_storage(server)
    data, _ = random_tails(2)
    multipart, content_type = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", data)])
    for body, ctype in ((data, "application/octet-stream"), (multipart, content_type)):
        status, _ = await raw_request(server.port, "PUT", target, {"Content-Type": ctype}, body)
        assert status in (400, 404, 405), (target, status)
    assert outside_storage(server) == before
    assert canary.read_text() == "CANARY-5f0c1a"


@pytest.mark.parametrize("escape", ESCAPES[:12])
async def test_match_returns_only_ids(server, canary, escape):
    status, body = await raw_request(server.port, "GET", f"/match/{escape}")
    assert status in (200, 400)
    if status == 200:
        items = json.loads(body)
        assert isinstance(items, list)
        assert all(str(server.storage) not in item for item in items)


async def test_overlong_request_line_is_refused(server):
    status, _ = await raw_request(server.port, "GET", "/hash/" + "1" * 20000)
    assert status in (400, 414)

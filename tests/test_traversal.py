"""Path traversal on every route and method: nothing outside storage is ever read or written."""

from __future__ import annotations

import json
import os

import pytest
from support import encode_multipart, random_tails, raw_request

ID = "WgWxqztrNooG92RXvxSTWv:4:WgWxqztrNooG92RXvxSTWv:3:CL:20:tag:CL_ACCUM:"
# Hand-picked escapes, then the same intents spelled many ways: more than 200 encodings in all.
HAND_PICKED = [
    "..%2F..%2F..%2Fetc%2Fhostname",
    "%2E%2E%2F%2E%2E%2Fetc%2Fhostname",
    "..%00%2Fsecret.txt",
    "%C0%AE%C0%AE%2Fsecret.txt",  # overlong UTF-8 dots and slash
    "%C0%AFsecret.txt",
    "%E2%80%A5%2Fsecret.txt",  # two-dot leader
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret.txt",  # fullwidth ．．／
    "%E2%88%95secret.txt",  # division slash
    "%EF%B9%A8secret.txt",  # small reverse solidus
    "%ZZ",
    "%",
    "%2",
    "A" * 5000,
    "1" * 300,
]
SEPARATORS = ["/", "\\", "%2F", "%2f", "%5C", "%5c", "%252F", "%255C", "%25252F", "%c0%af", "%e0%80%af", "%u2215"]
DOTS = ["..", "%2E%2E", "%2e%2e", ".%2E", "%2E.", "%252E%252E", "..%00", "...."]
TARGET_FILES = ["secret.txt", "etc/hostname", "%2Fetc%2Fhostname", "secret.txt%00.tails", "secret.txt%0A"]


def _escapes() -> list[str]:
    found = list(HAND_PICKED)
    for dots in DOTS:
        for sep in SEPARATORS:
            found.append(f"{dots}{sep}secret.txt")
            found.append(f"{dots}{sep}{dots}{sep}etc{sep}hostname")
    for target in TARGET_FILES:
        found += [f"%2F{target}", f"%2F%2F{target}", f"..%2F{target}", target]
    return list(dict.fromkeys(found))


ESCAPES = _escapes()
assert len(ESCAPES) >= 200
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


@pytest.mark.parametrize("escape", ESCAPES)
async def test_match_returns_only_ids(server, canary, escape):
    status, body = await raw_request(server.port, "GET", f"/match/{escape}")
    assert status in (200, 400, 404)
    if status == 200:
        items = json.loads(body)
        assert isinstance(items, list)
        assert all(str(server.storage) not in item for item in items)


async def test_overlong_request_line_is_refused(server):
    status, _ = await raw_request(server.port, "GET", "/hash/" + "1" * 20000)
    assert status in (400, 414)

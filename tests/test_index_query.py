"""The index's substring query on a real SQLite file of thousands of names, against a plain scan.

Each way `/match` can take (one rare trigram, the two rarest intersected, all trigrams when every
one is common, the windowed scan) must give exactly the names a scan of every name gives.
"""

from __future__ import annotations

import hashlib

import base58
import pytest

from tails_server.index import db

PER_CRED_DEF, CRED_DEFS_PER_ISSUER = 4, 10
REGISTRIES = 3000


def names() -> list[db.Row]:
    """Registries laid out as issuers make them: 40 per issuer DID, each with its own file."""
    rows = []
    for i in range(REGISTRIES):
        tails_hash = base58.b58encode(hashlib.sha256(i.to_bytes(4, "big")).digest()).decode()
        cred_def_number = i // PER_CRED_DEF
        did = base58.b58encode(hashlib.sha256(b"issuer%d" % (cred_def_number // CRED_DEFS_PER_ISSUER)).digest()[:16]).decode()
        rev_reg_id = f"{did}:4:{did}:3:CL:{1000 + cred_def_number}:default:CL_ACCUM:{i}"
        rows += [db.Row(tails_hash, tails_hash, False, 130, 0.0), db.Row(rev_reg_id, tails_hash, True)]
    return rows


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "index.sqlite3"
    db.create(path, "test")
    writer = db.Writer(path)
    rows = names()
    for start in range(0, len(rows), 1000):
        writer.apply(rows[start:start + 1000], [])
    writer.close()
    reader = db.Reader(path)
    yield reader, [row.name for row in rows]
    reader.conn.close()


def every_page(reader: db.Reader, substring: str, limit: int) -> list[str]:
    found, cursor = [], 0
    for _ in range(10_000):  # bounded: far more pages than names
        page, cursor = reader.match(substring, cursor, limit)
        found += page
        if cursor is None:
            return found
    raise AssertionError("the cursor never ended")


def test_each_query_path_gives_what_a_scan_gives(reader):
    reader, every = reader
    ids = [n for n in every if ":" in n]
    hash_part = every[2 * 1234][9:21]
    cred_def = ids[1234].split(":4:")[1].split(":CL_ACCUM:")[0]
    cases = {
        hash_part: ("one", 1),  # random trigrams: the first is in a handful of names
        cred_def: ("two", PER_CRED_DEF),  # each DID trigram is in the issuer's 40 ids
        ":default:CL_ACCUM:12": ("all", None),  # every trigram is in thousands of names
        "CL": ("window", None),  # too short for a trigram
        "0OIl": ("none", 0),  # characters base58 never uses
    }
    for substring, (path, expected) in cases.items():
        chosen = reader._selective(db._spread_trigrams(substring)) if len(substring) >= 3 else "window"
        taken = "none" if chosen is None else "window" if chosen == "window" else {0: "all", 1: "one", 2: "two"}[len(chosen)]
        assert taken == path, (substring, chosen)
        scanned = [n for n in every if substring in n]
        if expected is not None:
            assert len(scanned) == expected, substring
        for limit in (1, 3, 100):
            assert every_page(reader, substring, limit) == scanned, (substring, limit)

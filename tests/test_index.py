"""GET /index.json: complete and consistent after concurrent uploads, in pages."""

from __future__ import annotations

import asyncio

from support import id_upload, random_tails


async def test_index_after_concurrent_uploads(new_server, http, ledger, issuer):
    proc = new_server()
    registries = [issuer.registry(5) for _ in range(3)] + [issuer.registry(100)]
    for made in registries:
        ledger.publish(made.definition)
    raw = [random_tails(n) for n in (1, 2, 3, 4, 5)]

    async def by_id(made):
        async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
            return resp.status

    async def by_hash(data, h):
        async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            return resp.status

    statuses = await asyncio.gather(*(by_id(m) for m in registries), *(by_hash(d, h) for d, h in raw), *(by_hash(d, h) for d, h in raw))
    assert sorted(statuses) == [200] * 9 + [409] * 5

    entries, cursor, pages = [], "", 0
    while True:  # walk the pages, 3 at a time
        async with http.get(f"{proc.url}/index.json", params={"limit": "3", "after": cursor}) as resp:
            assert resp.status == 200
            page = await resp.json()
        entries += page["files"]
        pages += 1
        if page["next"] is None:
            break
        cursor = page["next"]
    stored = {p.name: p.stat().st_size for p in (proc.storage / "hash").iterdir()}
    assert {e["tails_hash"]: e["size"] for e in entries} == stored
    assert len(entries) == 7 and pages == 3
    assert [e["tails_hash"] for e in entries] == sorted(stored)
    by_hash_entries = {e["tails_hash"]: e for e in entries}
    small = by_hash_entries[registries[0].tails_hash]["registries"]
    assert sorted(r["rev_reg_id"] for r in small) == sorted(m.id for m in registries[:3])
    assert all(r["cred_def_id"] == issuer.cred_def_id and r["issuer_did"] == issuer.did for r in small)
    assert by_hash_entries[raw[0][1]]["registries"] == [] and by_hash_entries[raw[0][1]]["created"].endswith("+00:00")


async def test_index_parameters(http, server):
    for query in ("limit=0", "limit=x", "limit=100000"):
        async with http.get(f"{server.url}/index.json?{query}") as resp:
            assert resp.status == 400
    async with http.get(f"{server.url}/index.json?after=zzzzzzzz") as resp:
        assert (await resp.json()) == {"files": [], "next": None}

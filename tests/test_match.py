"""GET /match/{substring}: registry ids and tails hashes, capped per answer, continued through Link headers."""

from __future__ import annotations

import pytest
from listings import match_pages
from support import id_upload, random_tails

OCTETS = {"Content-Type": "application/octet-stream"}


async def put_hash(http, proc, data: bytes, h: str) -> None:
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
        assert resp.status == 200, await resp.text()


async def test_match_finds_ids_and_hashes(http, server, ledger, registry):
    async with http.put(server.url + registry.path, data=id_upload(ledger.genesis_text, registry.tails)) as resp:
        assert resp.status == 200
    data, h = random_tails(3)
    await put_hash(http, server, data, h)  # by hash only, as ACA-Py's AnonCreds issuers upload

    async def match(substring: str) -> list[str]:
        return [name for page in await match_pages(http, server.url, substring) for name in page]

    assert await match(h[7:19]) == [h]
    assert await match(h) == [h]
    assert registry.tails_hash in await match(registry.tails_hash[3:12])
    assert await match(registry.id) == [registry.id]
    assert registry.id in await match(registry.id.split(":CL_ACCUM:")[1])  # the tag alone
    assert await match(h[:20] + "0OIl") == []  # characters base58 never uses


async def test_broad_matches_are_capped_and_continued(backend, new_server, http, ledger, issuer):
    proc = new_server(backend=backend)
    uploads = [random_tails(1 + i % 3) for i in range(101)]  # more than the default cap
    for data, h in uploads:
        await put_hash(http, proc, data, h)
    registries = [issuer.registry(5) for _ in range(7)]
    for made in registries:
        ledger.publish(made.definition)
        async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
            assert resp.status in (200, 409)  # registries of 5 credentials share one file
    stored = {h for _, h in uploads} | {m.tails_hash for m in registries} | {m.id for m in registries}

    pages = await match_pages(http, proc.url, "", limit=50)  # every name, fifty at a time
    flat = [name for page in pages for name in page]
    assert sorted(flat) == sorted(stored)  # each exactly once
    assert [len(page) for page in pages[:-1]] == [50] * (len(pages) - 1) and 1 <= len(pages[-1]) <= 50

    pages = await match_pages(http, proc.url, issuer.cred_def_id, limit=3)  # a selective substring (trigram index)
    assert sorted(name for page in pages for name in page) == sorted(m.id for m in registries)
    assert [len(page) for page in pages] == [3, 3, 1]

    async with http.get(f"{proc.url}/match/") as resp:  # the default cap
        assert resp.status == 200 and len(await resp.json()) == 100
        assert resp.headers["Link"] == '</match/?limit=100&after=100>; rel="next"'



@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "limit=-1", "after=-1", "after=abc", "limit=%C2%B2"])
async def test_bad_match_parameters_get_a_one_line_400(http, server, query):
    async with http.get(f"{server.url}/match/abc?{query}") as resp:
        text = await resp.text()
        assert resp.status == 400 and "\n" not in text and text.split()[0] in ("limit", "after"), text


async def test_overlong_substring_and_cursor_get_400(http, server):
    async with http.get(f"{server.url}/match/{'a' * 513}") as resp:
        assert resp.status == 400 and "at most 512" in await resp.text()
    async with http.get(f"{server.url}/index.json?after={'a' * 65}") as resp:
        assert resp.status == 400 and "\n" not in await resp.text()


async def test_odd_substrings_are_answered_not_crashed_on(http, server, ledger, issuer):
    """GLOB's special characters, multi-byte and non-UTF-8 text: a list (or 400), never a dead server."""
    made = issuer.registry(5, tag=f"odd[*?]{issuer.did[:4]}ĳ")
    ledger.publish(made.definition)
    async with http.put(server.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert resp.status == 200, await resp.text()
    for substring, expected in ((f"odd[*?]{issuer.did[:4]}", [made.id]), ("[*?]", [made.id]), ("?]", [made.id]),
                                (f"{issuer.did[:4]}ĳ", [made.id]), ("ĳ", [made.id]), ("*", [made.id])):
        pages = await match_pages(http, server.url, substring)
        found = [name for page in pages for name in page]
        assert [n for n in found if n == made.id] == expected, (substring, found)
    # found by the API fuzz test: this crashed SQLite 3.40 as a GLOB pattern with escaped classes
    for raw in ("%C3%900%5BE%F0%9A%AA%B0%F2%91%A9%BB%C3%9F%C2%BF3G%C2%A42%C2%A9%F1%83%B6%87%16",
                "%ED%A0%80abc", "%FF%FEabc", "abc%00", "a%0Ab"):
        async with http.get(f"{server.url}/match/{raw}") as resp:
            assert resp.status in (200, 400), (raw, resp.status)
    async with http.get(f"{server.url}/livez") as resp:
        assert resp.status == 200

"""PUT /{revoc_reg_id}: multipart genesis + tails, verified against the ledger's tailsHash."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import pytest
from conftest import LEDGER_TIMEOUT
from ledger_double import DISAGREE, NACK, SILENT, LedgerDouble
from poison import poison_genesis
from registries import Issuer, Registry
from support import SlowUpload, encode_multipart, hash_upload, id_upload, random_tails, tails_hash


async def put(http: aiohttp.ClientSession, server, registry: Registry, genesis: str, tails: bytes | None = None, **kw):
    form = id_upload(genesis, registry.tails if tails is None else tails, **kw)
    async with http.put(server.url + registry.path, data=form) as resp:
        return resp.status, await resp.text()


async def test_upload_then_download(http, server, ledger, registry):
    status, body = await put(http, server, registry, ledger.genesis_text)
    assert (status, body) == (200, registry.tails_hash)
    for path in (registry.path, f"/hash/{registry.tails_hash}"):
        async with http.get(server.url + path) as resp:
            assert resp.status == 200
            assert await resp.read() == registry.tails
    stored = server.view.file(registry.tails_hash)
    assert stored == registry.tails and tails_hash(stored) == registry.tails_hash
    assert server.view.file_for_id(registry.id) == registry.tails


async def test_second_upload_is_409_and_file_unchanged(http, server, ledger, registry):
    assert (await put(http, server, registry, ledger.genesis_text))[0] == 200
    assert await put(http, server, registry, ledger.genesis_text) == (409, "This tails file already exists.")
    async with http.get(server.url + registry.path) as resp:
        assert await resp.read() == registry.tails


async def test_tag_with_spaces_sent_as_percent_20(http, server, ledger, issuer: Issuer):
    made = issuer.registry(5, tag="my tag 1")
    ledger.publish(made.definition)
    assert "%20" in made.path
    assert await put(http, server, made, ledger.genesis_text) == (200, made.tails_hash)
    async with http.get(server.url + made.path) as resp:
        assert resp.status == 200 and await resp.read() == made.tails


async def test_did_indy_id_resolves_on_legacy_ledger_id(http, server, ledger, issuer: Issuer):
    made = issuer.registry(5)
    ledger.publish(made.definition)
    tag = made.definition["tag"]
    did_indy = f"/did:indy:test:{issuer.did}/anoncreds/v0/REV_REG_DEF/{issuer.schema_seq_no}/default/{tag}"
    async with http.put(server.url + did_indy, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert (resp.status, await resp.text()) == (200, made.tails_hash)
    async with http.get(server.url + did_indy) as resp:
        assert resp.status == 200 and await resp.read() == made.tails


async def test_match_lists_ids_not_paths(http, server, ledger, registry):
    assert (await put(http, server, registry, ledger.genesis_text))[0] == 200
    async with http.get(f"{server.url}/match/{registry.definition['tag']}") as resp:
        assert resp.status == 200
        assert await resp.json() == [registry.id]
    async with http.get(f"{server.url}/match/{quote(registry.definition['credDefId'], safe=':')}") as resp:
        found = await resp.json()
        assert registry.id in found and all(not str(item).startswith("/") for item in found)


async def test_not_on_ledger_is_404(http, server, ledger, issuer: Issuer):
    never_published = issuer.registry(5)
    status, body = await put(http, server, never_published, ledger.genesis_text)
    assert status == 404 and "not on the ledger" in body
    assert server.view.file_for_id(never_published.id) is None


async def test_hash_mismatch_is_400(http, server, ledger, registry):
    other, other_hash = random_tails(10)  # a well-formed tails file, just not this registry's
    status, body = await put(http, server, registry, ledger.genesis_text, tails=other)
    assert (status, body) == (400, "tailsHash does not match hash of file.")
    assert server.view.file(other_hash) is None
    assert server.view.file_for_id(registry.id) is None


@pytest.mark.parametrize(
    "tails, reason",
    [
        (b"bad bytes", 'Tails file must start with "00 02".'),
        (b"\x00\x02" + b"\x01" * 100, "Tails file is not the correct size."),
        (b"", 'Tails file must start with "00 02".'),
    ],
)
async def test_not_a_tails_file_is_400(http, server, ledger, registry, tails, reason):
    assert await put(http, server, registry, ledger.genesis_text, tails=tails) == (400, reason)


async def test_wrong_field_order_is_400(http, server, ledger, registry):
    form = aiohttp.FormData()
    form.add_field("tails", registry.tails, filename="t")
    form.add_field("genesis", ledger.genesis_text)
    async with http.put(server.url + registry.path, data=form) as resp:
        assert (resp.status, await resp.text()) == (400, "First field in multipart request must have name 'genesis'")


async def test_wrong_second_field_is_400(http, server, ledger, registry):
    status, body = await put(http, server, registry, ledger.genesis_text, second="file")
    assert (status, body) == (400, "Second field in multipart request must have name 'tails'")


@pytest.mark.parametrize("content_type", ["bad", "application/json", None])
async def test_bad_content_type_is_400(http, server, registry, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    async with http.put(server.url + registry.path, data=b"x" if content_type else None, headers=headers) as resp:
        assert (resp.status, await resp.text()) == (400, "Expected mutlipart content type")


async def test_empty_or_broken_multipart_is_400(http, server, registry):
    for body in (b"", b"--b\r\nno headers end", b"garbage"):
        headers = {"Content-Type": "multipart/form-data; boundary=b"}
        async with http.put(server.url + registry.path, data=body, headers=headers) as resp:
            assert resp.status == 400, await resp.text()
            assert "\n" not in await resp.text()


async def test_invalid_id_is_400(http, server, ledger, registry):
    async with http.put(server.url + "/bad-id", data=id_upload(ledger.genesis_text, registry.tails)) as resp:
        assert (resp.status, await resp.text()) == (400, "Revocation registry ID is not valid: bad-id.")


@pytest.mark.parametrize("genesis", ["", "not json", '{"a": 1', "[]", "\n\n"])
async def test_invalid_genesis_is_400(http, server, registry, genesis):
    assert await put(http, server, registry, genesis) == (400, "Genesis transactions are not valid.")


async def test_oversized_genesis_is_413(http, server, ledger, registry):
    status, body = await put(http, server, registry, ledger.genesis_text + " " * (1 << 20))
    assert status == 413 and "Genesis" in body


async def test_oversized_tails_is_413_and_leaves_nothing(http, server, ledger, registry):
    too_big = b"\x00\x02" + b"\x00" * (8 << 20)
    status, body = await put(http, server, registry, ledger.genesis_text, tails=too_big)
    assert status == 413 and "larger than the limit" in body
    assert server.view.temp_files() == []
    assert server.view.file_for_id(registry.id) is None


async def test_poison_genesis_then_valid_upload_in_same_process(http, server, ledger, registry):
    for _ in range(3):  # repeated: none of them may reach indy-vdr even once
        for name, genesis in poison_genesis(ledger.genesis_text).items():
            status, body = await put(http, server, registry, genesis)
            assert (status, body) == (400, "Genesis transactions are not valid."), name
    assert server.proc.poll() is None
    assert await put(http, server, registry, ledger.genesis_text) == (200, registry.tails_hash)


async def test_nodes_disagreeing_is_503(http, server, ledger, registry):
    ledger.set_modes(DISAGREE)
    status, body = await put(http, server, registry, ledger.genesis_text)
    assert status == 503 and "consensus" in body
    ledger.set_modes("ok")
    assert (await put(http, server, registry, ledger.genesis_text))[0] == 200


async def test_one_node_disagreeing_or_silent_still_works(http, server, ledger, registry):
    ledger.set_modes("ok", DISAGREE, "ok", SILENT)
    assert await put(http, server, registry, ledger.genesis_text) == (200, registry.tails_hash)


async def test_nodes_nacking_is_400_with_ledger_reason(http, server, ledger, registry):
    ledger.set_modes(NACK)
    status, body = await put(http, server, registry, ledger.genesis_text)
    assert status == 400 and "refused by the test ledger" in body


async def test_silent_ledger_is_503_within_the_timeout(http, server, registry):
    silent = LedgerDouble().start()
    try:
        silent.publish(registry.definition)
        silent.set_modes(SILENT)
        # The client gives up well after the server's budget: a hang would fail the test.
        timeout = aiohttp.ClientTimeout(total=LEDGER_TIMEOUT + 5)
        async with http.put(server.url + registry.path, data=id_upload(silent.genesis_text, registry.tails), timeout=timeout) as resp:
            assert resp.status == 503
            assert f"within {LEDGER_TIMEOUT} s" in await resp.text()
    finally:
        silent.stop()


async def test_pool_is_reused_across_uploads(http, server, issuer: Issuer):
    """No pool per request: later uploads against the same genesis send no LEDGER_STATUS.

    A ledger of its own, so no earlier test's node failures make the client re-check its nodes.
    """
    own = LedgerDouble().start()
    try:
        made = [issuer.registry(5) for _ in range(4)]
        for registry in made:
            own.publish(registry.definition)
        assert (await put(http, server, made[0], own.genesis_text))[0] == 200
        opened = own.status_requests
        assert opened > 0
        for registry in made[1:]:
            assert (await put(http, server, registry, own.genesis_text))[0] == 200
        assert own.status_requests == opened
        assert own.requests >= len(made)
    finally:
        own.stop()


async def test_existing_id_is_409_before_the_ledger_is_asked(http, server, ledger, registry):
    assert (await put(http, server, registry, ledger.genesis_text))[0] == 200
    reads = ledger.requests
    ledger.set_modes(SILENT)
    assert await put(http, server, registry, ledger.genesis_text) == (409, "This tails file already exists.")
    assert ledger.requests == reads


async def test_uploaded_by_hash_first_then_by_id(http, server, ledger, registry):
    async with http.put(f"{server.url}/hash/{registry.tails_hash}", data=hash_upload(registry.tails)) as resp:
        assert resp.status in (200, 409)  # another test may have stored this size already
    assert await put(http, server, registry, ledger.genesis_text) == (200, registry.tails_hash)


@pytest.mark.parametrize("value", [{"tailsHash": "not base58 at all"}, {}, "a string", None])
async def test_malformed_definition_on_ledger_is_503(http, server, ledger, issuer: Issuer, value):
    made = issuer.registry(5)
    broken = {**made.definition, "value": value} if value is not None else {**made.definition, "id": made.id + "x"}
    ledger.definitions[made.id] = broken
    status, body = await put(http, server, made, ledger.genesis_text)
    assert status == 503 and "malformed" in body
    assert server.view.file_for_id(made.id) is None


async def test_ledger_refusal_stops_an_upload_before_its_tails_bytes_end(server, ledger, issuer: Issuer):
    """The lookup runs while the file arrives; a 404 is answered without waiting for the rest."""
    never_published = issuer.registry(1000)
    body, ctype = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", never_published.tails)])
    upload = SlowUpload(server.port, never_published.path, body, ctype)
    await upload.send_first_half()
    status, text = await upload.response()
    upload.abandon()
    assert status == 404 and b"not on the ledger" in text
    assert server.view.temp_files() == []

"""How uploads by id use ledger pools: the lookup starts early, and no pool holds up another."""

from __future__ import annotations

import asyncio

from conftest import LEDGER_TIMEOUT
from ledger_double import LedgerDouble
from support import SlowUpload, encode_multipart, id_upload, wait_for

from tails_server.genesis import Genesis
from tails_server.ids import RevRegId
from tails_server.ledger import LedgerClient


async def put(http, proc, registry, genesis: str) -> tuple[int, str]:
    async with http.put(proc.url + registry.path, data=id_upload(genesis, registry.tails)) as resp:
        return resp.status, await resp.text()


async def test_lookup_starts_before_the_genesis_part_on_a_ledger_used_twice(new_server, http, issuer):
    """After two uploads to one ledger, the next lookup goes out before its genesis part arrives.

    An upload that then names another ledger drops that early read and is checked where it says.
    """
    proc = new_server()
    own, other = LedgerDouble().start(), LedgerDouble().start()
    try:
        first, second, third = (issuer.registry(5) for _ in range(3))
        for made in (first, second, third):
            own.publish(made.definition)
        counts = []
        for made in (first, second):
            assert await put(http, proc, made, own.genesis_text) == (200, made.tails_hash)
            counts.append(own.requests)
        reads, per_lookup = counts[1], counts[1] - counts[0]  # node requests of one lookup
        body, ctype = encode_multipart([("genesis", own.genesis_text.encode()), ("tails", third.tails)])
        upload = SlowUpload(proc.port, third.path, body, ctype, hold_back=len(body) - 16)  # not even the genesis
        await upload.send_first_half()
        await wait_for(lambda: own.requests > reads)  # asked while the genesis part is still on its way
        assert await upload.finish() == (200, third.tails_hash.encode())
        assert own.requests == reads + per_lookup  # that early read was the lookup: no second one

        elsewhere = issuer.registry(5)
        other.publish(elsewhere.definition)  # not on `own`: the early read there finds nothing
        assert await put(http, proc, elsewhere, other.genesis_text) == (200, elsewhere.tails_hash)
        async with http.get(proc.url + elsewhere.path) as resp:
            assert resp.status == 200 and await resp.read() == elsewhere.tails
    finally:
        own.stop()
        other.stop()


async def test_a_pool_leaving_the_cache_mid_request_holds_up_no_other(ledger, issuer):
    """A lookup cancelled while its (vanished) ledger is silent leaves a request in flight; its
    pool then leaves the cache, and lookups on another ledger go on within their budget.

    indy-vdr's pool close waits for the pool's requests and meanwhile held up a read on another
    pool for 6 s in a direct trial; the client closes such a pool only after its requests end.
    This scenario did not fail reliably without that (the timing of the vanished nodes varies).
    """
    client = LedgerClient(timeout=LEDGER_TIMEOUT, max_pools=1)
    LedgerClient.configure(LEDGER_TIMEOUT)
    gone = LedgerDouble().start()
    try:
        made = issuer.registry(5)
        gone.publish(made.definition)
        gone_genesis = Genesis.parse(gone.genesis_text.encode())
        assert str(await client.tails_hash(gone_genesis, RevRegId.parse(made.id))) == made.tails_hash
        gone.stop()
        abandoned = asyncio.ensure_future(client.tails_hash(gone_genesis, RevRegId.parse(issuer.registry(5).id)))
        await asyncio.sleep(0.05)
        abandoned.cancel()  # its request to the vanished nodes is still in flight

        made = issuer.registry(5)
        ledger.publish(made.definition)  # another ledger: its pool takes the only cache place
        # Within the lookup budget (closing the other pool at once held this up past it).
        assert str(await client.tails_hash(Genesis.parse(ledger.genesis_text.encode()), RevRegId.parse(made.id))) == made.tails_hash
    finally:
        gone.stop()
        await client.close()

"""/livez, /readyz and /status against a running server, healthy and with broken storage."""

from __future__ import annotations

import shutil


async def test_healthy_server(http, server):
    async with http.get(server.url + "/livez") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with http.get(server.url + "/readyz") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with http.get(server.url + "/status") as resp:
        assert resp.status == 200
        status = await resp.json()
    assert status["status"] == "ok" and status["storage"]["writable"] is True
    assert status["storage"]["free_bytes"] > 0
    assert isinstance(status["ledger"]["cached_pools"], int) and status["version"]
    assert str(server.storage) not in str(status)  # no server paths
    front = "front door" if status["storage"]["backend"] == "local" else "aiohttp"  # object storage: aiohttp's path
    assert status["transport"] == {"tls": False, "plain_downloads": front}


async def test_unavailable_storage_is_503_but_liveness_holds(http, new_server):
    proc = new_server()
    shutil.rmtree(proc.storage / ".tmp")
    (proc.storage / ".tmp").write_text("not a directory")
    async with http.get(proc.url + "/readyz") as resp:
        assert resp.status == 503 and ".tmp" in await resp.text()
    async with http.get(proc.url + "/status") as resp:
        assert resp.status == 503
        assert (await resp.json())["storage"]["writable"] is False
    async with http.get(proc.url + "/livez") as resp:
        assert resp.status == 200

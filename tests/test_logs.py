"""Logs: one line per request with a request id (accepted and returned), JSON on request, refusals explained."""

from __future__ import annotations

import asyncio
import json

from support import random_tails

OCTET = {"Content-Type": "application/octet-stream"}


async def test_request_id_is_returned_and_logged(http, server):
    async with http.get(server.url + "/livez", headers={"X-Request-ID": "trace-abc.123"}) as resp:
        assert resp.headers["X-Request-ID"] == "trace-abc.123"
    async with http.get(server.url + "/livez", headers={"X-Request-ID": "bad id\twith spaces"}) as resp:
        generated = resp.headers["X-Request-ID"]
        assert len(generated) == 32 and generated != "bad id\twith spaces"
    async with http.get(server.url + "/hash/unknown") as resp:
        assert resp.status == 400 and resp.headers["X-Request-ID"]
    await asyncio.sleep(0.5)  # access lines are flushed in batches
    assert any(line.endswith(" trace-abc.123") and "ACCESS" in line for line in server.log().splitlines())


async def test_json_logs_with_refusal_reasons(new_server, http):
    proc = new_server("--log-format", "json")
    data, _ = random_tails(2)
    _, wrong = random_tails(2)
    async with http.put(f"{proc.url}/hash/{wrong}", data=data, headers={**OCTET, "X-Request-ID": "upload-7"}) as resp:
        assert resp.status == 400
    await asyncio.sleep(0.5)
    entries = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    assert entries and all({"time", "level", "logger", "request_id"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "access" and e["request_id"] == "upload-7"]
    assert len(access) == 1 and access[0]["status"] == 400 and access[0]["method"] == "PUT"
    refused = [e for e in entries if e["level"] == "WARNING" and e["request_id"] == "upload-7"]
    assert len(refused) == 1 and "tailsHash does not match hash of file." in refused[0]["message"]
    assert not [line for line in proc.log().splitlines() if line.strip() and not line.startswith("{")]

"""What only the S3 backend does: a store that is down, refuses our key or lacks the bucket is a 503
with a reason (never a 500), uploads leave nothing behind, and the service comes back with the store.

The API suite itself runs on S3 too (the `backend` fixture); these are the store's own failures.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from object_store import ACCESS_KEY, AWS_ENV, BUCKET, new_prefix
from support import free_port, id_upload, random_tails, tiny_window_get, wait_for

from tails_server.auth import hash_token

OCTETS = {"Content-Type": "application/octet-stream"}


async def expect(http, method: str, url: str, status: int, reason_starts: str = "", **kwargs) -> None:
    async with http.request(method, url, **kwargs) as resp:
        text = (await resp.read()).decode(errors="replace")
        assert resp.status == status, (method, url, resp.status, text)
        assert text.startswith(reason_starts), text
        assert "Traceback" not in text


@pytest.mark.parametrize("problem", ["unreachable", "wrong key", "no bucket"])
async def test_a_failing_store_is_503_for_reads_writes_and_readiness(problem, seaweed, new_server, http, ledger, registry):
    endpoint, env, url = seaweed.endpoint, {}, f"s3://{BUCKET}/{new_prefix()}"
    if problem == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
    elif problem == "wrong key":
        env = {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    else:
        url = f"s3://no-such-bucket-{free_port()}/x"
    proc = new_server("--storage", url, "--s3-endpoint-url", endpoint, env={**AWS_ENV, **env})
    data, h = random_tails(64)
    await expect(http, "GET", proc.url + "/livez", 200, "ok")
    await expect(http, "GET", proc.url + "/readyz", 503)
    await expect(http, "GET", f"{proc.url}/hash/{h}", 503, "Object storage")
    await expect(http, "HEAD", proc.url + registry.path, 503)
    await expect(http, "PUT", f"{proc.url}/hash/{h}", 503, "Object storage", data=data, headers=OCTETS)
    await expect(http, "PUT", proc.url + registry.path, 503, "Object storage", data=id_upload(ledger.genesis_text, registry.tails))
    await expect(http, "GET", proc.url + "/index.json", 503, "The index is not built yet: Object storage")
    assert proc.view.temp_files() == []
    assert ACCESS_KEY not in proc.log() and "not-the-secret" not in proc.log()  # credentials never logged


async def test_store_back_after_an_outage_serves_again(seaweed, new_server, http):
    """Start against a gateway that is not there yet; once it runs, the same server works."""
    port = free_port()
    proc = new_server(backend="s3", endpoint=f"http://127.0.0.1:{port}")
    data, h = random_tails(64)
    await expect(http, "PUT", f"{proc.url}/hash/{h}", 503, data=data, headers=OCTETS)
    endpoint = seaweed.add_gateway(port=port)
    assert endpoint.endswith(f":{port}")
    await expect(http, "GET", proc.url + "/readyz", 200, "ok")
    await expect(http, "PUT", f"{proc.url}/hash/{h}", 200, h, data=data, headers=OCTETS)
    async with http.get(f"{proc.url}/hash/{h}", headers={"Range": "bytes=2-129"}) as resp:
        assert resp.status == 206 and await resp.read() == data[2:130]
    assert proc.view.file(h) == data


def test_bad_storage_url_is_a_usage_error(new_server):
    with pytest.raises(RuntimeError, match="expected s3://BUCKET/PREFIX"):
        new_server("--storage", "s3:/missing-bucket", env=AWS_ENV)


async def test_store_lost_mid_download_cuts_the_connection_short(seaweed, new_server, http):
    """Headers are out when the gateway dies: the client gets fewer bytes than promised, then EOF."""
    endpoint = seaweed.add_gateway()
    proc = new_server("--max-tails-size", "64MiB", backend="s3", endpoint=endpoint)
    data, h = random_tails(200_000)  # 24 MiB: far more than the socket buffers hold
    await expect(http, "PUT", f"{proc.url}/hash/{h}", 200, h, data=data, headers=OCTETS)
    reader, writer = await tiny_window_get(proc.port, f"/hash/{h}")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(data)}".encode() in head
    seaweed.gateways[endpoint].kill()
    received = b""
    async with asyncio.timeout(60):
        while chunk := await reader.read(1 << 16):
            received += chunk
    writer.close()
    assert len(received) < len(data) and data.startswith(received)
    assert b"HTTP/1.1" not in received  # no second response in the body
    await expect(http, "GET", proc.url + "/livez", 200, "ok")
    assert "storage failed while sending" in proc.log() and "Traceback" not in proc.log()


async def wait_cached(proc, h: str, timeout: float = 10) -> Path:
    path = proc.storage / ".cache" / h
    await wait_for(path.exists, timeout)
    return path


async def test_downloads_fill_a_verified_local_cache(seaweed, new_server, http):
    """After one GET the bytes come from local disk (sendfile), and only bytes matching the hash are kept."""
    proc = new_server(backend="s3")
    data, h = random_tails(1000)
    await expect(http, "PUT", f"{proc.url}/hash/{h}", 200, h, data=data, headers=OCTETS)
    async with http.get(f"{proc.url}/hash/{h}") as resp:
        assert resp.status == 200 and await resp.read() == data  # streamed from the store
    assert (await wait_cached(proc, h)).read_bytes() == data
    proc.view.overwrite(h, b"\x00\x02" + b"\xff" * 128 * 1000)  # the store's copy rots behind our back
    async with http.get(f"{proc.url}/hash/{h}", headers={"Range": "bytes=10-99"}) as resp:
        assert resp.status == 206 and await resp.read() == data[10:100]  # the verified copy

    rotten, rotten_hash = random_tails(500)
    await expect(http, "PUT", f"{proc.url}/hash/{rotten_hash}", 200, rotten_hash, data=rotten, headers=OCTETS)
    proc.view.overwrite(rotten_hash, rotten[:-128])
    async with http.get(f"{proc.url}/hash/{rotten_hash}") as resp:
        assert resp.status == 200
    await wait_for(lambda: "do not match their hash" in proc.log())
    assert not (proc.storage / ".cache" / rotten_hash).exists()


async def test_a_cached_file_deleted_on_another_instance_is_gone_here_too(seaweed, new_server, tmp_path, http):
    prefix = new_prefix()
    admin = new_server("--allow-delete", "--admin-key-hash", hash_token("admin-token-0123456789"),
                       backend="s3", prefix=prefix, storage=tmp_path / "a")
    reader = new_server("--s3-cache-size", "1MiB", backend="s3", prefix=prefix, storage=tmp_path / "b")
    data, h = random_tails(1000)
    await expect(http, "PUT", f"{admin.url}/hash/{h}", 200, h, data=data, headers=OCTETS)
    await expect(http, "GET", f"{reader.url}/hash/{h}", 200)
    await wait_cached(reader, h)
    await expect(http, "DELETE", f"{admin.url}/hash/{h}", 200, "Deleted.", headers={"Authorization": "Bearer admin-token-0123456789"})
    statuses = []
    for _ in range(40):  # the reader trusts what it saw for at most 5 s (SEEN_TTL), then asks the store
        async with http.get(f"{reader.url}/hash/{h}") as resp:
            statuses.append(resp.status)
            if resp.status == 404:
                break
            assert resp.status == 200 and await resp.read() == data  # never anything but the whole file
        await asyncio.sleep(0.25)
    assert statuses[-1] == 404 and len(statuses) <= 6 / 0.25, statuses

    files = [random_tails(2000) for _ in range(6)]  # 256 KiB each: four fit the 1 MiB cache
    for data, h in files:
        await expect(http, "PUT", f"{admin.url}/hash/{h}", 200, h, data=data, headers=OCTETS)
        await expect(http, "GET", f"{reader.url}/hash/{h}", 200)
        await wait_cached(reader, h)
    cached = list((reader.storage / ".cache").glob("[!.]*"))
    assert sum(p.stat().st_size for p in cached) <= 1 << 20 and files[-1][1] in {p.name for p in cached}
    for data, h in files:  # evicted or not, every file is served whole
        async with http.get(f"{reader.url}/hash/{h}") as resp:
            assert resp.status == 200 and await resp.read() == data

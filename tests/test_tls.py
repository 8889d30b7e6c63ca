"""--tls-cert / --tls-key: the same API over HTTPS."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import aiohttp
import pytest
from support import random_tails


@pytest.mark.parametrize("records", [100, 20000])  # 12.5 KiB: one write; 2.4 MiB: never sendfile under TLS
async def test_https_upload_and_download(new_server, tls_files, records):
    chain, key, client = tls_files
    proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), ssl_context=client)
    assert proc.url.startswith("https://")
    data, h = random_tails(records)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as https:
        async with https.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            assert (resp.status, await resp.text()) == (200, h)
        async with https.get(f"{proc.url}/hash/{h}") as resp:
            assert resp.status == 200 and await resp.read() == data
        async with https.get(f"{proc.url}/hash/{h}", headers={"Range": "bytes=2-129"}) as resp:
            assert resp.status == 206 and await resp.read() == data[2:130]
        async with https.get(f"{proc.url}/status") as resp:
            transport = (await resp.json())["transport"]
        assert transport["tls"] is True and transport["plain_downloads"] == "front door"
        assert transport["kernel_tls"].startswith("not used: ")  # and why (this Python, this kernel)
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            async with plain.get(f"http://127.0.0.1:{proc.port}/livez") as resp:
                await resp.read()


def test_tls_options_are_checked_at_start(tmp_path, tls_files):
    chain, key, _ = tls_files
    base = [sys.executable, "-m", "tails_server", "--storage-path", str(tmp_path / "s")]
    for args in (["--tls-cert", str(chain)], ["--tls-cert", str(chain), "--tls-key", str(tmp_path / "missing.pem")],
                 ["--tls-cert", str(key), "--tls-key", str(chain)]):
        result = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "tls" in result.stderr.lower(), args



async def test_requests_sent_with_the_handshake_reach_the_handler(new_server, tls_files):
    chain, key, client = tls_files
    proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), ssl_context=client)
    data, h = random_tails(3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as https:
        async with https.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            assert resp.status == 200
    for _ in range(30):  # the request leaves right behind the handshake, then the client closes its side
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port, ssl=client)
        writer.write(f"GET /hash/{h} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and body == data, head


async def test_https_downloads_whether_or_not_the_file_is_in_the_page_cache(new_server, tls_files, tmp_path):
    # Cached pages are read on the event loop (RWF_NOWAIT); the rest by a thread that waits for the disk.
    chain, key, client = tls_files
    proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), ssl_context=client)
    data, h = random_tails(30000)  # 3.7 MiB: many chunks
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as https:
        async with https.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            assert resp.status == 200
        stored = next((tmp_path / "storage").rglob(h))
        for evict in (True, False, True):
            if evict:  # drop the file's pages: its reads must wait for the disk
                fd = os.open(stored, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
            async with https.get(f"{proc.url}/hash/{h}") as resp:
                assert resp.status == 200 and await resp.read() == data
            async with https.get(f"{proc.url}/hash/{h}", headers={"Range": "bytes=1000000-2999999"}) as resp:
                assert resp.status == 206 and await resp.read() == data[1000000:3000000]


def _resumed(port: int, context, session) -> tuple[bool, object]:
    """One request on a new connection offering `session`: whether the server resumed it, and the session to offer next."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
            tls.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while tls.recv(1 << 16):  # the answer, and the session tickets sent with it
                pass
            return tls.session_reused, tls.session


async def test_sessions_resume_on_every_worker(new_server, tls_files):
    """Workers share one TLS context, so a ticket from one is taken by the others (a cheaper handshake)."""
    chain, key, client = tls_files
    proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), "--workers", "2", ssl_context=client)
    _, session = await asyncio.to_thread(_resumed, proc.port, client, None)
    resumed = [(await asyncio.to_thread(_resumed, proc.port, client, session))[0] for _ in range(16)]
    assert resumed == [True] * 16

"""--tls-cert / --tls-key: the same API over HTTPS."""

from __future__ import annotations

import ssl
import subprocess
import sys

import aiohttp
import pytest
import trustme
from support import random_tails


@pytest.fixture
def tls_files(tmp_path):
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return chain, key, client


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


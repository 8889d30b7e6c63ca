"""Admin deletion: off by default, behind --allow-delete and an admin token."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import pytest
from support import id_upload, random_tails

from tails_server.auth import hash_token

ADMIN, UPLOADER = "admin-token-0123456789", "uploader-token-987654"


@pytest.fixture
def admin_server(new_server):
    return new_server("--allow-delete", "--admin-key-hash", hash_token(ADMIN), "--api-key-hash", hash_token(UPLOADER))


async def upload_registry(http, proc, ledger, made):
    headers = {"Authorization": f"Bearer {UPLOADER}"}
    async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails), headers=headers) as resp:
        assert resp.status == 200


async def test_delete_by_id_and_by_hash(http, admin_server, ledger, issuer):
    first, second = issuer.registry(5), issuer.registry(5)  # same file, two ids
    for made in (first, second):
        ledger.publish(made.definition)
        await upload_registry(http, admin_server, ledger, made)
    for token in (None, UPLOADER, "nope"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.delete(admin_server.url + first.path, headers=headers) as resp:
            assert resp.status == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with http.delete(admin_server.url + first.path, headers=admin) as resp:
        assert (resp.status, await resp.text()) == (200, "Deleted.")
    async with http.get(admin_server.url + first.path) as resp:
        assert resp.status == 404
    async with http.get(admin_server.url + second.path) as resp:
        assert resp.status == 200  # the file stays for the other id
    async with http.delete(admin_server.url + first.path, headers=admin) as resp:
        assert resp.status == 404

    async with http.delete(f"{admin_server.url}/hash/{second.tails_hash}", headers=admin) as resp:
        assert resp.status == 200
    for path in (second.path, f"/hash/{second.tails_hash}"):
        async with http.get(admin_server.url + path) as resp:
            assert resp.status == 404
    assert list((admin_server.storage / "id").iterdir()) == []
    await upload_registry(http, admin_server, ledger, second)  # the same verified file may come back
    assert (admin_server.storage / "id" / quote(second.id, safe=":")).read_bytes() == second.tails
    assert ADMIN not in admin_server.log()


async def test_delete_is_off_by_default(http, server):
    data, h = random_tails(2)
    async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200
    async with http.delete(f"{server.url}/hash/{h}", headers={"Authorization": "Bearer anything"}) as resp:
        assert resp.status == 405
    async with http.get(f"{server.url}/hash/{h}") as resp:
        assert resp.status == 200


def test_allow_delete_needs_an_admin_hash(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tails_server", "--allow-delete", "--storage-path", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "admin-key-hash" in result.stderr

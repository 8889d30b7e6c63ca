"""A full disk: 507, nothing partial, reads keep working. Needs root to mount a small tmpfs."""

from __future__ import annotations

import os
import subprocess

import pytest
from support import random_tails

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_mid_upload_is_507_and_reads_go_on(new_server, small_disk, http):
    proc = new_server("--min-free-space", "0", storage=small_disk / "storage")
    first, first_hash = random_tails(24 * 1024)  # 3 MiB
    async with http.put(f"{proc.url}/hash/{first_hash}", data=first, headers=OCTET) as resp:
        assert resp.status == 200
    too_big, too_big_hash = random_tails(48 * 1024)  # 6 MiB: the disk fills while it is written
    async with http.put(f"{proc.url}/hash/{too_big_hash}", data=too_big, headers=OCTET) as resp:
        assert (resp.status, await resp.text()) == (507, "Storage is full.")
    assert not (proc.storage / "hash" / too_big_hash).exists()
    assert list((proc.storage / ".tmp").iterdir()) == []
    async with http.get(f"{proc.url}/hash/{first_hash}") as resp:
        assert resp.status == 200 and await resp.read() == first
    small, small_hash = random_tails(8)  # the space freed by the failed upload is usable again
    async with http.put(f"{proc.url}/hash/{small_hash}", data=small, headers=OCTET) as resp:
        assert resp.status == 200


async def test_min_free_space_refuses_uploads_before_reading_them(new_server, small_disk, http):
    proc = new_server("--min-free-space", "16MiB", storage=small_disk / "storage")  # more than the disk
    data, h = random_tails(8)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTET) as resp:
        assert resp.status == 507 and "nearly full" in await resp.text()
    async with http.get(f"{proc.url}/readyz") as resp:
        assert resp.status == 200  # reads are still served

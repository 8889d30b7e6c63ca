"""Where the index file lives: the filesystem under it, and whether other hosts may share it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tails_server.index import placement


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="util-linux's findmnt is not installed")
@pytest.mark.parametrize("where", ["tmp", "tmp-missing", "/dev/shm", "/proc", "/"])
def test_the_filesystem_is_the_one_findmnt_names(tmp_path: Path, where: str):
    path = {"tmp": tmp_path, "tmp-missing": tmp_path / "not" / "yet" / "index.sqlite3"}.get(where, Path(where))
    existing = path
    while not existing.exists():
        existing = existing.parent
    expected = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(existing)], capture_output=True, text=True,
                              check=True).stdout.split()[0]
    assert placement.filesystem_of(path) == expected


@pytest.mark.parametrize(("fstype", "shared"), [
    ("nfs4", True), ("ceph", True), ("fuse.juicefs", True), ("fuse.seaweedfs", True), ("fuse.sshfs", True),
    ("ext4", False), ("xfs", False), ("tmpfs", False), ("overlay", False), ("fuseblk", False),
    ("fuse.fuse-overlayfs", False), (None, False),
])
def test_which_filesystems_other_hosts_may_share(fstype: str | None, shared: bool):
    assert placement.shared(fstype) is shared


def test_no_warning_for_an_index_on_a_local_disk(tmp_path: Path):
    assert placement.filesystem_of(tmp_path) in ("ext4", "xfs", "btrfs", "tmpfs", "overlay")  # this test's premise
    assert placement.warning(tmp_path / ".index" / "index.sqlite3") is None


def test_mount_points_with_escaped_characters():
    assert placement._unescape(r"/mnt/two\040words/tab\011and\134slash") == "/mnt/two words/tab\tand\\slash"

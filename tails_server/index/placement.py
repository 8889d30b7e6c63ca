"""Where the index file lives: SQLite must not be shared between hosts over a network filesystem.

Servers on several hosts that share a POSIX store (JuiceFS, CephFS, NFS) and keep the default
`--index-path`, under `--storage-path`, would share one index file: SQLite's locks do not hold
across such mounts, and each server takes the others' file for one of another store and rebuilds
it under them. The start-up log says so, and /status names the filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystems whose files other hosts may open too; FUSE ones are reported as fuse.NAME, and most
# of those (JuiceFS, SeaweedFS, s3fs, sshfs, ceph-fuse...) reach a network store.
NETWORK = frozenset(("nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "9p", "afs", "lustre", "gpfs", "ocfs2", "gfs2"))
LOCAL_FUSE = frozenset(("fuse.fuse-overlayfs", "fuse.lxcfs", "fuse.bindfs", "fuse.squashfuse", "fuse.portal"))


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem holding `path` (its nearest existing parent), None if unknown."""
    target = path.resolve()
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:  # not Linux, or /proc not mounted
        return None
    best, fstype = "", None
    for line in lines:
        fields = line.split()
        try:
            mount_point = _unescape(fields[4])
            kind = fields[fields.index("-") + 1]
        except (IndexError, ValueError):
            continue
        inside = str(target) == mount_point or str(target).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, kind
    return fstype


def shared(fstype: str | None) -> bool:
    """Whether files on this filesystem type may be opened by other hosts at the same time."""
    return fstype is not None and (fstype in NETWORK or (fstype.startswith("fuse.") and fstype not in LOCAL_FUSE))


def warning(index_file: Path, fstype: str | None = None) -> str | None:
    """A start-up warning if the index file is on a filesystem other hosts may share, else None.

    `fstype`: the file's filesystem, when the caller has already read it (Catalog.open does).
    """
    fstype = fstype or filesystem_of(index_file)
    if not shared(fstype):
        return None
    return (
        f"the index file {os.fspath(index_file)} is on a {fstype} filesystem: if servers on other hosts use the same "
        "store, give each one its own --index-path on local disk (SQLite cannot be shared over such mounts; "
        "servers sharing one file rebuild it under each other)"
    )


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field

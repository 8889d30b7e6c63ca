"""Local POSIX storage: verified files published atomically, never overwritten, never seen partial.

Layout under the storage root:
  hash/<tailsHash>   the file itself, created with link() from a finished temp file
  id/<storage name>  a symlink to ../hash/<tailsHash>, one per revocation registry id
  .tmp/              uploads being received (each flock'ed by its writer while alive)
  .locks/            lock files that serialise publishers of one name across processes and hosts
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import portalocker

from .errors import BadRequest, Unavailable
from .ids import RevRegId, TailsHash

LOGGER = logging.getLogger(__name__)

LOCK_STRIPES = 64
IOV_MAX = 1024
HASH_DIR, ID_DIR, TMP_DIR, LOCK_DIR = "hash", "id", ".tmp", ".locks"


class TempFile:
    """An upload being received: a new file in the temp directory, flock'ed while its writer lives."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".part")
        self.fd: int | None = fd
        self.path = Path(name)
        os.fchmod(fd, 0o644)  # published files are world-readable, like any static file
        # The lock marks the file as live; a starting server removes only unlocked ones.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write_all(self, chunks: list[bytes]) -> None:
        """Write every chunk, in order, with as few system calls as the kernel allows (blocking)."""
        pending = [memoryview(c) for c in chunks if c]
        while pending:
            written = os.writev(self.fd, pending[:IOV_MAX])
            while written and pending:
                if written >= len(pending[0]):
                    written -= len(pending.pop(0))
                else:
                    pending[0] = pending[0][written:]
                    written = 0

    def sync(self) -> None:
        """Flush the data to stable storage before it may be published."""
        os.fdatasync(self.fd)  # data and size; mtime can be lost harmlessly

    def discard(self) -> None:
        """Close and remove the file; safe to call more than once."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class StoredFile:
    """A published file opened for reading, with what a response needs to describe it."""

    file: BinaryIO
    size: int
    mtime: float
    tails_hash: TailsHash


class LocalStorage:
    """Tails files in one directory tree, safe to share between processes and hosts with POSIX locks."""

    def __init__(self, root: str | os.PathLike, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).absolute()
        self.lock_timeout = lock_timeout
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    def prepare(self) -> int:
        """Create the layout and remove temp files left by crashed writers; return how many."""
        for sub in (HASH_DIR, ID_DIR, TMP_DIR, LOCK_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        removed = 0
        for path in (self.root / TMP_DIR).iterdir():
            if _remove_if_unlocked(path):
                removed += 1
        if removed:
            LOGGER.info("removed %d unfinished upload(s) left by an earlier crash", removed)
        return removed

    def problem(self) -> str | None:
        """Why uploads or reads would fail now (missing or read-only directories), or None."""
        for sub, mode in ((HASH_DIR, os.R_OK | os.W_OK | os.X_OK), (ID_DIR, os.R_OK | os.W_OK | os.X_OK),
                          (TMP_DIR, os.W_OK | os.X_OK), (LOCK_DIR, os.W_OK | os.X_OK)):
            path = self.root / sub
            if not (path.is_dir() and os.access(path, mode)):
                return f"storage directory '{sub}' is missing or not writable"
        return None

    def free_bytes(self) -> int:
        """Bytes available to this process on the storage filesystem."""
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def temp_file(self) -> TempFile:
        """A fresh temp file on the same filesystem as the published names."""
        return TempFile(self.root / TMP_DIR)

    def has_hash(self, tails_hash: TailsHash) -> bool:
        """Whether a file is stored under this hash."""
        return (self.root / HASH_DIR / tails_hash.value).is_file()

    def has_id(self, rev_reg_id: RevRegId) -> bool:
        """Whether a file is published for this registry id (a dangling link does not count)."""
        tails_hash = self._target(rev_reg_id)
        return tails_hash is not None and self.has_hash(tails_hash)

    def open_hash(self, tails_hash: TailsHash) -> StoredFile | None:
        """Open the file stored under this hash (the caller closes it), or None.

        Opened on the calling thread: for a page-cached directory that is a few microseconds,
        cheaper than a hop to a worker thread.
        """
        try:
            file = open(self.root / HASH_DIR / tails_hash.value, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        st = os.fstat(file.fileno())
        return StoredFile(file, st.st_size, st.st_mtime, tails_hash)

    def open_id(self, rev_reg_id: RevRegId) -> StoredFile | None:
        """Open the file published for this registry id (the caller closes it), or None."""
        tails_hash = self._target(rev_reg_id)
        return self.open_hash(tails_hash) if tails_hash else None

    def _target(self, rev_reg_id: RevRegId) -> TailsHash | None:
        """The hash an id's symlink points at; anything unexpected counts as absent."""
        try:
            target = os.readlink(self.root / ID_DIR / rev_reg_id.storage_name)
        except OSError:
            return None
        prefix = f"../{HASH_DIR}/"
        if not target.startswith(prefix):
            return None
        try:
            return TailsHash.parse(target[len(prefix):])
        except BadRequest:
            return None

    def id_links(self) -> Iterator[tuple[Path, str]]:
        """Every link in the id directory with the name of the hash file it points at."""
        for entry in os.scandir(self.root / ID_DIR):
            try:
                target = os.readlink(entry.path)
            except OSError:  # not a symlink: not ours
                continue
            yield Path(entry.path), target.rsplit("/", 1)[-1]

    def list_ids(self) -> list[RevRegId]:
        """Every registry id with a published file, sorted."""
        ids = []
        for entry in os.scandir(self.root / ID_DIR):
            try:
                ids.append(RevRegId.from_storage_name(entry.name))
            except (BadRequest, UnicodeDecodeError):
                LOGGER.warning("ignoring unexpected entry in the id directory: %r", entry.name)
        return sorted(ids, key=str)

    async def publish_hash(self, temp: TempFile, tails_hash: TailsHash) -> bool:
        """Publish a verified temp file under its hash; False if that hash is already stored."""
        return await self._locked(tails_hash.value, self._link_hash, temp, tails_hash)

    async def publish_id(self, temp: TempFile, rev_reg_id: RevRegId, tails_hash: TailsHash) -> bool:
        """Publish a verified temp file for a registry id; False if the id already has a file."""
        return await self._locked(rev_reg_id.value, self._link_id, temp, rev_reg_id, tails_hash)

    async def delete_id(self, rev_reg_id: RevRegId) -> bool:
        """Remove a registry id's link (its file stays for other names); False if absent."""
        return await self._locked(rev_reg_id.value, self._unlink_id, rev_reg_id)

    async def delete_hash(self, tails_hash: TailsHash) -> bool:
        """Remove a file and every id pointing at it (ids first, so none dangles); False if absent."""
        return await self._locked(tails_hash.value, self._unlink_hash, tails_hash)

    def _unlink_id(self, rev_reg_id: RevRegId) -> bool:
        try:
            (self.root / ID_DIR / rev_reg_id.storage_name).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.root / ID_DIR)
        return True

    def _unlink_hash(self, tails_hash: TailsHash) -> bool:
        if not self.has_hash(tails_hash):
            return False
        for link, target in self.id_links():
            if target == tails_hash.value:
                link.unlink(missing_ok=True)
        _fsync_dir(self.root / ID_DIR)
        with contextlib.suppress(FileNotFoundError):
            (self.root / HASH_DIR / tails_hash.value).unlink()
        _fsync_dir(self.root / HASH_DIR)
        return True

    async def _locked(self, name: str, action, *args) -> bool:
        """Run `action` in a worker thread holding the stripe's in-process and file locks.

        POSIX locks belong to a process, so an asyncio.Lock keeps coroutines of one process
        apart while the file lock keeps processes and hosts apart.
        """
        stripe = zlib.crc32(name.encode()) % LOCK_STRIPES
        async with self._locks[stripe]:
            return await asyncio.get_running_loop().run_in_executor(None, self._with_file_lock, stripe, action, args)

    def _with_file_lock(self, stripe: int, action, args: tuple) -> bool:
        lock_path = self.root / LOCK_DIR / f"{stripe:02x}.lock"
        # Non-blocking tries with a short poll, so a stuck holder elsewhere cannot pin this thread forever.
        lock = portalocker.Lock(
            lock_path, mode="a", timeout=self.lock_timeout, check_interval=0.01,
            flags=portalocker.LOCK_EX | portalocker.LOCK_NB,
        )
        try:
            lock.acquire()
        except portalocker.LockException:
            raise Unavailable(f"Storage is busy: no lock within {self.lock_timeout:g} s.") from None
        try:
            return action(*args)
        finally:
            lock.release()

    def _link_hash(self, temp: TempFile, tails_hash: TailsHash) -> bool:
        """link() creates the name atomically and fails if it exists: no overwrite, no partial file."""
        if not _link_new(temp.path, self.root / HASH_DIR / tails_hash.value):
            return False
        _fsync_dir(self.root / HASH_DIR)
        return True

    def _link_id(self, temp: TempFile, rev_reg_id: RevRegId, tails_hash: TailsHash) -> bool:
        """Make sure the content exists under its hash, then point the id at it.

        Both names are created before either directory is synced: on a journaling filesystem
        the first fsync commits both, so an id costs one commit, not two. A crash in between
        can at worst leave a symlink to nothing, which counts as absent and is replaced here.
        """
        if self.has_id(rev_reg_id):
            return False
        link = self.root / ID_DIR / rev_reg_id.storage_name
        new_content = _link_new(temp.path, self.root / HASH_DIR / tails_hash.value)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()  # a dangling link left by a crash; we hold this id's lock
        os.symlink(f"../{HASH_DIR}/{tails_hash.value}", link)
        if new_content:
            _fsync_dir(self.root / HASH_DIR)
        _fsync_dir(link.parent)
        return True


def _link_new(source: Path, name: Path) -> bool:
    """Create `name` as a hard link to `source`; False if the name exists (never overwritten)."""
    try:
        os.link(source, name)
    except FileExistsError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    """Persist a directory entry (the new name) across a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _remove_if_unlocked(path: Path) -> bool:
    """Remove a temp file whose writer is gone (its flock was released when the process died)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
        return True
    except (BlockingIOError, FileNotFoundError):
        return False
    finally:
        os.close(fd)

"""Local POSIX storage: verified files published atomically, never overwritten, never seen partial.

Layout under the storage root:
  hash/<tailsHash>   the file itself, created with link() from a finished temp file
  id/<storage name>  a symlink to ../hash/<tailsHash>, one per revocation registry id
  .tmp/              uploads being received (each flock'ed by its writer while alive)
  .locks/            lock files that serialise publishers of one name across processes and hosts
  .journal/          notes of changed names, read by other servers' indexes (see journal.py)

Several servers may share the root over a filesystem whose flock() and link() work across
clients (a local disk, JuiceFS, CephFS, NFSv4): the lock files and link()'s EEXIST decide races.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

import portalocker

from ..errors import BadRequest, Unavailable
from ..ids import RevRegId, TailsHash
from .base import HASH, ID, QUARANTINE, Entry, Listed, Name, Spool, Storage, StoredFile, TempFile
from .journal import LocalJournal

LOGGER = logging.getLogger(__name__)

LOCK_STRIPES = 64
FALLBACK_CHUNK = 1 << 18
HASH_DIR, ID_DIR, TMP_DIR, LOCK_DIR, JOURNAL_DIR = HASH, ID, ".tmp", ".locks", ".journal"
SCAN_BATCH = 2000


def cached_read(fd: int, size: int, offset: int) -> bytearray | None:
    """What the page cache holds of the range, read on the event loop without waiting for the disk
    (RWF_NOWAIT); None when none of it is cached, or where the kernel cannot say. The buffer is
    the caller's (no copy): transports keep it until it is sent."""
    buffer = bytearray(size)
    got = cached_read_into(fd, buffer, offset)
    if got < size and got:  # partly cached: take what is there
        del buffer[got:]
    return buffer if got else None


def cached_read_into(fd: int, buffer: bytearray | memoryview, offset: int) -> int:
    """Bytes of the range the page cache holds, read into `buffer` without waiting for the disk; 0 for none."""
    global _NOWAIT
    if _NOWAIT is None:
        return 0
    try:
        return os.preadv(fd, [buffer], offset, _NOWAIT)
    except BlockingIOError:
        return 0
    except OSError:  # this kernel or filesystem cannot: every read goes to a thread from now on
        _NOWAIT = None
        return 0


_NOWAIT = getattr(os, "RWF_NOWAIT", None)


class LocalFile(StoredFile):
    """A stored file open on local disk: the kernel sends it with sendfile."""

    def __init__(self, file: BinaryIO, size: int, mtime: float, tails_hash: TailsHash) -> None:
        self.file, self.size, self.mtime, self.tails_hash = file, size, mtime, tails_hash

    def local_file(self) -> BinaryIO:
        return self.file

    async def chunks(self, offset: int, count: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        end = offset + count
        while offset < end:
            size = min(FALLBACK_CHUNK, end - offset)
            chunk = cached_read(self.file.fileno(), size, offset)
            if chunk is None:  # not all in the page cache: a thread waits for the disk
                chunk = await loop.run_in_executor(None, os.pread, self.file.fileno(), size, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    async def close(self) -> None:
        self.file.close()


class LocalStorage(Storage):
    """Tails files in one directory tree, safe to share between processes and hosts with POSIX locks."""

    kind = "local"

    def __init__(self, root: str | os.PathLike, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).absolute()
        self.lock_timeout = lock_timeout
        self.spool = Spool(self.root / TMP_DIR)
        self.journal = LocalJournal(self.root / JOURNAL_DIR)
        self._hash_prefix = f"{self.root}/{HASH_DIR}/"  # downloads build paths by concatenation, not pathlib
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    def describe(self) -> str:
        return str(self.root)

    def prepare(self) -> int:
        """Create the layout and remove temp files left by crashed writers; return how many."""
        for sub in (HASH_DIR, ID_DIR, LOCK_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self.spool.prepare()

    async def start(self) -> None:
        self.prepare()

    async def problem(self) -> str | None:
        return await asyncio.get_running_loop().run_in_executor(None, self._problem)

    def _problem(self) -> str | None:
        """Missing or read-only directories, or None."""
        for sub, mode in ((HASH_DIR, os.R_OK | os.W_OK | os.X_OK), (ID_DIR, os.R_OK | os.W_OK | os.X_OK),
                          (TMP_DIR, os.W_OK | os.X_OK), (LOCK_DIR, os.W_OK | os.X_OK)):
            path = self.root / sub
            if not (path.is_dir() and os.access(path, mode)):
                return f"storage directory '{sub}' is missing or not writable"
        return None

    # Reads run on the calling thread: for a page-cached directory an open() or readlink() is
    # a few microseconds, cheaper than a hop to a worker thread.

    async def open(self, name: Name) -> LocalFile | None:
        return self.open_now(name)

    def hash_path(self, value: str) -> str:
        """Where the file of a (parsed) tails hash lives."""
        return self._hash_prefix + value

    def open_now(self, name: Name) -> LocalFile | None:
        """`open` for the front door, which answers plain downloads without a coroutine."""
        tails_hash = name if isinstance(name, TailsHash) else self.target(name)
        if tails_hash is None:
            return None
        try:
            file = open(self._hash_prefix + tails_hash.value, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        st = os.fstat(file.fileno())
        return LocalFile(file, st.st_size, st.st_mtime, tails_hash)

    async def stat(self, name: Name) -> Entry | None:
        return self.stat_now(name)

    def stat_now(self, name: Name) -> Entry | None:
        """`stat` for synchronous callers (maintenance commands)."""
        tails_hash = name if isinstance(name, TailsHash) else self.target(name)
        if tails_hash is None:
            return None
        try:
            st = os.stat(self._hash_prefix + tails_hash.value)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Entry(name, tails_hash, st.st_size, st.st_mtime)

    async def scan(self, prefix: str) -> AsyncIterator[list[Listed]]:
        listed = self._scan_hashes() if prefix == HASH else self._scan_ids()
        loop = asyncio.get_running_loop()
        while batch := await loop.run_in_executor(None, lambda: list(itertools.islice(listed, SCAN_BATCH))):
            yield batch

    def _scan_hashes(self) -> Iterator[Listed]:
        with os.scandir(self.root / HASH_DIR) as entries:
            for entry in entries:
                try:
                    tails_hash, st = TailsHash.parse(entry.name), entry.stat()
                except (BadRequest, FileNotFoundError):
                    continue
                yield Listed(tails_hash, tails_hash, st.st_size, st.st_mtime)

    def _scan_ids(self) -> Iterator[Listed]:
        for link, target in self.id_links():
            try:
                yield Listed(RevRegId.from_storage_name(link.name), TailsHash.parse(target))
            except (BadRequest, UnicodeDecodeError):
                LOGGER.warning("ignoring unexpected entry in the id directory: %r", link.name)

    def target(self, rev_reg_id: RevRegId) -> TailsHash | None:
        """The hash an id's symlink points at; anything unexpected counts as absent."""
        try:
            target = os.readlink(f"{self.root}/{ID_DIR}/{rev_reg_id.storage_name}")
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

    async def put_if_absent(self, name: Name, temp: TempFile, tails_hash: TailsHash) -> bool:
        if isinstance(name, TailsHash):
            return await self._locked(name.value, self._link_hash, temp, name)
        return await self._locked(name.value, self._link_id, temp, name, tails_hash)

    async def delete(self, name: Name) -> bool:
        if isinstance(name, TailsHash):
            return await self._locked(name.value, self._unlink_hash, name)
        return await self._locked(name.value, self._unlink_id, name)

    async def quarantine(self, tails_hash: TailsHash) -> None:
        await self._locked(tails_hash.value, self._move_aside, tails_hash)

    def _move_aside(self, tails_hash: TailsHash) -> bool:
        (self.root / QUARANTINE).mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.root / HASH_DIR / tails_hash.value, self.root / QUARANTINE / tails_hash.value)
        return True

    def _unlink_id(self, rev_reg_id: RevRegId) -> bool:
        try:
            (self.root / ID_DIR / rev_reg_id.storage_name).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.root / ID_DIR)
        return True

    def _unlink_hash(self, tails_hash: TailsHash) -> bool:
        try:
            (self.root / HASH_DIR / tails_hash.value).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.root / HASH_DIR)
        return True

    async def _locked(self, name: str, action, *args) -> bool:
        """Run `action` in a worker thread holding the stripe's in-process and file locks.

        POSIX locks belong to a process, so an asyncio.Lock keeps coroutines of one process
        apart while the file lock keeps processes and hosts apart.
        """
        stripe = _stripe(name)
        async with self._locks[stripe]:
            return await asyncio.get_running_loop().run_in_executor(None, self._with_file_lock, name, action, args)

    def lock_file(self, name: str) -> Path:
        """The file whose flock() guards `name` across processes and hosts."""
        return self.root / LOCK_DIR / f"{_stripe(name):02x}.lock"

    def _with_file_lock(self, name: str, action, args: tuple) -> bool:
        lock_path = self.lock_file(name)
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
        if self.stat_now(rev_reg_id) is not None:
            return False
        link = self.root / ID_DIR / rev_reg_id.storage_name
        target = f"../{HASH_DIR}/{tails_hash.value}"
        new_content = _link_new(temp.path, self.root / HASH_DIR / tails_hash.value)
        try:
            os.symlink(target, link)  # fails if the name exists: a link is never replaced blindly
            created = True
        except FileExistsError:
            # Only a dangling link is replaced (we hold this id's lock); one that resolves wins,
            # even if this host's metadata cache hid it from the check above.
            created = self.stat_now(rev_reg_id) is None
            if created:
                link.unlink(missing_ok=True)
                os.symlink(target, link)
        if new_content:
            _fsync_dir(self.root / HASH_DIR)
        if created:
            _fsync_dir(link.parent)
        return created


def _stripe(name: str) -> int:
    return zlib.crc32(name.encode()) % LOCK_STRIPES


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

"""The index's SQLite file: every stored name, substring-searchable, in bounded memory.

One row per name (a tails hash or a registry id) in `names`; an FTS5 trigram table over it
answers substring queries from an index rather than a scan. Every query here costs
O(log N + answer): pages walk an index from a cursor, never an OFFSET.

Connections are per thread (SQLite's rule) and the page cache per connection is small, so
memory does not grow with the store. WAL mode lets readers run beside the one writer, and
several processes of one host (workers) share the file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import portalocker

LOGGER = logging.getLogger(__name__)
SCHEMA_VERSION = 1
CACHE_KIB = 2 << 10  # page cache per connection: queries barely gain from more (the OS caches the file)
SCAN_CACHE_KIB = 8 << 10  # the writer's while it scans: a full build is ~10% faster than with 2 MiB
BUSY_MS = 10_000  # a writer waits this long for another process's transaction
MATCH_STEPS = 2_000_000  # SQLite VM steps a /match query may take before it falls back to a window
SCAN_WINDOW = 50_000  # names a windowed /match examines per request
QUERY_TRIGRAMS = 8  # at most this many trigrams of a substring are looked up; instr() checks the rest
MERGE_PAGES = 500  # pages of full-text segments merged per step after a scan (~0.2 s)
PROBE, RARE = 1000, 10  # names counted per trigram to find a rare one; one below RARE ends the search
# Substrings holding these take the windowed scan, never the full-text query: an earlier GLOB
# form with them escaped as classes ([[]) segfaulted SQLite 3.40 (found by the API fuzz test).
QUERY_SPECIAL = '*?[]"'

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names(
    rowid INTEGER PRIMARY KEY,       -- /match answers in this order (oldest first) and pages by it
    name TEXT NOT NULL UNIQUE,       -- a tails hash, or a registry id as clients write it
    hash TEXT NOT NULL,              -- the file the name stands for (a hash stands for itself)
    is_id INTEGER NOT NULL,
    size INTEGER, mtime REAL,        -- files only
    tag TEXT,                        -- files only: how the store lists an id naming this file (S3 ETag)
    gen INTEGER NOT NULL             -- the full scan that last saw it (see Writer.finish_scan)
);
CREATE INDEX IF NOT EXISTS names_by_hash ON names(is_id, hash);
CREATE INDEX IF NOT EXISTS names_by_tag ON names(tag) WHERE tag IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS names_fts USING fts5(
    name, content='names', content_rowid='rowid', tokenize='trigram case_sensitive 1', detail=none);
-- New rows reach names_fts in bulk (Writer.apply): one statement per batch is about twice as fast.
CREATE TRIGGER IF NOT EXISTS names_added AFTER INSERT ON names BEGIN
    UPDATE meta SET value = value + 1 WHERE key = CASE new.is_id WHEN 1 THEN 'ids' ELSE 'files' END;
END;
CREATE TRIGGER IF NOT EXISTS names_removed AFTER DELETE ON names BEGIN
    INSERT INTO names_fts(names_fts, rowid, name) VALUES ('delete', old.rowid, old.name);
    UPDATE meta SET value = value - 1 WHERE key = CASE old.is_id WHEN 1 THEN 'ids' ELSE 'files' END;
END;
-- Names this host is changing in the store: checked against it if their process died.
CREATE TABLE IF NOT EXISTS pending(name TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL, since REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pending_by_name ON pending(name);
-- Recent deletions: a full scan that listed a name before it was deleted must not bring it back.
CREATE TABLE IF NOT EXISTS removed(name TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
"""

INITIAL_META = {"schema": SCHEMA_VERSION, "files": 0, "ids": 0, "gen": 0, "complete": 0, "synced_until": ""}


@dataclass(frozen=True)
class Row:
    """A name as the index holds it."""

    name: str
    tails_hash: str
    is_id: bool
    size: int | None = None
    mtime: float | None = None
    tag: str | None = None


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the settings every user of the file needs."""
    conn = sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; the store is the truth after a power loss
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute("PRAGMA temp_store=FILE")
    return conn


def create(path: Path, store: str) -> None:
    """Make the file and its tables if missing; recreate it if unreadable or of another store or schema.

    Workers start together: one at a time checks the file (under a lock file beside it), so none
    removes a file another is building, and a file busy in another process is never taken for a
    damaged one -- that error is raised, not repaired.
    """
    if sqlite3.sqlite_version_info < (3, 34):
        raise RuntimeError(f"the index needs SQLite 3.34 or newer (FTS5 trigrams); Python here has {sqlite3.sqlite_version}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with portalocker.Lock(f"{path}.open", mode="a", timeout=BUSY_MS / 1000, check_interval=0.05):
        try:
            _create(path, store)
        except sqlite3.DatabaseError as exc:  # not a database, or damaged: the store has everything it held
            if _busy(exc):
                raise
            LOGGER.warning("index file %s is unusable (%s): rebuilding it from the store", path, exc)
            _remove(path)
            _create(path, store)


def _busy(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite gave up waiting for another connection (BUSY or LOCKED), not found damage."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _create(path: Path, store: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        with _transaction(conn):
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            for key, value in {**INITIAL_META, "store": store, "origin": os.urandom(6).hex()}.items():
                conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            found = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('schema', 'store')").fetchall())
        if found != {"schema": SCHEMA_VERSION, "store": store}:
            LOGGER.warning("index file %s belongs to another store or version: rebuilding it", path)
            conn.close()
            _remove(path)
            _create(path, store)
    finally:
        conn.close()


def _statements(script: str) -> Iterator[str]:
    """The script's statements one by one (triggers hold semicolons of their own)."""
    pending = ""
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        pending += line + "\n"
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction; inside one already open (a group, see Writer.grouped), a savepoint."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO part")
            conn.execute("RELEASE part")
            raise
        conn.execute("RELEASE part")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Reader:
    """Queries; one per thread."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.conn.execute("PRAGMA query_only=1")

    def meta(self) -> dict:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def match(self, substring: str, after: int, limit: int) -> tuple[list[str], int | None]:
        """Names containing `substring` with rowid > `after`, and the cursor to go on from (None at the end).

        Three or more characters use the trigram index. Shorter ones, queries whose trigrams are
        all common but rarely adjacent, and substrings with GLOB's special characters examine a
        window of SCAN_WINDOW names instead, so one request never walks the whole index; the
        cursor then points past the window.
        """
        if len(substring) >= 3 and not any(c in QUERY_SPECIAL for c in substring):
            trigrams = _spread_trigrams(substring)
            chosen = self._selective(trigrams)
            if chosen is None:
                return [], None  # a trigram no name holds: nothing can match
            query = " AND ".join(f'"{t}"' for t in chosen or trigrams)
            rows = self._bounded(
                "SELECT rowid, name FROM names_fts WHERE names_fts MATCH ? AND rowid > ? AND instr(name, ?) > 0 "
                "ORDER BY rowid LIMIT ?",
                (query, after, substring, limit + 1),
            )
            if rows is not None:
                return _page(rows, limit)
        window = "SELECT rowid, name FROM names WHERE instr(name, ?) > 0 AND rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        end = after + SCAN_WINDOW
        rows = self.conn.execute(window, (substring, after, end, limit + 1)).fetchall()
        names, cursor = _page(rows, limit)
        if cursor is None and self.conn.execute("SELECT 1 FROM names WHERE rowid > ? LIMIT 1", (end,)).fetchone():
            cursor = end  # the window ended before the index did
        return names, cursor

    def _selective(self, trigrams: list[str]) -> list[str] | None:
        """The one or two rarest trigrams (counted up to PROBE names each); None if one is in no name.

        Checking the names of one short row list with instr() is cheapest, and intersecting two
        short lists next; ANDing in a common trigram (":3:", "CL:", in every id) costs a walk of
        its long list. Probing stops at a trigram in fewer than RARE names, or once names that
        hold both rarest by chance are expected to be fewer than one (a * b < N for random
        trigrams), so a selective query costs one or two probes at any N. An empty list means
        every trigram is common.
        """
        best: list[tuple[int, str]] = []
        for trigram in trigrams:
            limit = best[1][0] if len(best) == 2 else PROBE  # counted only as far as it could still win
            count = self.conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM names_fts WHERE names_fts MATCH ? LIMIT ?)", (f'"{trigram}"', limit)
            ).fetchone()[0]
            if count == 0:
                return None
            if count < limit:
                best = sorted([*best, (count, trigram)])[:2]
            if best and best[0][0] < RARE:
                return [best[0][1]]  # few enough names to check each
            if len(best) == 2 and best[0][0] * best[1][0] < self._names():
                break
        return [trigram for _, trigram in best]

    def _names(self) -> int:
        """How many names are indexed (kept in meta, so O(1))."""
        (total,) = self.conn.execute("SELECT coalesce(sum(value), 0) FROM meta WHERE key IN ('ids', 'files')").fetchone()
        return max(total, 1)

    def _bounded(self, sql: str, args: tuple) -> list | None:
        """Rows, or None if the query needed more than MATCH_STEPS steps."""
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1000
            return steps > MATCH_STEPS

        self.conn.set_progress_handler(count, 1000)
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                return None
            raise
        finally:
            self.conn.set_progress_handler(None, 0)

    def files_after(self, after: str, limit: int) -> list[Row]:
        """Up to `limit` files whose hash sorts after `after`, in hash order."""
        rows = self.conn.execute(
            "SELECT name, size, mtime FROM names WHERE is_id = 0 AND hash > ? ORDER BY hash LIMIT ?", (after, limit)
        ).fetchall()
        return [Row(name, name, False, size, mtime) for name, size, mtime in rows]

    def ids_of(self, hashes: Iterable[str]) -> dict[str, list[str]]:
        """The registry ids naming each hash."""
        found: dict[str, list[str]] = {}
        for name, tails_hash in self.conn.execute(
            "SELECT name, hash FROM names WHERE is_id = 1 AND hash IN (SELECT value FROM json_each(?))",
            (_json_list(hashes),),
        ):
            found.setdefault(tails_hash, []).append(name)
        return found

    def hashes_for_tags(self, tags: Iterable[str]) -> dict[str, str]:
        """Which stored file each pointer tag stands for (see Storage.pointer_tag)."""
        return dict(self.conn.execute(
            "SELECT tag, hash FROM names WHERE tag IN (SELECT value FROM json_each(?))", (_json_list(tags),)
        ).fetchall())

    def files_present(self, hashes: Iterable[str]) -> set[str]:
        return {row[0] for row in self.conn.execute(
            "SELECT hash FROM names WHERE is_id = 0 AND hash IN (SELECT value FROM json_each(?))", (_json_list(hashes),)
        )}

    def pending(self) -> list[tuple[str, int, str]]:
        return self.conn.execute("SELECT DISTINCT name, pid, started FROM pending").fetchall()

    def rows(self, after: int, limit: int) -> list[tuple[int, Row]]:
        """Every row in rowid order, for comparisons with the store."""
        return [
            (rowid, Row(name, h, bool(is_id), size, mtime, tag))
            for rowid, name, h, is_id, size, mtime, tag in self.conn.execute(
                "SELECT rowid, name, hash, is_id, size, mtime, tag FROM names WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            )
        ]


class Writer:
    """Changes; one connection, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)

    def meta(self) -> dict:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values) -> None:
        with _transaction(self.conn):
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    def grouped(self, writes: list[Callable[[Writer], Any]]) -> list[tuple[bool, Any]]:
        """Run writes in one transaction, each undone alone if it fails: (True, result) or (False, error) each."""
        outcomes: list[tuple[bool, Any]] = []
        try:
            with _transaction(self.conn):
                for write in writes:
                    try:
                        with _transaction(self.conn):  # a savepoint: undone alone if the write fails
                            result = write(self)
                        outcomes.append((True, result))
                    except Exception as exc:
                        if not self.conn.in_transaction:  # SQLite gave up the whole transaction (a full disk, I/O)
                            raise
                        outcomes.append((False, exc))
        except Exception as exc:  # nothing of the group is stored
            return [(False, exc)] * len(writes)
        return outcomes

    def begin(self, names: list[str]) -> None:
        """Note that this process is about to change these names in the store."""
        now, started = time.time(), process_start(os.getpid())
        with _transaction(self.conn):
            self.conn.executemany("INSERT INTO pending VALUES (?, ?, ?, ?)", [(n, os.getpid(), started, now) for n in names])

    def apply(self, present: list[Row], absent: list[str], done: list[str] = (), scan_started: float | None = None) -> None:
        """Record what the store holds: `present` rows stored, `absent` names gone; drop `done` pending notes.

        A full scan passes `scan_started`: names deleted since then stay deleted.
        """
        now = time.time()
        with _transaction(self.conn):
            gen = self.conn.execute("SELECT value FROM meta WHERE key = 'gen'").fetchone()[0]
            top = self.conn.execute("SELECT coalesce(max(rowid), 0) FROM names").fetchone()[0]
            self.conn.executemany(
                "INSERT INTO names(name, hash, is_id, size, mtime, tag, gen) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 "
                "WHERE NOT EXISTS (SELECT 1 FROM removed WHERE name = ?1 AND at >= ?8) "
                "ON CONFLICT(name) DO UPDATE SET hash = excluded.hash, size = coalesce(size, excluded.size), "
                "mtime = coalesce(mtime, excluded.mtime), tag = coalesce(excluded.tag, tag), gen = excluded.gen",
                [(r.name, r.tails_hash, int(r.is_id), r.size, r.mtime, r.tag, gen, scan_started or now + 1e9) for r in present],
            )
            # We hold the write lock: every row above `top` is one this transaction added.
            self.conn.execute("INSERT INTO names_fts(rowid, name) SELECT rowid, name FROM names WHERE rowid > ?", (top,))
            for name in absent:
                self.conn.execute("DELETE FROM names WHERE name = ?", (name,))
                self.conn.execute("INSERT OR REPLACE INTO removed VALUES (?, ?)", (name, now))
            pid = os.getpid()
            for name in done:
                self.conn.execute("DELETE FROM pending WHERE rowid IN (SELECT rowid FROM pending WHERE name = ? AND pid = ? LIMIT 1)", (name, pid))

    def orphan(self, names: list[str]) -> None:
        """This process no longer knows what became of these names: let the repair check them."""
        with _transaction(self.conn):
            self.conn.executemany("UPDATE pending SET pid = 0 WHERE name = ? AND pid = ?", [(n, os.getpid()) for n in names])

    def forget_pending(self, name: str, pid: int) -> None:
        with _transaction(self.conn):
            self.conn.execute("DELETE FROM pending WHERE name = ? AND pid = ?", (name, pid))

    def start_scan(self) -> int:
        """A new generation: rows the coming scan neither sees nor gets told of are dropped at its end."""
        self.conn.execute(f"PRAGMA cache_size=-{SCAN_CACHE_KIB}")
        with _transaction(self.conn):
            self.conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'gen'")
            return self.conn.execute("SELECT value FROM meta WHERE key = 'gen'").fetchone()[0]

    def finish_scan(self, gen: int, started: float, batch: int = 5000) -> int:
        """Drop rows of older generations (in batches, so uploads' writes interleave); how many (< batch: done)."""
        with _transaction(self.conn):
            stale = [r[0] for r in self.conn.execute("SELECT rowid FROM names WHERE gen < ? LIMIT ?", (gen, batch))]
            self.conn.executemany("DELETE FROM names WHERE rowid = ?", [(r,) for r in stale])
            if len(stale) < batch:
                self.conn.execute("DELETE FROM removed WHERE at < ?", (started - 3600,))
                self.conn.execute("UPDATE meta SET value = 1 WHERE key = 'complete'")
        if len(stale) < batch:  # back to the small cache, its memory given back
            self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.conn.execute("PRAGMA shrink_memory")
        return len(stale)

    def merge_step(self, pages: int = MERGE_PAGES) -> bool:
        """Merge some of the full-text index's segments; False once there is nothing left to merge.

        A scan leaves many small segments, and every trigram lookup visits each of them; merging
        in short steps (not 'optimize' at once) lets uploads' index writes go in between.
        """
        before = self.conn.total_changes
        with _transaction(self.conn):
            self.conn.execute("INSERT INTO names_fts(names_fts, rank) VALUES ('merge', ?)", (-pages,))
        return self.conn.total_changes - before > 1

    def close(self) -> None:
        self.conn.close()


def _spread_trigrams(substring: str) -> list[str]:
    """Up to QUERY_TRIGRAMS non-overlapping trigrams spread over the substring (instr() checks the rest)."""
    starts = range(0, len(substring) - 2, 3)
    if len(starts) > QUERY_TRIGRAMS:
        step = len(starts) / QUERY_TRIGRAMS
        starts = [starts[int(i * step)] for i in range(QUERY_TRIGRAMS)]
    return list(dict.fromkeys(substring[i:i + 3] for i in starts))


def _page(rows: list, limit: int) -> tuple[list[str], int | None]:
    if len(rows) > limit:
        return [name for _, name in rows[:limit]], rows[limit - 1][0]
    return [name for _, name in rows], None


def _json_list(items: Iterable[str]) -> str:
    return json.dumps(list(items))


def process_start(pid: int) -> str:
    """When a process started (so a reused pid is not taken for it), or '' if it is not running."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ""
        except PermissionError:
            pass
        return "?"


class ThreadConnections:
    """One Reader per thread, created on first use and closed together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[Reader] = []
        self._lock = threading.Lock()

    def get(self) -> Reader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = Reader(self.path)
            with self._lock:
                self._all.append(reader)
        return reader

    def close(self) -> None:
        with self._lock:
            for reader in self._all:
                reader.conn.close()
            self._all.clear()

"""The `tails-server` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__, client, logs, maintenance
from .auth import hash_token
from .config import ENV_PREFIX, Settings, load_settings, parse_size
from .errors import TailsError
from .storage import open_storage
from .workers import Supervisor

LOGGER = logging.getLogger("tails_server")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server (one process, or a supervisor and its workers) until interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["hash-api-key"]:
        return hash_api_key(args[1:])
    if args[:1] in (["verify"], ["import"], ["reindex"]):
        return maintain(args[0], args[1:])
    if args[:1] == ["upload"]:
        return client.upload(args[1:])
    if args[:1] == ["download"]:
        return client.download(args[1:])
    settings = load_settings(args)
    if settings.workers == 1:
        logs.configure(settings.log_level, settings.log_format)
        _announce(settings)
        _serve(settings)
        return 0
    logging.basicConfig(level=settings.log_level, format=logs.FORMAT)  # no threads before fork()
    if settings.log_format == "json":
        logging.getLogger().handlers[0].setFormatter(logs.JsonFormatter())
    _announce(settings)
    with _shared_metrics_dir():
        # aiohttp waits --shutdown-timeout for requests in flight, then as long again for those it ended.
        return Supervisor(settings.workers, lambda: _worker(settings), 2 * settings.shutdown_timeout + 5).run()


@contextlib.contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """Workers write metric values here so a scrape on any of them sums all (before any import of them)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tails-server-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def hash_api_key(args: list[str]) -> int:
    """`tails-server hash-api-key`: read a token on stdin (or make one) and print its hash."""
    if args not in ([], ["--generate"]):
        print("usage: tails-server hash-api-key [--generate]  (the token is read from stdin)", file=sys.stderr)
        return 2
    if args:
        token = secrets.token_urlsafe(32)
        print(f"token: {token}", file=sys.stderr)
    else:
        token = sys.stdin.readline().strip()
        if not token:
            print("hash-api-key: no token on stdin", file=sys.stderr)
            return 2
    print(hash_token(token))
    return 0


def maintain(command: str, args: list[str]) -> int:
    """`tails-server verify [--quarantine]`, `import DIR` and `reindex`; exit 1 when anything is bad."""
    parser = argparse.ArgumentParser(prog=f"tails-server {command}")
    parser.add_argument("--storage-path", default=os.environ.get(ENV_PREFIX + "STORAGE_PATH", "tails-files"),
                        help=f"The server's storage directory [env {ENV_PREFIX}STORAGE_PATH; default %(default)s]")
    parser.add_argument("--storage", default=os.environ.get(ENV_PREFIX + "STORAGE"),
                        help=f"The server's S3 storage, s3://BUCKET/PREFIX, instead [env {ENV_PREFIX}STORAGE]")
    parser.add_argument("--s3-endpoint-url", default=os.environ.get(ENV_PREFIX + "S3_ENDPOINT_URL"),
                        help=f"S3 endpoint for stores other than AWS [env {ENV_PREFIX}S3_ENDPOINT_URL]")
    parser.add_argument("--index-path", default=os.environ.get(ENV_PREFIX + "INDEX_PATH"),
                        help=f"The server's index file [env {ENV_PREFIX}INDEX_PATH; default STORAGE_PATH/.index/index.sqlite3]")
    if command == "verify":
        parser.description = "Re-hash every stored file against its name and check every registry id link."
        parser.add_argument("--quarantine", action="store_true", help="Move bad files to .quarantine/ and remove their ids.")
    elif command == "reindex":
        parser.description = "Rebuild the metadata index from the store alone (a running server may go on serving)."
    else:
        parser.description = "Import a reference server's storage: files named by tails hash (checked) or by registry id."
        parser.add_argument("source", type=Path, help="The directory to import (its hash/ subdirectory too).")
        parser.add_argument("--max-tails-size", type=parse_size, default=Settings().max_tails_size)
    options = parser.parse_args(args)
    try:
        storage = open_storage(Path(options.storage_path), options.storage, options.s3_endpoint_url)
    except ValueError as exc:
        parser.error(str(exc))
    index_file = Settings(storage_path=Path(options.storage_path), index_path=Path(options.index_path) if options.index_path else None).index_file
    try:
        if command == "verify":
            report = maintenance.verify(storage, index_file, options.quarantine)
            report.print("verified")
        elif command == "reindex":
            report = maintenance.reindex(storage, index_file)
            print(f"indexed {', '.join(report.ok)}")
        else:
            if not options.source.is_dir():
                parser.error(f"not a directory: {options.source}")
            report = maintenance.import_directory(storage, index_file, options.source, options.max_tails_size)
            report.print("imported")
    except TailsError as exc:  # the store is unusable: say why, no traceback
        print(f"{command}: {exc.reason}", file=sys.stderr)
        return 3
    return 1 if report.bad else 0


def _announce(settings: Settings) -> None:
    if settings.ledgers:
        trust = "uploads by registry id are checked only on the trusted ledgers " + ", ".join(sorted(settings.ledgers))
    else:
        trust = (
            "uploads by registry id are checked on whatever ledger the uploader's genesis names, as the "
            "reference server does (use --ledger NAME=GENESIS_FILE to trust only your ledgers)"
        )
    writes = f"uploads need one of {len(settings.api_key_hashes)} API token(s)" if settings.api_key_hashes else "uploads need no token"
    LOGGER.info(
        "tails-server %s on %s://%s:%d with %d worker(s); %s; %s",
        __version__, settings.scheme, settings.host, settings.port, settings.workers, trust, writes,
    )


def _worker(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
    _serve(settings)


def _serve(settings: Settings) -> None:
    from .app import create_app  # imported late: the metrics mode is chosen when it first loads
    from .serving import run

    run(create_app(settings), settings)

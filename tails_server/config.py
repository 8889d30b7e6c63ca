"""Settings from command-line flags, falling back to TAILS_SERVER_* environment variables."""

from __future__ import annotations

import argparse
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .auth import load_hashes
from .limits.clients import parse_networks
from .limits.rates import parse_rate
from .trust import TrustedLedgers

ENV_PREFIX = "TAILS_SERVER_"
_SIZE = re.compile(r"(?i)\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class Settings:
    """Everything a server needs to start."""

    host: str = "127.0.0.1"
    port: int = 6543
    storage_path: Path = Path("tails-files")
    storage: str | None = None
    s3_endpoint_url: str | None = None
    s3_cache_size: int = 1 << 30
    s3_timeout: float = 7.0
    log_level: str = "INFO"
    log_format: str = "text"
    ledger_timeout: float = 8.0
    max_tails_size: int = 64 << 20
    max_genesis_size: int = 1 << 20
    pool_cache_size: int = 16
    workers: int = 1
    read_timeout: float = 60.0
    idle_timeout: float = 60.0
    shutdown_timeout: float = 8.0
    max_uploads: int = 64
    max_uploads_per_client: int = 8
    upload_min_rate: int = 10 << 10  # bytes/s, averaged, after pace.GRACE seconds
    upload_deadline: float = 300.0
    rate_limit_writes: str = "60/min"
    rate_limit_listings: str = "600/min"
    max_connections: int = 0  # 0: as many as the file descriptor limit allows, less a reserve
    max_connections_per_client: int = 256
    trusted_proxies: list[str] = field(default_factory=list)
    max_header_size: int = 8190
    min_free_space: int = 64 << 20
    ledgers: dict[str, Path] = field(default_factory=dict)
    api_key_hashes: list[str] = field(default_factory=list)
    allow_delete: bool = False
    admin_key_hashes: list[str] = field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_cache_size: int = 16 << 20  # per worker
    index_path: Path | None = None
    index_sync_interval: float = 5.0
    index_rescan_interval: float = 86400.0

    @property
    def index_file(self) -> Path:
        """The index's SQLite file: by default beside the uploads being received, on this host's disk."""
        return self.index_path or self.storage_path / ".index" / "index.sqlite3"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server TLS context from the certificate chain and key, if configured.

        Made once: the workers forked after the first call share it, and with it the key of its
        session tickets, so a client resumes its session on whichever worker takes its next
        connection (each worker with a context of its own refused the others' tickets).
        """
        if not self.tls_cert:
            return None
        context = self.__dict__.get("_ssl_context")  # not a field: a frozen dataclass keeps it beside them
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.options |= ssl.OP_NO_RENEGOTIATION  # a client's renegotiations cost the server a handshake each
            context.load_cert_chain(self.tls_cert, self.tls_key)
            self.__dict__["_ssl_context"] = context
        return context


def parse_size(text: str) -> int:
    """Bytes from '1048576', '64MiB', '8M', '512k' (binary units)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64MiB)")
    return int(match[1]) * _UNITS[match[2][:1].lower()]


def _positive(kind):
    def convert(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _ledger(text: str) -> tuple[str, Path]:
    name, sep, path = text.strip().partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9_-]{1,32}(:[a-z0-9_-]{1,32})?", name) or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=GENESIS_FILE with a did:indy namespace as NAME: {text!r}")
    return name, Path(path)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The server's command line; each flag's default comes from its environment variable."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="tails-server",
        description="Publish and serve AnonCreds / Indy revocation tails files. "
        f"Every option can also be set with an environment variable {ENV_PREFIX}<OPTION>; flags win.",
    )

    def option(flag: str, help: str, default, **kwargs) -> None:
        name = flag.lstrip("-").replace("-", "_")
        var = ENV_PREFIX + name.upper()
        parser.add_argument(flag, dest=name, default=env.get(var, default), help=f"{help} [env {var}; default %(default)s]", **kwargs)

    option("--host", "Address to listen on; use 0.0.0.0 to accept connections from other hosts.", defaults.host)
    option("--port", "TCP port to listen on.", defaults.port, type=_positive(int))
    option("--storage-path", "Directory for tails files; created on start. With --storage s3://..., it holds only uploads being received.", str(defaults.storage_path))
    option("--storage", "Keep tails files in S3-compatible object storage: s3://BUCKET/PREFIX (credentials and region from the standard AWS variables and files).", None)
    option("--s3-endpoint-url", "S3 endpoint for stores other than AWS, e.g. http://127.0.0.1:8333 (path-style addressing).", None)
    option("--s3-cache-size", "With S3: local disk kept for verified copies of downloaded files, served with sendfile; a deletion made elsewhere reaches them within 5 s (0 turns the cache off), e.g. 1GiB.", defaults.s3_cache_size, type=parse_size)
    option("--s3-timeout", "With S3: seconds one request may wait on object storage in all, however many calls it makes (each call is also bounded: 1 s to connect, 2 s per read, one retry); past it the request gets 503.", defaults.s3_timeout, type=_positive(float))
    option("--log-level", "Logging level.", defaults.log_level, type=str.upper, choices=LOG_LEVELS)
    option("--log-format", "text, or json: one JSON object per line, access lines included.", defaults.log_format, choices=["text", "json"])
    option("--ledger-timeout", "Seconds the whole ledger lookup of an upload may take (ACA-Py allows 10 per attempt).", defaults.ledger_timeout, type=_positive(float))
    option("--max-tails-size", "Largest tails file accepted (413 above), e.g. 64MiB.", defaults.max_tails_size, type=parse_size)
    option("--max-genesis-size", "Largest genesis part accepted (413 above), e.g. 1MiB.", defaults.max_genesis_size, type=parse_size)
    option("--workers", "Server processes sharing the port (SO_REUSEPORT); about one per CPU core for heavy download traffic.", defaults.workers, type=_positive(int))
    option("--max-uploads", "Uploads received at once per worker, each by a thread of its own; more get 503 (each holds up to ~2 MiB of buffers).", defaults.max_uploads, type=_positive(int))
    option("--max-uploads-per-client", "Uploads at once from one client address (IPv6: one /64) per worker; more get 429.", defaults.max_uploads_per_client, type=_positive(int))
    option("--upload-min-rate", "Slowest average upload body accepted after its first 10 s, in bytes a second (408 below; 0 turns it off), e.g. 10KiB.", defaults.upload_min_rate, type=parse_size)
    option("--upload-deadline", "Seconds a whole upload body may take (408 after).", defaults.upload_deadline, type=_positive(float))
    option("--rate-limit-writes", "Uploads and deletions per client address (IPv6: one /64) per worker, as COUNT/s, /min or /h, in bursts of up to COUNT; more get 429 with Retry-After (0: no limit).", defaults.rate_limit_writes)
    option("--rate-limit-listings", "/match and /index.json requests per client address per worker, as above. Downloads are never limited.", defaults.rate_limit_listings)
    option("--max-connections", "Connections open at once per worker; more get 503 at once (0: the file descriptor limit, raised to its hard limit at start, less a reserve for storage and ledgers).", defaults.max_connections, type=int)
    option("--max-connections-per-client", "Connections open at once per client address (IPv6: per /64) per worker; more get 503. Trusted proxies are exempt.", defaults.max_connections_per_client, type=_positive(int))
    parser.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        default=None,
        metavar="CIDR",
        help="A proxy or load balancer in front of this server (repeatable): the client address limits count by is then taken "
        f"from its Forwarded / X-Forwarded-For header. [env {ENV_PREFIX}TRUSTED_PROXY, comma-separated]",
    )
    option("--max-header-size", "Longest request line or header field accepted, in bytes.", defaults.max_header_size, type=_positive(int))
    option("--idle-timeout", "Seconds a connection may stay idle, take to send its request headers, or go without reading any of a download, before it is closed.", defaults.idle_timeout, type=_positive(float))
    option("--read-timeout", "Seconds an upload may send nothing before it is refused with 408.", defaults.read_timeout, type=_positive(float))
    option("--shutdown-timeout", "On SIGTERM or SIGINT: seconds the requests in flight get to finish; uploads still running then get 503, downloads as long again before they are cut off.", defaults.shutdown_timeout, type=_positive(float))
    option("--min-free-space", "Refuse uploads with 507 while storage has less free space than this, e.g. 64MiB.", defaults.min_free_space, type=parse_size)
    parser.add_argument(
        "--ledger",
        dest="ledgers",
        action="append",
        type=_ledger,
        default=None,
        metavar="NAME=GENESIS_FILE",
        help="Trust only this ledger (repeatable): an uploaded genesis must describe its validators, else 403; "
        "did:indy:NAME ids need no genesis part. Without it, the uploader's genesis is trusted, as by the "
        f"reference server. [env {ENV_PREFIX}LEDGER, comma-separated]",
    )
    parser.add_argument(
        "--api-key-hash",
        action="append",
        default=None,
        metavar="HASH",
        help="Require a token for uploads: the scrypt hash of an accepted token, from 'tails-server hash-api-key' "
        f"(repeatable). Reads stay public. [env {ENV_PREFIX}API_KEY_HASH, comma-separated]",
    )
    option("--api-keys-file", "File of accepted token hashes, one per line (# comments allowed).", None)
    parser.add_argument(
        "--allow-delete",
        action="store_true",
        default=env.get(ENV_PREFIX + "ALLOW_DELETE", "").lower() in ("1", "true", "yes"),
        help="Enable DELETE /{id} and /hash/{hash} for holders of an admin token (off by default: files are "
        f"immutable). [env {ENV_PREFIX}ALLOW_DELETE=true]",
    )
    parser.add_argument(
        "--admin-key-hash",
        action="append",
        default=None,
        metavar="HASH",
        help=f"Hash of an admin token for --allow-delete (from 'tails-server hash-api-key'; repeatable). [env {ENV_PREFIX}ADMIN_KEY_HASH, comma-separated]",
    )
    option("--tls-cert", "PEM certificate chain: serve HTTPS (mobile wallets accept only https tails URLs).", None)
    option("--tls-key", "PEM private key for --tls-cert.", None)
    option("--tls-cache-size", "With --tls-cert: memory per worker for the contents of small files (up to 256 KiB each) served over HTTPS, so that their downloads are encrypted from memory without reading the file each time (0 turns it off), e.g. 16MiB.", defaults.tls_cache_size, type=parse_size)
    option("--index-path", "SQLite file of the metadata index behind /match and /index.json (rebuilt from the store when missing). Servers on other hosts sharing one store each need their own, on local disk.", None)
    option("--index-sync-interval", "Seconds between reads of the store's change journal: uploads through other servers sharing the store appear in listings within this plus a few seconds.", defaults.index_sync_interval, type=_positive(float))
    option("--index-rescan-interval", "Seconds between full scans of the store that repair the index from it (0: never).", defaults.index_rescan_interval, type=float)
    option("--pool-cache-size", "Ledger pools kept open for reuse, keyed by genesis content.", defaults.pool_cache_size, type=_positive(int))
    return parser


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags (and the environment) into Settings; exits with a usage message on bad input."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    values = vars(parser.parse_args(argv))
    if values["log_format"] not in ("text", "json"):
        parser.error(f"invalid log format: {values['log_format']!r} (choose text or json)")
    if values["log_level"] not in LOG_LEVELS:  # argparse checks choices on flags, not on defaults
        parser.error(f"invalid log level: {values['log_level']!r} (choose from {', '.join(LOG_LEVELS)})")
    values["storage_path"] = Path(values["storage_path"])
    if values["storage"]:
        from .storage.s3 import MAX_SINGLE_PUT, parse_url  # the S3 client loads only when S3 is used

        try:
            parse_url(values["storage"])
        except ValueError as exc:
            parser.error(f"--storage: {exc}")
        if values["max_tails_size"] > MAX_SINGLE_PUT:  # each file is one conditional PutObject
            parser.error("--max-tails-size cannot exceed 5GiB with S3 storage (the largest single PUT)")
    elif values["s3_endpoint_url"]:
        parser.error("--s3-endpoint-url needs --storage s3://BUCKET/PREFIX")
    if values["ledgers"] is None:  # no --ledger flag: the environment's list (flags win)
        try:
            values["ledgers"] = [_ledger(item) for item in env.get(ENV_PREFIX + "LEDGER", "").split(",") if item.strip()]
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{ENV_PREFIX}LEDGER: {exc}")
    values["ledgers"] = dict(values["ledgers"])
    if values["trusted_proxies"] is None:
        values["trusted_proxies"] = [v for v in env.get(ENV_PREFIX + "TRUSTED_PROXY", "").split(",") if v.strip()]
    try:
        parse_networks(values["trusted_proxies"])
    except ValueError as exc:
        parser.error(f"--trusted-proxy: {exc}")
    for flag in ("rate_limit_writes", "rate_limit_listings"):
        try:
            parse_rate(values[flag])
        except ValueError as exc:
            parser.error(f"--{flag.replace('_', '-')}: {exc}")
    if int(values["max_connections"]) < 0:
        parser.error("--max-connections must be 0 (automatic) or more")
    direct = values.pop("api_key_hash")
    if direct is None:
        direct = env.get(ENV_PREFIX + "API_KEY_HASH", "").split(",")
    try:
        values["api_key_hashes"] = load_hashes(direct, [values.pop("api_keys_file")] if values.get("api_keys_file") else [])
    except (OSError, ValueError) as exc:
        parser.error(f"cannot use the API key hashes: {exc}")
    values.pop("api_keys_file", None)
    admin = values.pop("admin_key_hash")
    if admin is None:
        admin = env.get(ENV_PREFIX + "ADMIN_KEY_HASH", "").split(",")
    try:
        values["admin_key_hashes"] = load_hashes(admin, [])
    except ValueError as exc:
        parser.error(f"cannot use the admin key hashes: {exc}")
    if values["allow_delete"] and not values["admin_key_hashes"]:
        parser.error("--allow-delete needs at least one --admin-key-hash")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        parser.error("--tls-cert and --tls-key go together")
    values["index_path"] = Path(values["index_path"]) if values["index_path"] else None
    if values["index_rescan_interval"] < 0:
        parser.error("--index-rescan-interval must be 0 or more")
    for key in ("tls_cert", "tls_key"):
        values[key] = Path(values[key]) if values[key] else None
    settings = Settings(**values)
    try:
        settings.ssl_context()  # refuse a bad certificate or key now, not in every worker
    except (OSError, ssl.SSLError) as exc:
        parser.error(f"cannot use --tls-cert/--tls-key: {exc}")
    try:  # a bad genesis file stops the start here, with its reason

        TrustedLedgers.load(settings.ledgers)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot use --ledger: {exc}")
    return settings

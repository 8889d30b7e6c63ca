"""S3-compatible object storage: verified files published with one conditional PutObject each.

Layout under s3://BUCKET/PREFIX/:
  hash/<tailsHash>    the file, with its SHA-256 sent along for the store to check
  id/<storage name>   a small object whose body is the tails hash of the registry's file

`If-None-Match: *` makes the store itself decide create-if-absent, so any number of servers
may share one bucket with no lock: one PUT wins, every other gets 412 (409 for our clients).
Uploads are received and verified in a local spool directory first; nothing unverified is sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import base58
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import BadRequest, Unavailable
from ..ids import RevRegId, TailsHash
from .base import HASH, QUARANTINE, Entry, Listed, Name, Spool, Storage, StoredFile, TempFile, key_of
from .budget import ATTEMPTS, CONNECT, READ, READY_LIMIT, Budgeted
from .cache import FileCache
from .s3_journal import S3Journal

LOGGER = logging.getLogger(__name__)

CHUNK = 1 << 18
MAX_SINGLE_PUT = 5 << 30  # S3's limit for one PutObject
LIST_PAGE = 1000
CONFLICT_RETRIES = 3
SEEN_TTL = 5.0  # seconds a cached download trusts that its name still exists
SEEN_MAX = 100_000
MISSING = ("NoSuchKey",)  # from GET; a missing bucket is NoSuchBucket, an error


def parse_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` → (bucket, "PREFIX/"); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"expected s3://BUCKET/PREFIX, got {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The store failing is not the client's fault: log it and answer 503 so the client retries."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        LOGGER.error("object storage refused a request: %s", exc)
        raise Unavailable(f"Object storage error: {code}.") from None
    except (TimeoutError, BotoCoreError, OSError) as exc:
        LOGGER.error("object storage unreachable: %s", exc)
        raise Unavailable("Object storage is unreachable.") from None


def _code(exc: ClientError) -> tuple[int, str]:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0), exc.response.get("Error", {}).get("Code", "")


class S3File(StoredFile):
    """A stored object: its bytes are fetched (the requested range only) as they are sent."""

    def __init__(self, storage: S3Storage, key: str, size: int, mtime: float, tails_hash: TailsHash) -> None:
        self.storage, self.key = storage, key
        self.size, self.mtime, self.tails_hash = size, mtime, tails_hash

    async def chunks(self, offset: int, count: int) -> AsyncIterator[bytes]:
        if count <= 0:
            return
        extra = {} if (offset, count) == (0, self.size) else {"Range": f"bytes={offset}-{offset + count - 1}"}
        with store_errors():
            try:
                response = await self.storage.client.get_object(Bucket=self.storage.bucket, Key=self.key, **extra)
            except ClientError as exc:
                if _code(exc)[1] in MISSING:  # deleted since it was opened
                    raise Unavailable("The file was removed while being sent.") from None
                raise
        body = response["Body"]
        try:
            while chunk := await body.read(CHUNK):
                yield chunk
        finally:
            body.close()

    async def close(self) -> None:
        pass


class S3Storage(Storage):
    """Tails files as objects in one bucket under a prefix; safe to share between any number of servers."""

    kind = "s3"

    def __init__(self, url: str, endpoint_url: str | None, spool_dir: Path, cache: FileCache | None = None) -> None:
        self.url = url
        self.cache = cache
        self.bucket, self.prefix = parse_url(url)
        self.endpoint_url = endpoint_url
        self.spool = Spool(spool_dir)
        self.journal = S3Journal(self, store_errors)
        self.client = None
        self._exit = contextlib.AsyncExitStack()
        self._seen: dict[Name, tuple[float, Entry]] = {}  # name -> (trusted until, what the store said)

    def describe(self) -> str:
        return f"{self.url} at {self.endpoint_url or 'the default AWS endpoint'}"

    async def start(self) -> None:
        await super().start()
        if self.cache is not None:
            self.cache.prepare()
        session = get_session()  # credentials and region: AWS_* variables, ~/.aws files, instance roles
        config = Config(
            s3={"addressing_style": "path"} if self.endpoint_url else {},
            # The SHA-256 we computed anyway goes along as x-amz-checksum-sha256: the store checks
            # the body against it, so signing the body a second time would only cost a pass.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # One retry, short timeouts (see budget.py): a client (ACA-Py allows 10 s) gets a 503
            # it can retry rather than a hang while the store is away.
            retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            connect_timeout=CONNECT,
            read_timeout=READ,
            max_pool_connections=64,
        )
        region = session.get_config_variable("region") or "us-east-1"
        self.client = Budgeted(await self._exit.enter_async_context(
            session.create_client("s3", endpoint_url=self.endpoint_url, region_name=region, config=config)
        ))
        if problem := await self.problem():
            LOGGER.error("%s; uploads and downloads fail until it is fixed", problem)

    async def close(self) -> None:
        await self._exit.aclose()

    async def problem(self) -> str | None:
        if problem := self.spool.problem():
            return problem
        try:  # a listing under our prefix needs no more rights than the server uses anyway (no HeadBucket)
            async with asyncio.timeout(READY_LIMIT):
                await self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except ClientError as exc:
            return f"bucket {self.bucket!r} is not usable: {_code(exc)[1] or exc}"
        except (TimeoutError, BotoCoreError, OSError) as exc:
            return f"object storage is unreachable: {exc}"
        return None

    def _key(self, name: Name) -> str:
        return self.prefix + key_of(name)

    async def _probe(self, key: str) -> tuple[int, float] | None:
        """Size and modification time of an object, or None if it does not exist.

        A one-byte GET rather than HEAD: a HEAD's 404 cannot tell a missing object from a
        missing bucket, and a missing bucket must be a 503, not a 404 for every file.
        """
        with store_errors():
            try:
                response = await self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")
            except ClientError as exc:
                if _code(exc)[1] in MISSING:
                    return None
                raise
            async with response["Body"] as body:
                await body.read()
        content_range = response.get("ContentRange", "")
        size = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else response["ContentLength"]
        return size, response["LastModified"].timestamp()

    async def _pointer(self, rev_reg_id: RevRegId) -> TailsHash | None:
        """The hash an id object names; an unreadable one counts as absent."""
        key = self._key(rev_reg_id)
        with store_errors():
            try:
                response = await self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc)[1] in MISSING:
                    return None
                raise
            async with response["Body"] as body:
                text = await body.read(128)
        try:
            return TailsHash.parse(text.decode("ascii").strip())
        except (BadRequest, UnicodeDecodeError):
            LOGGER.warning("ignoring an unreadable id object: %s", key)
            return None

    async def open(self, name: Name) -> StoredFile | None:
        """The bytes may come from the local cache; whether the name exists is asked of the store,
        at most every SEEN_TTL seconds per name while its copy is cached (deletions are rare)."""
        if self.cache is not None and (seen := self._seen.get(name)) and seen[0] > time.monotonic():
            if cached := await self._cached(seen[1]):
                return cached
        entry = await self.stat(name)
        if entry is None:
            self._seen.pop(name, None)
            return None
        remote = S3File(self, self._key(entry.tails_hash), entry.size, entry.mtime, entry.tails_hash)
        if self.cache is None:
            return remote
        if len(self._seen) >= SEEN_MAX:
            self._seen.clear()
        self._seen[name] = (time.monotonic() + SEEN_TTL, entry)
        if cached := await self._cached(entry):
            return cached
        self.cache.fill_later(entry.tails_hash, entry.size, lambda: remote.chunks(0, entry.size))
        return remote

    async def _cached(self, entry: Entry) -> StoredFile | None:
        """The local copy of what the store holds under `entry`, if one of the right size exists."""
        cached = self.cache.open(entry.tails_hash, entry.mtime)
        if cached is not None and cached.size != entry.size:
            await cached.close()
            return None
        return cached

    async def stat(self, name: Name) -> Entry | None:
        tails_hash = name if isinstance(name, TailsHash) else await self._pointer(name)
        if tails_hash is None:
            return None
        found = await self._probe(self._key(tails_hash))
        if found is None:
            return None
        return Entry(name, tails_hash, *found)

    async def put_if_absent(self, name: Name, temp: TempFile, tails_hash: TailsHash) -> bool:
        digest = base58.b58decode(tails_hash.value)
        stored = await self._put_new(self._key(tails_hash), temp.path, digest, tails_hash)
        if isinstance(name, TailsHash):
            return stored
        # The content is in place (now or before: same hash, same bytes); the id names it.
        pointer = tails_hash.value.encode()
        return await self._put_new(self._key(name), pointer, hashlib.sha256(pointer).digest(), tails_hash)

    async def _put_new(self, key: str, body: Path | bytes, sha256: bytes, tails_hash: TailsHash) -> bool:
        """One conditional PutObject; False if the key exists. The store checks the body's SHA-256."""
        with store_errors():
            for _attempt in range(CONFLICT_RETRIES):
                try:
                    with contextlib.ExitStack() as files:
                        data = files.enter_context(open(body, "rb")) if isinstance(body, Path) else body
                        size = body.stat().st_size if isinstance(body, Path) else len(body)
                        await self.client.put_object(
                            Bucket=self.bucket, Key=key, Body=data, ContentLength=size,
                            ContentType="application/octet-stream", IfNoneMatch="*",
                            ChecksumSHA256=base64.b64encode(sha256).decode(),
                            Metadata={"tails-hash": tails_hash.value},
                        )
                    return True
                except ClientError as exc:
                    status, code = _code(exc)
                    if status == 412 or code == "PreconditionFailed":
                        return False
                    if status == 409 and code == "ConditionalRequestConflict":  # racing a create: ask again
                        continue
                    raise
            raise Unavailable("Object storage kept reporting conflicting writes; retry shortly.")

    async def scan(self, prefix: str) -> AsyncIterator[list[Listed]]:
        base = f"{self.prefix}{prefix}/"
        start_after = base
        while True:
            with store_errors():
                response = await self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, StartAfter=start_after, MaxKeys=LIST_PAGE)
            contents = response.get("Contents", [])
            if contents:
                yield [listed for obj in contents if (listed := _listed(prefix, obj["Key"][len(base):], obj)) is not None]
            if not contents or not response.get("IsTruncated"):
                return
            start_after = contents[-1]["Key"]

    def pointer_tag(self, tails_hash: TailsHash) -> str:
        """An id object's body is the hash, so its listed ETag is the body's MD5 (single PUT, no KMS)."""
        digest = hashlib.md5(tails_hash.value.encode(), usedforsecurity=False).hexdigest()
        return f'"{digest}"'

    async def delete(self, name: Name) -> bool:
        return await self._delete_key(self._key(name))

    async def quarantine(self, tails_hash: TailsHash) -> None:
        """Copied to PREFIX/.quarantine/<hash>, then deleted."""
        with store_errors():
            await self.client.copy_object(
                Bucket=self.bucket, Key=f"{self.prefix}{QUARANTINE}/{tails_hash.value}",
                CopySource={"Bucket": self.bucket, "Key": self._key(tails_hash)},
            )
        await self.delete(tails_hash)

    async def _delete_key(self, key: str) -> bool:
        if await self._probe(key) is None:
            return False
        with store_errors():
            await self.client.delete_object(Bucket=self.bucket, Key=key)
        return True


def _listed(prefix: str, rest: str, obj: dict) -> Listed | None:
    """What a listed object names; anything not in our layout is skipped with a warning."""
    try:
        if prefix == HASH:
            tails_hash = TailsHash.parse(rest)
            return Listed(tails_hash, tails_hash, obj["Size"], obj["LastModified"].timestamp())
        return Listed(RevRegId.from_storage_name(rest), None, tag=obj.get("ETag"))
    except (BadRequest, UnicodeDecodeError):
        LOGGER.warning("ignoring unexpected object in the store: %r", obj["Key"])
        return None

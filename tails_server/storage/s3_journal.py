"""The change journal on S3: one small object per note under PREFIX/journal/, listed from a time on.

A reader lists with StartAfter, so one poll costs one LIST plus one GET per new note, however
many files are stored. Pruning deletes old notes in batches of 1,000 (DeleteObjects).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from .journal import PAGE, Journal

if TYPE_CHECKING:
    from .s3 import S3Storage

READ_CONCURRENCY = 16


class S3Journal(Journal):
    """Notes as objects `PREFIX/journal/<time>-<origin>-<n>`; the prune mark is `PREFIX/journal.pruned`."""

    def __init__(self, storage: S3Storage, errors: Callable[[], AbstractContextManager]) -> None:
        self.storage = storage
        self.errors = errors  # the storage's mapping of store failures to 503

    @property
    def _base(self) -> str:
        return f"{self.storage.prefix}journal/"

    async def append(self, origin: str, names: list[str]) -> None:
        body = ("\n".join(names) + "\n").encode()
        with self.errors():
            await self.storage.client.put_object(
                Bucket=self.storage.bucket, Key=self._base + self.new_key(origin), Body=body, ContentType="text/plain"
            )

    async def since(self, start: str, limit: int = PAGE) -> list[tuple[str, list[str]]]:
        with self.errors():
            response = await self.storage.client.list_objects_v2(
                Bucket=self.storage.bucket, Prefix=self._base, StartAfter=self._base + start, MaxKeys=limit
            )
        keys = [obj["Key"] for obj in response.get("Contents", [])]
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(key: str) -> tuple[str, list[str]] | None:
            async with gate:
                text = await self._get(key)
            return None if text is None else (key[len(self._base):], [line for line in text.splitlines() if line])

        return [note for note in await asyncio.gather(*(read(key) for key in keys)) if note is not None]

    async def _get(self, key: str) -> str | None:
        with self.errors():
            try:
                response = await self.storage.client.get_object(Bucket=self.storage.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchKey":  # pruned meanwhile
                    return None
                raise
            async with response["Body"] as body:
                data = await body.read(1 << 16)
        return data.decode("utf-8", "replace")

    async def pruned_until(self) -> str:
        return ((await self._get(f"{self.storage.prefix}journal.pruned")) or "").strip()

    async def prune(self, before: str) -> int:
        marker = max(before, await self.pruned_until())
        with self.errors():
            await self.storage.client.put_object(
                Bucket=self.storage.bucket, Key=f"{self.storage.prefix}journal.pruned", Body=marker.encode() + b"\n"
            )
        removed = 0
        while True:
            with self.errors():
                response = await self.storage.client.list_objects_v2(Bucket=self.storage.bucket, Prefix=self._base, MaxKeys=PAGE)
            old = [{"Key": obj["Key"]} for obj in response.get("Contents", []) if obj["Key"][len(self._base):] < before]
            if not old:
                return removed
            with self.errors():
                await self.storage.client.delete_objects(Bucket=self.storage.bucket, Delete={"Objects": old, "Quiet": True})
            removed += len(old)

"""Storage backends behind one small interface (see base.Storage)."""

from __future__ import annotations

from pathlib import Path

from .base import HASH, ID, Entry, Name, Storage, StoredFile, TempFile
from .local import LocalStorage

__all__ = ["HASH", "ID", "Entry", "LocalStorage", "Name", "Storage", "StoredFile", "TempFile", "open_storage"]


def open_storage(storage_path: Path, url: str | None = None, endpoint_url: str | None = None, cache_size: int = 0) -> Storage:
    """Local storage at `storage_path`, or S3 when `url` is s3://BUCKET/PREFIX.

    With S3, `storage_path` holds uploads being received and verified (in `.tmp/`) and, when
    `cache_size` > 0, verified copies of downloaded files (in `.cache/`).
    """
    if not url:
        return LocalStorage(storage_path)
    from .cache import FileCache
    from .s3 import S3Storage  # imported only when used: botocore takes a while to load

    cache = FileCache(Path(storage_path) / ".cache", cache_size) if cache_size > 0 else None
    return S3Storage(url, endpoint_url, Path(storage_path) / ".tmp", cache)

"""Errors a request can end in; the web layer turns each into one HTTP status and a one-line reason."""

from __future__ import annotations

import errno

from .logs import escape


class TailsError(Exception):
    """A failure the client should see: an HTTP status and a one-line, printable reason."""

    status = 500
    headers: dict[str, str] = {}

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = one_line(reason)


class BadRequest(TailsError):
    """The request itself is wrong (400)."""

    status = 400


class Forbidden(TailsError):
    """The upload names a ledger this server does not trust (403)."""

    status = 403


class NotFound(TailsError):
    """Nothing is stored, or the ledger has no such registry (404)."""

    status = 404


class Conflict(TailsError):
    """A verified file is already stored under this name (409); uploaders count it as success."""

    status = 409


class RequestTimeout(TailsError):
    """The client stopped sending the body (408)."""

    status = 408


class PayloadTooLarge(TailsError):
    """A part of the upload exceeds its configured cap (413)."""

    status = 413


class Unavailable(TailsError):
    """A dependency failed us for now; the client may retry (503)."""

    status = 503


# What an upload still running when a stopping server's --shutdown-timeout ends gets (503).
SHUTTING_DOWN = "Server is shutting down; retry shortly."


class TooManyRequests(TailsError):
    """This client has more than its share going on, or asks too often (429, with Retry-After)."""

    status = 429

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.headers = {"Retry-After": str(max(1, round(retry_after)))}


class InsufficientStorage(TailsError):
    """Storing the upload would fill the disk (507); reads go on."""

    status = 507


class LedgerUnavailable(Unavailable):
    """The ledger could not answer in time or with consensus (503)."""


FULL = frozenset((errno.ENOSPC, errno.EDQUOT))


def from_os_error(exc: OSError, writing: bool) -> TailsError:
    """What a storage error means to a client: 507 for a write when the disk is full, else 503.

    Out of descriptors (EMFILE), an I/O error, a read-only or vanished mount: the server is
    unwell for now, and the client should come back; never a 500.
    """
    if writing and exc.errno in FULL:
        return InsufficientStorage("Storage is full.")
    error = Unavailable(f"Storage error: {exc.strerror or errno.errorcode.get(exc.errno or 0, exc)}; retry shortly.")
    error.headers = {"Retry-After": "5"}
    return error


def one_line(text: str, limit: int = 300) -> str:
    """Make any text safe for a one-line reason: no control characters, bounded length."""
    cleaned = escape(text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."

"""Optional upload authentication: tokens checked against salted scrypt hashes, in constant time.

The server stores only hashes (`tails-server hash-api-key` makes one), so a leaked configuration
does not leak a token. Reads stay public; a request that writes needs
`Authorization: Bearer TOKEN` or HTTP Basic with TOKEN as the password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict

from aiohttp import hdrs, web

from .errors import TailsError

SCHEME = "scrypt"
N, R, P = 1 << 14, 8, 1  # about 50 ms and 16 MiB per check: slow for guessing, fine for an upload
CHALLENGE = 'Bearer realm="tails-server", Basic realm="tails-server"'
UPLOAD_METHODS = frozenset({"PUT", "POST", "PATCH"})  # DELETE needs an admin token instead


class Unauthorized(TailsError):
    """No valid token for a request that writes (401)."""

    status = 401
    headers = {hdrs.WWW_AUTHENTICATE: CHALLENGE}


def hash_token(token: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash`, all base64, for --api-key-hash or an --api-keys-file line."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return "$".join([SCHEME, str(N), str(R), str(P), _b64(salt), _b64(digest)])


class ApiKeys:
    """The configured token hashes; `check` answers whether a request may write."""

    def __init__(self, hashes: list[str]) -> None:
        self.entries = [_parse(line) for line in hashes]
        self._verified: OrderedDict[bytes, None] = OrderedDict()  # fingerprints of good tokens
        self._pepper = secrets.token_bytes(32)  # fingerprints mean nothing outside this process
        self._slots = asyncio.Semaphore(2)  # guessing cannot take more than two threads

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    async def check(self, request: web.Request, what: str = "Uploads") -> None:
        """Raise Unauthorized unless the request carries a token matching one hash."""
        token = _token(request)
        if token is None:
            raise Unauthorized(f"{what} need an API token: Authorization: Bearer TOKEN.")
        fingerprint = hmac.new(self._pepper, token.encode(), hashlib.sha256).digest()
        if fingerprint in self._verified:
            self._verified.move_to_end(fingerprint)
            return
        async with self._slots:
            valid = await asyncio.get_running_loop().run_in_executor(None, self._matches, token)
        if not valid:
            raise Unauthorized("The API token is not valid.")
        self._verified[fingerprint] = None
        if len(self._verified) > 64:
            self._verified.popitem(last=False)

    def _matches(self, token: str) -> bool:
        """Try every hash (no early exit), comparing digests in constant time."""
        found = False
        for n, r, p, salt, expected in self.entries:
            digest = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected))
            found |= hmac.compare_digest(digest, expected)
        return found


def load_hashes(values: list[str], files: list[str]) -> list[str]:
    """Hashes given directly and one per line of each file (blank lines and # comments skipped)."""
    hashes = [v.strip() for v in values if v.strip()]
    for path in files:
        with open(path, encoding="utf-8") as lines:
            hashes += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for line in hashes:
        _parse(line)
    return hashes


def _parse(line: str) -> tuple[int, int, int, bytes, bytes]:
    parts = line.split("$")
    try:
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        return n, r, p, base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"not an API key hash (make one with 'tails-server hash-api-key'): {line[:20]}...") from None


def _token(request: web.Request) -> str | None:
    """The token from Bearer, or the password of Basic credentials."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

"""Parse revocation registry ids and tails hashes once, at the edge, with a strict grammar.

Only values that pass these parsers reach storage or the ledger, and every storage name is
derived from a parsed value by an injective encoding with no path separators in it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

import base58

from .errors import BadRequest

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58 = f"[{B58_ALPHABET}]"
_DID = f"{_B58}{{21,22}}"
# A tag is free text on the ledger; we refuse only what cannot round-trip through a URL path
# segment unambiguously: separators, percent signs (double encoding) and control characters.
_TAG = r"[^/\\%\x00-\x1f\x7f]{1,128}"
_SCHEMA_REF = rf"(?:[1-9][0-9]{{0,15}}|{_DID}:2:[^:/\\%\x00-\x1f\x7f]{{1,128}}:[0-9][0-9.]{{0,31}})"

LEGACY_REV_REG_ID = re.compile(
    rf"(?P<did>{_DID}):4:"
    rf"(?P<cred_def_id>(?P<cd_did>{_DID}):3:CL:(?P<schema>{_SCHEMA_REF})(?::(?P<cd_tag>{_TAG}))?)"
    rf":CL_ACCUM:(?P<tag>{_TAG})"
)
# did:indy:<namespace>:<did>/anoncreds/v0/REV_REG_DEF/<schemaSeqNo>/<credDefTag>/<revRegTag>
_NAMESPACE = r"[a-z0-9_-]{1,32}(?::[a-z0-9_-]{1,32})?"
DID_INDY_PREFIX = re.compile(rf"did:indy:(?P<namespace>{_NAMESPACE}):(?P<did>{_DID})")
_SEQ_NO = re.compile(r"[1-9][0-9]{0,15}")
_SEGMENT_TAG = re.compile(_TAG)
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

MAX_ID_LENGTH = 512
MAX_STORAGE_NAME = 255  # NAME_MAX of common filesystems


def _is_did(text: str) -> bool:
    """An unqualified Indy DID is base58 of 16 bytes."""
    try:
        return len(base58.b58decode(text)) == 16
    except ValueError:
        return False


@dataclass(frozen=True)
class TailsHash:
    """base58(sha256(tails file)): exactly 32 bytes, in canonical base58."""

    value: str

    @classmethod
    def parse(cls, text: str) -> TailsHash:
        """Accept only the canonical base58 spelling of 32 bytes."""
        return _parse_hash(text)

    @classmethod
    def of_digest(cls, digest: bytes) -> TailsHash:
        """The hash of a sha256 digest."""
        return cls(base58.b58encode(digest).decode())

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RevRegId:
    """A revocation registry id, legacy (`did:4:...`) or `did:indy:`; `ledger_id` is what the ledger knows."""

    value: str
    ledger_id: str
    issuer_did: str
    cred_def_id: str
    namespace: str | None = None

    @functools.cached_property  # ids are parsed once and cached: so is their name
    def storage_name(self) -> str:
        """Injective, separator-free file name: every byte outside [A-Za-z0-9_.~:-] is %-encoded."""
        return quote(self.value, safe=":")

    @classmethod
    def from_storage_name(cls, name: str) -> RevRegId:
        """Invert `storage_name`, re-validating the result."""
        return cls.parse(unquote(name, errors="strict"))

    @classmethod
    def from_raw_path(cls, raw_path: str) -> RevRegId:
        """Parse the still percent-encoded request path (without its leading slash)."""
        return _parse_raw_id(raw_path)

    @classmethod
    def parse(cls, text: str, _segments: list[str] | None = None) -> RevRegId:
        """Parse a decoded id; `_segments` keeps an encoded `/` apart from a literal one."""
        segments = _segments if _segments is not None else text.split("/")
        if len(text) > MAX_ID_LENGTH or not text.isprintable():
            raise _invalid(text)
        if len(segments) == 1:
            match = LEGACY_REV_REG_ID.fullmatch(text)
            if not match or not (_is_did(match["did"]) and _is_did(match["cd_did"])):
                raise _invalid(text)
            parsed = cls(text, text, match["did"], match["cred_def_id"])
        elif len(segments) == 7:
            parsed = cls._parse_did_indy(text, segments)
        else:
            raise _invalid(text)
        if len(parsed.storage_name) > MAX_STORAGE_NAME:
            raise BadRequest(f"Revocation registry ID is too long: {text[:80]}...")
        return parsed

    @classmethod
    def _parse_did_indy(cls, text: str, segments: list[str]) -> RevRegId:
        """did:indy:NS:DID/anoncreds/v0/REV_REG_DEF/SEQ/CD_TAG/TAG maps to the legacy ledger id."""
        prefix, anoncreds, v0, kind, seq_no, cd_tag, tag = segments
        match = DID_INDY_PREFIX.fullmatch(prefix)
        if (
            not match
            or (anoncreds, v0, kind) != ("anoncreds", "v0", "REV_REG_DEF")
            or not _SEQ_NO.fullmatch(seq_no)
            or not _SEGMENT_TAG.fullmatch(cd_tag)
            or not _SEGMENT_TAG.fullmatch(tag)
            or {cd_tag, tag} & {".", ".."}  # dot segments: clients rewrite them
            or not _is_did(match["did"])
        ):
            raise _invalid(text)
        did = match["did"]
        cred_def_id = f"{did}:3:CL:{seq_no}:{cd_tag}"
        ledger_id = f"{did}:4:{cred_def_id}:CL_ACCUM:{tag}"
        return cls(text, ledger_id, did, cred_def_id, match["namespace"])

    def __str__(self) -> str:
        return self.value


# Downloads repeat the same few names; pure-Python base58 is the costly part of parsing them.
@functools.lru_cache(maxsize=4096)
def _parse_hash(text: str) -> TailsHash:
    if not 32 <= len(text) <= 44 or any(ch not in B58_ALPHABET for ch in text):
        raise BadRequest(f"Tails hash is not valid: {text}.")
    raw = base58.b58decode(text)
    if len(raw) != 32 or base58.b58encode(raw).decode() != text:
        raise BadRequest(f"Tails hash is not valid: {text}.")
    return TailsHash(text)


@functools.lru_cache(maxsize=4096)
def _parse_raw_id(raw_path: str) -> RevRegId:
    segments = [_decode_segment(seg, raw_path) for seg in raw_path.split("/")]
    return RevRegId.parse("/".join(segments), _segments=segments)


def _decode_segment(segment: str, whole: str) -> str:
    """Percent-decode one path segment strictly: malformed escapes or non-UTF-8 are refused."""
    if _PERCENT.search(segment):
        raise _invalid(whole)
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise _invalid(whole) from None


def _invalid(text: str) -> BadRequest:
    """The reference server's wording, kept for clients that match it."""
    return BadRequest(f"Revocation registry ID is not valid: {text}.")

"""Validate genesis transactions before indy-vdr sees them.

indy-vdr 0.4's pool thread panics on several kinds of valid-JSON genesis (a non-node txn, a
non-numeric port, one `dest` under two aliases, the old V0 format, ...) and every later pool in
the process then fails. So only text that decodes as V1 node transactions is passed on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

import base58

from .errors import BadRequest

MAX_NODES = 256
CACHE_ENTRIES = 32
CACHE_MAX_BYTES = 64 << 10  # real genesis files are a few KiB; bigger ones are parsed each time
_OPTIONAL_STR = ("client_ip", "node_ip", "blskey", "blskey_pop")
_PORTS = ("client_port", "node_port")


class InvalidGenesis(BadRequest):
    """The genesis part is not a set of V1 node transactions; `detail` says why (for the log)."""

    def __init__(self, detail: str) -> None:
        super().__init__("Genesis transactions are not valid.")
        self.detail = detail


@dataclass(frozen=True)
class Genesis:
    """Validated genesis transactions: the text for indy-vdr and a key that identifies the ledger."""

    text: str
    key: str
    validators: str  # fingerprint of the validator set: same ledger, however the file is laid out

    @classmethod
    def parse_cached(cls, raw: bytes) -> Genesis:
        """`parse`, remembering recent valid results: issuers send the same genesis every time."""
        if len(raw) > CACHE_MAX_BYTES:
            return cls.parse(raw)
        digest = hashlib.sha256(raw).digest()
        genesis = _RECENT.pop(digest, None) or cls.parse(raw)
        _RECENT[digest] = genesis  # most recent last
        if len(_RECENT) > CACHE_ENTRIES:
            del _RECENT[next(iter(_RECENT))]
        return genesis

    @classmethod
    def parse(cls, raw: bytes) -> Genesis:
        """Decode and check every line; raise InvalidGenesis with a reason on the first fault."""
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidGenesis("not UTF-8") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise InvalidGenesis("no transactions")
        if len(lines) > MAX_NODES:
            raise InvalidGenesis(f"more than {MAX_NODES} transactions")
        aliases: dict[str, str] = {}
        nodes: dict[str, dict] = {}  # later transactions of a node update its earlier fields
        canonical = []
        for number, line in enumerate(lines, 1):
            try:
                txn = json.loads(line)
            except ValueError:
                raise InvalidGenesis(f"line {number} is not JSON") from None
            try:
                dest, node = _check_node_txn(txn)
            except (TypeError, ValueError, KeyError) as exc:
                raise InvalidGenesis(f"line {number}: {exc}") from None
            if aliases.setdefault(dest, node["alias"]) != node["alias"]:
                raise InvalidGenesis(f"line {number}: node {dest} appears under two aliases")
            nodes.setdefault(dest, {}).update(node)
            canonical.append(json.dumps(txn, sort_keys=True, separators=(",", ":")))
        validators = _validator_set(nodes)
        if not validators:
            raise InvalidGenesis("no node lists the VALIDATOR service")
        key = hashlib.sha256("\n".join(canonical).encode()).hexdigest()
        fingerprint = hashlib.sha256(json.dumps(validators, sort_keys=True).encode()).hexdigest()
        return cls("\n".join(lines) + "\n", key, fingerprint)


_RECENT: dict[bytes, Genesis] = {}


def _validator_set(nodes: dict[str, dict]) -> list[list]:
    """Normalised identity and addresses of every validator, in a fixed order."""
    return sorted(
        [
            dest,
            node["alias"],
            node.get("client_ip"),
            int(node["client_port"]),
            node.get("node_ip"),
            int(node["node_port"]) if "node_port" in node else None,
            node.get("blskey"),
        ]
        for dest, node in nodes.items()
        if "VALIDATOR" in node.get("services", ())
    )


def _check_node_txn(txn: Any) -> tuple[str, dict]:
    """Check the shape indy-vdr decodes without panicking; return (dest, node data)."""
    _expect(isinstance(txn, dict), "not an object")
    _expect(isinstance(txn.get("ver"), str), "'ver' must be a string (V1 format)")
    _expect(isinstance(txn.get("reqSignature"), dict), "'reqSignature' must be an object")
    meta = txn.get("txnMetadata")
    _expect(isinstance(meta, dict), "'txnMetadata' must be an object")
    for key in ("seqNo", "creationTime"):
        _expect(key not in meta or _is_int(meta[key]), f"'txnMetadata.{key}' must be an integer")
    body = txn.get("txn")
    _expect(isinstance(body, dict), "'txn' must be an object")
    _expect(body.get("type") == "0", "not a NODE transaction (type \"0\")")
    metadata = body.get("metadata")
    _expect(isinstance(metadata, dict) and isinstance(metadata.get("from"), str), "'txn.metadata.from' must be a string")
    data = body.get("data")
    _expect(isinstance(data, dict), "'txn.data' must be an object")
    dest = data.get("dest")
    _expect(isinstance(dest, str) and _is_key(dest), "'dest' must be base58 of 32 bytes")
    node = data.get("data")
    _expect(isinstance(node, dict), "'txn.data.data' must be an object")
    _expect(isinstance(node.get("alias"), str) and node["alias"] != "", "'alias' must be a non-empty string")
    for key in _OPTIONAL_STR:
        _expect(key not in node or isinstance(node[key], str), f"'{key}' must be a string")
    for key in ("client_ip", "node_ip"):
        _expect(key not in node or _is_ip(node[key]), f"'{key}' must be an IP address")
    for key in _PORTS:
        _expect(key not in node or _is_port(node[key]), f"'{key}' must be a port number")
    services = node.get("services", [])
    _expect(isinstance(services, list) and all(isinstance(s, str) for s in services), "'services' must be a list of strings")
    if "VALIDATOR" in services:
        _expect("client_ip" in node and "client_port" in node, "a validator needs 'client_ip' and 'client_port'")
    return dest, node


def _expect(condition: bool, reason: str) -> None:
    if not condition:
        raise ValueError(reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: Any) -> bool:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        value = int(value)
    return _is_int(value) and 0 < value < 65536


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_key(value: str) -> bool:
    try:
        return len(base58.b58decode(value)) == 32
    except ValueError:
        return False

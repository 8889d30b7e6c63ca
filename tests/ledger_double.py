"""A four-node Indy ledger double that the real indy-vdr client accepts.

Each node is a CurveZMQ ROUTER socket keyed from its genesis `dest`, answers pings and
LEDGER_STATUS with the genesis merkle root (so no catch-up happens) and GET_REVOC_REG_DEF from a
shared table. The genesis carries no BLS keys, so indy-vdr needs f+1 matching replies, and each
node can be made silent, NACKing or disagreeing to exercise the server's failure paths.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import base58
import msgpack
import nacl.signing
import zmq
from zmq.utils import z85

GET_REVOC_REG_DEF = "115"
OK, SILENT, NACK, DISAGREE, SILENT_READS = "ok", "silent", "nack", "disagree", "silent-reads"


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 tree hash, as the Indy ledger computes it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:split]) + merkle_root(leaves[split:])).digest()


class LedgerDouble:
    """Four nodes on 127.0.0.1, served from one background thread."""

    def __init__(self, nodes: int = 4) -> None:
        self.context = zmq.Context()
        self.definitions: dict[str, dict] = {}
        self.modes: list[str] = [OK] * nodes
        self.requests = 0  # reads answered
        self.status_requests = 0  # LEDGER_STATUS answered: one round per pool opened
        self._sockets: list[zmq.Socket] = []
        txns = []
        for i in range(nodes):
            signing = nacl.signing.SigningKey(f"LedgerDoubleNode{i}".ljust(32, "0").encode())
            sock = self.context.socket(zmq.ROUTER)
            sock.curve_server = True
            sock.curve_secretkey = z85.encode(bytes(signing.to_curve25519_private_key()))
            sock.curve_publickey = z85.encode(bytes(signing.verify_key.to_curve25519_public_key()))
            sock.linger = 0
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            self._sockets.append(sock)
            txns.append(self._node_txn(i, signing, port))
        self.genesis_text = "".join(json.dumps(t) + "\n" for t in txns)
        leaves = [msgpack.packb(_sorted(t), use_bin_type=True) for t in txns]
        self._status = {"txnSeqNo": len(txns), "merkleRoot": base58.b58encode(merkle_root(leaves)).decode()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ledger-double", daemon=True)

    @staticmethod
    def _node_txn(i: int, signing: nacl.signing.SigningKey, port: int) -> dict:
        return {
            "reqSignature": {},
            "txn": {
                "data": {
                    "data": {
                        "alias": f"Node{i + 1}",
                        "client_ip": "127.0.0.1",
                        "client_port": port,
                        "node_ip": "127.0.0.1",
                        "node_port": 1,
                        "services": ["VALIDATOR"],
                    },
                    "dest": base58.b58encode(bytes(signing.verify_key)).decode(),
                },
                "metadata": {"from": "Th7MpTaRZVRYnPiabds81Y"},
                "type": "0",
            },
            "txnMetadata": {"seqNo": i + 1, "txnId": hashlib.sha256(f"node{i}".encode()).hexdigest()},
            "ver": "1",
        }

    def start(self) -> LedgerDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self._sockets:
            sock.close()
        self.context.term()

    def set_modes(self, *modes: str) -> None:
        """One mode per node, or a single mode for all."""
        self.modes = list(modes) * len(self._sockets) if len(modes) == 1 else list(modes)

    def publish(self, definition: dict) -> None:
        """Put a revocation registry definition (ledger form, with `id`) on the ledger."""
        self.definitions[definition["id"]] = definition

    def _serve(self) -> None:
        poller = zmq.Poller()
        for sock in self._sockets:
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(50):
                identity, payload = sock.recv_multipart()[:2]
                node = self._sockets.index(sock)
                reply = self._answer(node, payload)
                if reply is not None:
                    sock.send_multipart([identity, reply])

    def _answer(self, node: int, payload: bytes) -> bytes | None:
        mode = self.modes[node]
        if mode == SILENT:
            return None
        if payload == b"pi":
            return b"po"
        message = json.loads(payload)
        if message.get("op") == "LEDGER_STATUS":
            self.status_requests += 1
            return json.dumps({
                "op": "LEDGER_STATUS", "ledgerId": 0, **self._status, "ppSeqNo": None,
                "viewNo": None, "protocolVersion": message.get("protocolVersion"),
            }).encode()
        operation = message.get("operation") or {}
        if operation.get("type") != GET_REVOC_REG_DEF or mode == NACK:
            return json.dumps({
                "op": "REQNACK", "identifier": message.get("identifier"),
                "reqId": message.get("reqId"), "reason": "client request invalid: refused by the test ledger",
            }).encode()
        if mode == SILENT_READS:
            return None
        self.requests += 1
        data = self.definitions.get(operation.get("id"))
        if mode == DISAGREE and data is not None:
            data = json.loads(json.dumps(data))
            data["value"]["tailsHash"] = base58.b58encode(hashlib.sha256(f"node{node}".encode()).digest()).decode()
        found = data is not None
        return json.dumps({
            "op": "REPLY",
            "result": {
                **operation, "identifier": message.get("identifier"), "reqId": message.get("reqId"),
                "data": data, "seqNo": 10 if found else None, "txnTime": 1700000000 if found else None,
            },
        }).encode()

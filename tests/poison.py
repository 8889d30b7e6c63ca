"""Five kinds of valid-JSON genesis that crash indy-vdr 0.4's pool thread if they reach it."""

from __future__ import annotations

import copy
import json


def poison_genesis(valid_genesis: str) -> dict[str, str]:
    """Each poison, built from a valid genesis so that only the poisonous detail differs."""
    txns = [json.loads(line) for line in valid_genesis.splitlines() if line.strip()]
    first = txns[0]

    nym = copy.deepcopy(first)
    nym["txn"]["type"] = "1"
    nym["txn"]["data"] = {"dest": "Th7MpTaRZVRYnPiabds81Y", "role": "0", "verkey": "~7TYfekw4GUagBnBVCqPjiC"}

    bad_port = copy.deepcopy(first)
    bad_port["txn"]["data"]["data"]["client_port"] = "abc"

    second_alias = copy.deepcopy(first)
    second_alias["txn"]["data"]["data"]["alias"] = "Impostor"

    node = first["txn"]["data"]
    v0 = {
        "data": {**node["data"]},
        "dest": node["dest"],
        "identifier": first["txn"]["metadata"]["from"],
        "txnId": "fea82e10e894419fe2bea7d96296a6d46f50f93f9eeda954ec461b2ed2950b62",
        "type": "0",
    }

    def lines(*items: dict) -> str:
        return "".join(json.dumps(item) + "\n" for item in items)

    return {
        "not-a-txn": lines({"foo": 1}, *txns[1:]),
        "nym-txn": lines(nym, *txns[1:]),
        "port-not-a-number": lines(bad_port, *txns[1:]),
        "dest-under-two-aliases": lines(*txns, second_alias),
        "v0-format": lines(v0, *txns[1:]),
    }

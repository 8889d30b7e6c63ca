"""Which ledger an upload is checked against: the uploader's genesis, or the operator's allow-list.

Without an allow-list anyone who runs a ledger can claim a registry id first, as with the
reference server. With one, an uploaded genesis must describe the same validators as a trusted
ledger (compared as a normalised validator set, not as bytes), and the lookup then uses the
operator's copy of that genesis.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BadRequest, Forbidden
from .genesis import Genesis, InvalidGenesis
from .ids import RevRegId

FIRST_NOT_GENESIS = "First field in multipart request must have name 'genesis'"


class TrustedLedgers:
    """The `--ledger NAME=GENESIS_FILE` allow-list (empty: trust the uploader's genesis)."""

    def __init__(self, ledgers: dict[str, Genesis]) -> None:
        self.by_name = dict(ledgers)
        self.by_validators = {genesis.validators: name for name, genesis in ledgers.items()}

    @classmethod
    def load(cls, files: dict[str, Path]) -> TrustedLedgers:
        """Read and validate every genesis file; a bad one stops the start with its reason."""
        ledgers = {}
        for name, path in files.items():
            try:
                ledgers[name] = Genesis.parse(Path(path).read_bytes())
            except InvalidGenesis as exc:
                raise ValueError(f"ledger {name}: {path}: {exc.detail}") from None
        return cls(ledgers)

    @property
    def enabled(self) -> bool:
        return bool(self.by_name)

    def accepts_without_genesis(self, rev_reg_id: RevRegId) -> bool:
        """A did:indy id of a trusted namespace needs no genesis part."""
        return rev_reg_id.namespace in self.by_name

    def choose(self, rev_reg_id: RevRegId, uploaded: Genesis | None) -> Genesis:
        """The genesis to look the registry up with, or 403 when the ledger is not trusted."""
        if not self.enabled:
            if uploaded is None:
                raise BadRequest(FIRST_NOT_GENESIS)
            return uploaded
        if rev_reg_id.namespace is not None:
            trusted = self.by_name.get(rev_reg_id.namespace)
            if trusted is None:
                raise Forbidden(f"Ledger '{rev_reg_id.namespace}' is not trusted by this server.")
            if uploaded is not None and uploaded.validators != trusted.validators:
                raise Forbidden(f"Genesis does not match the trusted ledger '{rev_reg_id.namespace}'.")
            return trusted
        if uploaded is None:
            raise BadRequest(FIRST_NOT_GENESIS)
        name = self.by_validators.get(uploaded.validators)
        if name is None:
            raise Forbidden("Genesis does not match a ledger trusted by this server.")
        return self.by_name[name]

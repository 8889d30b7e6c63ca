"""Session fixtures: a ledger double, real anoncreds registries, and a running tails-server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ledger_double import OK, LedgerDouble  # noqa: E402
from registries import Issuer, Registry  # noqa: E402
from support import ServerProcess  # noqa: E402

LEDGER_TIMEOUT = 3  # seconds; the server's --ledger-timeout in tests
MAX_TAILS = 8 << 20  # the test server's --max-tails-size


@pytest.fixture(scope="session")
def ledger() -> Iterator[LedgerDouble]:
    double = LedgerDouble().start()
    yield double
    double.stop()


@pytest.fixture(autouse=True)
def _healthy_ledger(ledger: LedgerDouble) -> Iterator[None]:
    """Every test starts and ends with all nodes answering."""
    ledger.set_modes(OK)
    yield
    ledger.set_modes(OK)


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer("000000000000000000000000Issuer01", tmp_path_factory.mktemp("tails-made")).define_cred_def(20)


@pytest.fixture
def registry(issuer: Issuer, ledger: LedgerDouble) -> Registry:
    """A fresh registry (1,410-byte tails file) already on the ledger double."""
    made = issuer.registry(5)
    ledger.publish(made.definition)
    return made


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    storage = tmp_path_factory.mktemp("server") / "storage"
    proc = ServerProcess(storage, "--ledger-timeout", str(LEDGER_TIMEOUT), "--max-tails-size", str(MAX_TAILS)).start()
    yield proc
    proc.stop()


@pytest.fixture
def new_server(tmp_path: Path) -> Iterator:
    """Start extra servers on their own storage; all stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, storage: Path | None = None, **kwargs) -> ServerProcess:  # kwargs: see ServerProcess
        proc = ServerProcess(storage or tmp_path / "storage", "--ledger-timeout", str(LEDGER_TIMEOUT), *args, **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that never decompresses or follows redirects behind the test's back."""
    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session

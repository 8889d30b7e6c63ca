"""Test helpers: a real tails-server process, raw HTTP on loopback, and upload bodies."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import base58


def tails_hash(data: bytes) -> str:
    return base58.b58encode(hashlib.sha256(data).digest()).decode()


def random_tails(records: int) -> tuple[bytes, str]:
    """A file in tails format (00 02 + 128-byte records) and its hash."""
    data = b"\x00\x02" + os.urandom(128 * records)
    return data, tails_hash(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalView:
    """What a server with local storage stored, read straight from its directories."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, tails_hash: str) -> bytes | None:
        """The bytes stored under a hash, or None."""
        path = self.root / "hash" / tails_hash
        return path.read_bytes() if path.exists() else None

    def file_for_id(self, rev_reg_id: str) -> bytes | None:
        """The bytes a registry id resolves to, or None."""
        path = self.root / "id" / quote(rev_reg_id, safe=":")
        return path.read_bytes() if path.exists() else None

    def hashes(self) -> dict[str, int]:
        """Every stored hash with its size."""
        directory = self.root / "hash"
        return {p.name: p.stat().st_size for p in directory.iterdir()} if directory.exists() else {}

    def ids(self) -> set[str]:
        """Every stored registry id."""
        directory = self.root / "id"
        return {unquote(p.name) for p in directory.iterdir()} if directory.exists() else set()

    def names(self) -> dict[str, str]:
        """Every stored name (hash or registry id) that resolves, with the hash of its file."""
        hashes = set(self.hashes())
        found = {h: h for h in hashes}
        directory = self.root / "id"
        for link in directory.iterdir() if directory.exists() else ():
            target = os.readlink(link).rsplit("/", 1)[-1]
            if target in hashes:
                found[unquote(link.name)] = target
        return found

    def overwrite(self, tails_hash: str, data: bytes) -> None:
        """Change stored bytes behind the server's back, as disk rot would."""
        (self.root / "hash" / tails_hash).write_bytes(data)

    def quarantined(self, tails_hash: str) -> bytes | None:
        path = self.root / ".quarantine" / tails_hash
        return path.read_bytes() if path.exists() else None

    def temp_files(self) -> list[Path]:
        """Uploads being received (for every backend, a local directory)."""
        directory = self.root / ".tmp"
        return list(directory.iterdir()) if directory.exists() else []


# The suite plays many clients from one loopback address: per-client limits are lifted unless a
# test sets them again (later flags win); the tests of those limits use their defaults.
MANY_CLIENTS = ("--rate-limit-writes", "0", "--rate-limit-listings", "0", "--max-uploads-per-client", "100000",
                "--max-connections-per-client", "100000")


class ServerProcess:
    """`python -m tails_server` in a child process, on a free loopback port."""

    def __init__(self, storage: Path, *args: str, cwd: Path | None = None, env: dict | None = None, ssl_context=None, view=None,
                 launcher: list[str] | None = None, log_dir: Path | None = None) -> None:
        self.storage = storage
        self.launcher = launcher or []  # e.g. prlimit with its options, run in front of the server
        self.view = view or LocalView(storage)  # where its files are, whatever the backend
        self.port = free_port()
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(storage), *MANY_CLIENTS, *args]
        self.cwd = cwd
        self.env = env
        self.log_path = (log_dir or storage.parent) / f"server-{self.port}.log"  # off a mount the test may remove
        self.ssl_context = ssl_context  # a client context trusting the server's certificate
        self.proc: subprocess.Popen | None = None

    def storage_args(self) -> list[str]:
        """The options naming this server's storage, for the maintenance commands."""
        picked = []
        for flag in ("--storage-path", "--storage", "--s3-endpoint-url"):
            if flag in self.args:
                picked += [flag, self.args[self.args.index(flag) + 1]]
        return picked

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        log = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        command = [*self.launcher, sys.executable, "-m", "tails_server", *self.args]
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=self.cwd, env=env)
        self.wait_until_up(self.url, self.proc, timeout, self.log, self.ssl_context)
        self.wait_index_ready(timeout)
        return self

    def wait_index_ready(self, timeout: float = 30) -> bool:
        """Until /readyz says a plain "ok" (the index is built: listings answer) or 503; bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5, context=self.ssl_context) as resp:
                    if resp.read() == b"ok":
                        return True
            except urllib.error.HTTPError:  # storage unusable: nothing to wait for
                return False
            time.sleep(0.05)
        return False

    @staticmethod
    def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 30, log=lambda: "", ssl_context=None) -> None:
        """Poll GET / until it answers 200 (bounded); fail with the server's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log()}")
            try:
                with urllib.request.urlopen(url + "/", timeout=1, context=ssl_context) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {log()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def id_upload(genesis: str | bytes, tails: bytes, first: str = "genesis", second: str = "tails") -> aiohttp.FormData:
    """The body ACA-Py sends: `genesis` as text, then `tails` as a file named by its hash."""
    form = aiohttp.FormData()
    form.add_field(first, genesis)
    form.add_field(second, tails, filename=tails_hash(tails), content_type="application/octet-stream")
    return form


def hash_upload(tails: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("tails", tails, filename=tails_hash(tails), content_type="application/octet-stream")
    return form


def encode_multipart(parts: list[tuple[str, bytes]], boundary: str = "tailsboundary") -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, for raw-socket clients."""
    body = b""
    for name, data in parts:
        body += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def read_response(reader: asyncio.StreamReader, timeout: float = 30, head: bool = False) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (bodies here always carry Content-Length)."""
    header_block = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, _, headers = header_block.partition(b"\r\n")
    status = int(status_line.split()[1])
    if head or status in (204, 304):
        return status, b""
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in headers.split(b"\r\n"))}
    length = int(fields.get(b"content-length", b"0"))
    return status, await asyncio.wait_for(reader.readexactly(length), timeout)


async def tiny_window_get(port: int, target: str, extra_headers: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET from a client whose 4 KiB receive buffer makes the server wait on it (the caller reads)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra_headers}\r\n".encode())
    await writer.drain()
    return reader, writer


async def raw_request(port: int, method: str, target: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalisation); return status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(head.encode("latin-1") + b"\r\n" + body)
    await writer.drain()
    status, data = await read_response(reader, head=method == "HEAD")
    writer.close()
    return status, data


async def chunked_put(port: int, target: str, content_type: str, pieces: list[bytes]) -> tuple[int, bytes]:
    """A PUT with Transfer-Encoding: chunked (as `curl -T -` sends), one HTTP chunk per piece."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(head.encode() + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n")
    await writer.drain()
    status, data = await read_response(reader)
    writer.close()
    return status, data


class SlowUpload:
    """An upload sent in two halves over a raw socket, so a test can act while it is in flight."""

    def __init__(self, port: int, target: str, body: bytes, content_type: str, hold_back: int | None = None) -> None:
        self.port, self.target, self.body, self.content_type = port, target, body, content_type
        self.split = len(body) // 2 if hold_back is None else len(body) - hold_back  # what the first send stops at
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send_first_half(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"PUT {self.target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body[: self.split])
        await self.writer.drain()

    async def finish(self) -> tuple[int, bytes]:
        assert self.writer and self.reader
        self.writer.write(self.body[self.split:])
        await self.writer.drain()
        status, data = await read_response(self.reader)
        self.writer.close()
        return status, data

    async def response(self, timeout: float = 15) -> tuple[int, bytes]:
        """The server's answer, read without sending the rest of the body."""
        assert self.reader
        return await read_response(self.reader, timeout)

    def abandon(self) -> None:
        if self.writer:
            self.writer.close()


async def wait_for(condition, timeout: float = 10, interval: float = 0.02) -> None:
    """Poll until `condition()` holds (bounded); fail the test otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)

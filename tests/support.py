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
import urllib.request
from pathlib import Path

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


class ServerProcess:
    """`python -m tails_server` in a child process, on a free loopback port."""

    def __init__(self, storage: Path, *args: str, cwd: Path | None = None, env: dict | None = None, ssl_context=None) -> None:
        self.storage = storage
        self.port = free_port()
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(storage), *args]
        self.cwd = cwd
        self.env = env
        self.log_path = storage.parent / f"server-{self.port}.log"
        self.ssl_context = ssl_context  # a client context trusting the server's certificate
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        log = open(self.log_path, "ab")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "tails_server", *self.args], stdout=log, stderr=log, cwd=self.cwd, env=env)
        self.wait_until_up(self.url, self.proc, timeout, self.log, self.ssl_context)
        return self

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


async def raw_request(port: int, method: str, target: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalisation); return status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(head.encode("latin-1") + b"\r\n" + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


class SlowUpload:
    """An upload sent in two halves over a raw socket, so a test can act while it is in flight."""

    def __init__(self, port: int, target: str, body: bytes, content_type: str) -> None:
        self.port, self.target, self.body, self.content_type = port, target, body, content_type
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send_first_half(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"PUT {self.target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body[: len(self.body) // 2])
        await self.writer.drain()

    async def finish(self) -> tuple[int, bytes]:
        assert self.writer and self.reader
        self.writer.write(self.body[len(self.body) // 2:])
        await self.writer.drain()
        response = await asyncio.wait_for(self.reader.read(), 30)
        self.writer.close()
        status_line, _, rest = response.partition(b"\r\n")
        return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]

    async def response(self, timeout: float = 15) -> tuple[int, bytes]:
        """The server's answer, read without sending the rest of the body."""
        assert self.reader
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, _, headers = head.partition(b"\r\n")
        length = next(int(v) for k, _, v in (h.partition(b":") for h in headers.split(b"\r\n")) if k.lower() == b"content-length")
        return int(status_line.split()[1]), await asyncio.wait_for(self.reader.readexactly(length), timeout)

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

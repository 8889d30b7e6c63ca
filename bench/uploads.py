"""Upload load for the benchmark: 16 clients sending distinct tails files by hash, raw or multipart."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import base58

# As ACA-Py's HTTP client (requests) frames it: 32 random hex digits, one part named "tails".
BOUNDARY = "9f3c1b7e5a2d4c6b8e0f1a3c5d7e9b2a"
MULTIPART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="tails"; filename="tails"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()
MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def tails_file(size: int) -> tuple[bytes, str]:
    data = b"\x00\x02" + os.urandom(((size - 2) // 128) * 128)
    return data, base58.b58encode(hashlib.sha256(data).digest()).decode()


async def sendfile_put(port: int, path: str, file: Path, multipart: bool = False) -> int:
    """One PUT whose body the kernel sends straight from the page cache: a light load generator.

    `multipart`: the file as the one part `tails` of a multipart/form-data body, as ACA-Py sends
    it, from a framed copy on disk so that the client does the same work for both forms.
    """
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    content_type = f"multipart/form-data; boundary={BOUNDARY}" if multipart else "application/octet-stream"
    file = framed(file) if multipart else file
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {file.stat().st_size}\r\nConnection: close\r\n\r\n".encode()
    )
    with open(file, "rb") as body:
        await loop.sendfile(writer.transport, body)
    response = await asyncio.wait_for(reader.read(), 600)
    writer.close()
    return int(response.split(b" ", 2)[1])


def framed(file: Path) -> Path:
    """The multipart body holding `file`, written beside it."""
    return file.with_name(file.name + ".multipart")


async def upload_throughput(port: int, files: list[tuple[Path, str]], clients: int, storage: Path, seconds: float,
                            multipart: bool = False) -> dict:
    """Upload distinct files by hash from `clients` connections, in rounds until `seconds` passed.

    Between rounds (outside the timing) the stored copies are deleted so the same files can be
    uploaded again; the server keeps no state about them.
    """
    done, elapsed, total = 0, 0.0, 0

    async def client(pending: list, statuses: list) -> None:
        while pending:
            path, h = pending.pop()
            statuses.append(await sendfile_put(port, f"/hash/{h}", path, multipart))

    for _ in range(100):  # bounded
        statuses: list[int] = []
        pending = list(files)
        start = time.perf_counter()
        await asyncio.gather(*(client(pending, statuses) for _ in range(clients)))
        elapsed += time.perf_counter() - start
        if statuses.count(200) != len(files):
            raise RuntimeError(f"uploads failed: {sorted(set(statuses))}")
        done += len(files)
        total += sum(p.stat().st_size for p, _ in files)
        for _, h in files:
            (storage / "hash" / h).unlink()
        if elapsed >= seconds:
            break
    return {"uploads_s": done / elapsed, "mb_s": total / elapsed / 1e6, "seconds": elapsed}


class Ceiling:
    """This machine's durable-write ceiling: what every upload must do to its bytes, with no network.

    16 threads take the files as 16 clients would send them: each is read in 256 KiB pieces (from
    the page cache), hashed, written to a temp file, fdatasync'ed, linked under its hash, and the
    directory fsync'ed, as a server must before it answers 200.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "hash").mkdir(parents=True, exist_ok=True)
        (root / ".tmp").mkdir(exist_ok=True)

    def store(self, path: Path, tails_hash: str) -> None:
        sha = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=self.root / ".tmp")
        try:
            with open(path, "rb", buffering=0) as source:
                while piece := source.read(1 << 18):
                    sha.update(piece)
                    os.write(fd, piece)
            if base58.b58encode(sha.digest()).decode() != tails_hash:
                raise RuntimeError(f"{path}: not the file of {tails_hash}")
            os.fdatasync(fd)
            os.link(temp, self.root / "hash" / tails_hash)
        finally:
            os.close(fd)
            os.unlink(temp)
        directory = os.open(self.root / "hash", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def throughput(self, files: list[tuple[Path, str]], seconds: float) -> dict:
        """Like upload_throughput: all the files per round, rounds until `seconds` passed."""
        loop = asyncio.get_running_loop()
        done, elapsed, total = 0, 0.0, 0
        with ThreadPoolExecutor(16) as threads:
            for _ in range(100):  # bounded
                start = time.perf_counter()
                await asyncio.gather(*(loop.run_in_executor(threads, self.store, path, h) for path, h in files))
                elapsed += time.perf_counter() - start
                done += len(files)
                total += sum(p.stat().st_size for p, _ in files)
                for _, h in files:
                    (self.root / "hash" / h).unlink()
                if elapsed >= seconds:
                    break
        return {"uploads_s": done / elapsed, "mb_s": total / elapsed / 1e6, "seconds": elapsed}


async def uploads_side_by_side(servers: dict[str, tuple[int, Path] | Ceiling], files: list[tuple[Path, str]], seconds: float,
                               multipart: bool = False, rounds: int = 4) -> dict:
    """PUT /hash throughput of each (port, storage root), or of the ceiling, in short alternating rounds, as for GETs."""
    per_round: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, server in servers.items():
            share = max(1.0, seconds / rounds)
            if isinstance(server, Ceiling):
                per_round[name].append(await server.throughput(files, share))
            else:
                per_round[name].append(await upload_throughput(server[0], files, 16, server[1], share, multipart))
    return {
        name: {key: sum(r[key] * r["seconds"] for r in results) / sum(r["seconds"] for r in results)
               for key in ("uploads_s", "mb_s")}
        for name, results in per_round.items()
    }


def upload_files(directory: Path, count: int, size: int) -> list[tuple[Path, str]]:
    """Distinct tails files on disk, for the load generator to send."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for _ in range(count):
        data, h = tails_file(size)
        (directory / h).write_bytes(data)
        framed(directory / h).write_bytes(MULTIPART_HEAD + data + MULTIPART_TAIL)
        files.append((directory / h, h))
    return files

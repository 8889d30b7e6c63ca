"""Client commands: `tails-server upload` and `tails-server download`, with progress and exit codes.

Exit codes scripts can rely on: 0 done (an upload that was already stored counts, as ACA-Py
counts 409), 2 usage, 3 refused by the server (4xx), 4 server or network failure, 5 the downloaded
bytes do not match their hash.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import base58
from tqdm import tqdm

from .errors import BadRequest
from .ids import RevRegId, TailsHash
from .tails import check_file

OK, USAGE, REFUSED, FAILED, MISMATCH = 0, 2, 3, 4, 5
CHUNK = 1 << 18


def upload(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tails-server upload", description="Upload a tails file by hash, or by registry id with a genesis file.")
    parser.add_argument("server", help="The server's base URL, e.g. https://tails.example.org")
    parser.add_argument("file", type=Path, help="The tails file")
    parser.add_argument("--rev-reg-id", help="Upload for this registry id (checked on the ledger); needs --genesis unless the server trusts its ledger")
    parser.add_argument("--genesis", type=Path, help="Genesis transactions of the registry's ledger")
    parser.add_argument("--token", default=os.environ.get("TAILS_SERVER_TOKEN"), help="API token [env TAILS_SERVER_TOKEN]")
    options = parser.parse_args(args)
    if not options.file.is_file():
        parser.error(f"not a file: {options.file}")
    if options.rev_reg_id:
        try:
            RevRegId.parse(options.rev_reg_id)
        except BadRequest as exc:
            parser.error(exc.reason)
    return asyncio.run(_upload(options))


def download(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tails-server download", description="Download a tails file and check its hash.")
    parser.add_argument("url", help="The file's URL (a tailsLocation)")
    parser.add_argument("-o", "--output", type=Path, help="Where to write it (default: its hash, in the current directory)")
    parser.add_argument("--hash", dest="expected", help="The tailsHash to check against (default: from the URL or the ETag)")
    options = parser.parse_args(args)
    return asyncio.run(_download(options))


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _bar(total: int | None, what: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=not sys.stderr.isatty())


async def _upload(options: argparse.Namespace) -> int:
    size = options.file.stat().st_size
    bar = _bar(size, "upload")

    async def body():
        with open(options.file, "rb") as file:
            while chunk := file.read(CHUNK):
                bar.update(len(chunk))
                yield chunk

    base = options.server.rstrip("/")
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    if options.rev_reg_id:
        url = f"{base}/{quote(options.rev_reg_id, safe=':')}"
        data = aiohttp.FormData()
        if options.genesis:
            data.add_field("genesis", options.genesis.read_text())
        data.add_field("tails", body(), filename=options.file.name, content_type="application/octet-stream")
    else:
        url = f"{base}/hash/{check_file(options.file)[0]}"
        data, headers = body(), {**headers, "Content-Type": "application/octet-stream", "Content-Length": str(size)}
    try:
        async with aiohttp.ClientSession() as session, session.put(url, data=data, headers=headers) as resp:
            text = (await resp.text()).strip()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        _say(f"upload failed: {exc}")
        return FAILED
    finally:
        bar.close()
    if resp.status == 200:
        print(text)
        return OK
    if resp.status == 409:
        _say("already stored")
        return OK
    _say(f"{resp.status}: {text}")
    return REFUSED if resp.status < 500 else FAILED


async def _download(options: argparse.Namespace) -> int:
    expected = options.expected or _hash_in_url(options.url)
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.get(options.url) as resp:
            if resp.status != 200:
                _say(f"{resp.status}: {(await resp.text()).strip()[:200]}")
                return REFUSED if resp.status < 500 else FAILED
            expected = expected or resp.headers.get("ETag", "").strip('"') or None
            return await _receive(resp, expected, options.output)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        _say(f"download failed: {exc}")
        return FAILED


async def _receive(resp: aiohttp.ClientResponse, expected: str | None, output: Path | None) -> int:
    """Stream to a temp file beside the target, check the hash, then move it into place."""
    sha = hashlib.sha256()
    target_dir = (output.parent if output else Path.cwd()).resolve()
    bar = _bar(resp.content_length, "download")
    fd, temp = tempfile.mkstemp(dir=target_dir, prefix=".tails-download-")
    try:
        with os.fdopen(fd, "wb") as file:
            async for chunk in resp.content.iter_chunked(CHUNK):
                sha.update(chunk)
                file.write(chunk)
                bar.update(len(chunk))
        actual = base58.b58encode(sha.digest()).decode()
        if expected and actual != expected:
            _say(f"hash mismatch: expected {expected}, got {actual}")
            return MISMATCH
        os.replace(temp, output or target_dir / actual)
        print(actual)
        return OK
    finally:
        bar.close()
        if os.path.exists(temp):
            os.unlink(temp)


def _hash_in_url(url: str) -> str | None:
    """The tailsHash when the URL is .../hash/{tailsHash}."""
    parts = urlsplit(url).path.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "hash":
        try:
            return TailsHash.parse(parts[-1]).value
        except BadRequest:
            return None
    return None

"""A public server cannot be locked out: connection floods, running out of descriptors, forged log lines.

Real servers under `prlimit`, real sockets on loopback; the honest client speaks from a second
address (127.0.0.2), as another host would.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections import Counter

import aiohttp
from support import random_tails

from tails_server.auth import hash_token

OCTETS = {"Content-Type": "application/octet-stream"}
HONEST = "127.0.0.2"


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def honest_session() -> aiohttp.ClientSession:
    """A client on another loopback address, with a new connection per request."""
    connector = aiohttp.TCPConnector(local_addr=(HONEST, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))


async def first_bytes(reader: asyncio.StreamReader, wait: float) -> bytes | None:
    """What the server sent on a connection within `wait` s: bytes, b"" when it closed, None when silent."""
    try:
        return await asyncio.wait_for(reader.read(256), wait)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def test_a_connection_flood_from_one_address_leaves_others_served(new_server):
    # The idle timeout leaves room for opening 400 connections: when the listen queue is full the
    # kernel drops a SYN and the client resends it a second later (3 s the next time), and the
    # admitted connections must still be open, and silent, when the first answers are read.
    proc = new_server("--idle-timeout", "10", "--max-connections-per-client", "100", "--max-uploads", "8",
                      "--pool-cache-size", "2", launcher=["prlimit", "--nofile=512:512", "--"])
    pid = proc.proc.pid
    data, h = random_tails(4)
    baseline = fds(pid)
    started = time.monotonic()
    flood = [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(400)]  # more than the per-client cap
    opening = time.monotonic() - started
    try:
        answers = await asyncio.gather(*(first_bytes(reader, 2) for reader, _ in flood))
        refused = [a for a in answers if a and a.startswith(b"HTTP/1.1 503 ")]
        assert len(refused) == 300 and all(a is None for a in answers if a not in refused), (opening, Counter(map(repr, answers)))

        outcomes = []
        async with honest_session() as http:  # meanwhile another address uploads and downloads
            async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
                outcomes.append(resp.status)
            for _ in range(30):
                async with http.get(f"{proc.url}/hash/{h}") as resp:
                    outcomes.append(resp.status if await resp.read() == data else -1)
                async with http.get(f"{proc.url}/livez") as resp:
                    outcomes.append(resp.status)
        assert outcomes == [200] * 61, Counter(outcomes)

        # the flood's admitted connections stay idle: the server closes each after --idle-timeout
        closed = await asyncio.gather(*(first_bytes(reader, 14) for reader, _ in flood))
        assert all(a == b"" or (a or b"").startswith(b"HTTP/1.1 503 ") for a in closed), Counter(map(repr, closed))
        assert fds(pid) <= baseline + 5
    finally:
        for _, writer in flood:
            writer.close()
    async with aiohttp.ClientSession() as http, http.get(f"{proc.url}/metrics") as resp:
        text = await resp.text()
    assert re.search(r'^tails_connections_refused_total\{reason="too_many_from_client"\} 300\.0$', text, re.M), text


async def test_running_out_of_descriptors_gives_503s_and_the_server_recovers(new_server, http):
    proc = new_server("--idle-timeout", "2")
    pid = proc.proc.pid
    data, h = random_tails(2)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.5)  # the keep-alive connection above is gone from the count below
    hard = int(subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings", "--output=HARD"],
                              capture_output=True, text=True, check=True).stdout)
    began = time.monotonic()
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={fds(pid) + 2}:{hard}"], check=True)  # all but two in use
    try:
        statuses = Counter()

        async def one() -> None:
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=4)) as fresh:
                    async with fresh.get(f"{proc.url}/hash/{h}", headers={"Connection": "close"}) as resp:
                        body = await resp.read()
                        statuses[resp.status if resp.status != 200 or body == data else -1] += 1
            except (TimeoutError, aiohttp.ClientError):
                statuses["no answer"] += 1  # waiting in the listen queue while accept() cannot take it

        await asyncio.gather(*(one() for _ in range(20)))
        assert 500 not in statuses and -1 not in statuses and statuses[503] >= 1, statuses
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={hard}:{hard}"], check=True)
    for _ in range(3):  # with descriptors back, everything works again
        async with http.get(f"{proc.url}/hash/{h}") as resp:
            assert resp.status == 200 and await resp.read() == data
    log = proc.log()
    assert "Traceback" not in log and "Exception in callback" not in log, log[-3000:]
    reports = log.count("cannot accept connections")
    assert reports <= 1 + (time.monotonic() - began) / 10, log[-3000:]  # at most one report per 10 s


async def raw_status(port: int, head: str, body: bytes = b"") -> int:
    """Send one request as raw bytes (no client library cleans it up); its status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + body)
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split()[1])
    finally:
        writer.close()


async def test_client_text_never_forges_a_log_line(new_server):
    forged = "2026-12-03 08:00:00,000 ERROR tails_server.app: FORGED"
    token = "a-token-of-sixteen-chars"
    proc = new_server("--api-key-hash", hash_token(token))
    path = "/hash/x%0A" + forged.replace(" ", "%20")
    for method, extra in (("PUT", f"Authorization: Bearer {token}\r\n"), ("PUT", ""), ("GET", "")):
        head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/octet-stream\r\n"
                "Content-Length: 2\r\nX-Request-ID: a\x1b[2Jb\r\nConnection: close\r\n\r\n")
        assert await raw_status(proc.port, head, b"\x00\x02") in (400, 401, 404)
    head = "GET /%E2%80%A8" + forged.replace(" ", "%20") + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert await raw_status(proc.port, head) in (400, 404)  # U+2028, a line break to some readers
    await asyncio.sleep(0.5)  # access lines are flushed every 0.2 s
    log = proc.log()
    assert "FORGED" in log  # the text is there, on the line of the request that carried it
    for line in log.splitlines():
        assert not line.startswith(forged[:24]), line
        assert "\u2028" not in line and "\x1b" not in line, line


async def test_max_connections_stays_below_the_descriptor_limit(new_server):
    proc = new_server("--max-connections", "100000", "--max-connections-per-client", "1000", "--max-uploads", "8",
                      "--pool-cache-size", "2", "--idle-timeout", "10", launcher=["prlimit", "--nofile=300:300", "--"])
    assert "--max-connections 100000 lowered to 90" in proc.log()  # (300 less 64 + 3 x 8 + 16 x 2 in reserve) / 2 each
    flood = [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(120)]
    try:
        answers = await asyncio.gather(*(first_bytes(reader, 2) for reader, _ in flood))
        refused = [a for a in answers if a and a.startswith(b"HTTP/1.1 503 ") and b"too many connections" in a]
        assert len(refused) == 30 and answers.count(None) == 90, Counter(map(repr, answers))
    finally:
        for _, writer in flood:
            writer.close()


async def test_a_tls_handshake_flood_is_counted_and_timed_out(new_server, tls_files):
    chain, key, client = tls_files
    # As in the plaintext flood: the handshake timeout (the idle timeout, 10 s) leaves room for a slow opening.
    proc = new_server("--tls-cert", str(chain), "--tls-key", str(key), "--idle-timeout", "10",
                      "--max-connections-per-client", "50", "--max-uploads", "8", "--pool-cache-size", "2",
                      ssl_context=client, launcher=["prlimit", "--nofile=512:512", "--"])
    pid = proc.proc.pid
    data, h = random_tails(4)
    baseline = fds(pid)
    started = time.monotonic()
    flood = [await asyncio.open_connection("127.0.0.1", proc.port) for _ in range(200)]  # connect, never say hello
    opening = time.monotonic() - started
    try:
        answers = await asyncio.gather(*(first_bytes(reader, 1) for reader, _ in flood))
        assert answers.count(b"") == 150 and answers.count(None) == 50, (opening, Counter(map(repr, answers)))  # refused at accept

        outcomes = []
        connector = aiohttp.TCPConnector(local_addr=(HONEST, 0), force_close=True, ssl=client)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as https:
            async with https.put(f"{proc.url}/hash/{h}", data=data, headers=OCTETS) as resp:
                outcomes.append(resp.status)
            for _ in range(20):
                async with https.get(f"{proc.url}/hash/{h}") as resp:
                    outcomes.append(resp.status if await resp.read() == data else -1)
        assert outcomes == [200] * 21, Counter(outcomes)

        # the handshakes never finished: each closed after the handshake timeout (here the idle timeout, 10 s);
        # a connection still open when first_bytes stops waiting reads as None, not b""
        closed = await asyncio.gather(*(first_bytes(reader, 14) for reader, _ in flood))
        assert closed.count(b"") == 200, Counter(map(repr, closed))
        assert fds(pid) <= baseline + 5
    finally:
        for _, writer in flood:
            writer.close()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as https:
        async with https.get(f"{proc.url}/metrics") as resp:
            text = await resp.text()
    assert re.search(r'^tails_connections_refused_total\{reason="too_many_from_client"\} 150\.0$', text, re.M), text
    assert re.search(r"^tails_connections_open 1\.0$", text, re.M), text  # this one; the flood's are all given back

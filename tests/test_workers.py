"""--workers: several processes on one port, publishing safely into one storage directory."""

from __future__ import annotations

import asyncio
import os
import signal

from support import id_upload, random_tails, tails_hash

UPLOADERS = 16


async def test_two_workers_share_port_and_storage(new_server, http, ledger, issuer):
    proc = new_server("--workers", "2")
    made = issuer.registry(1000)
    ledger.publish(made.definition)

    async def upload_by_id():
        # A new connection each time, so SO_REUSEPORT spreads uploads over both workers.
        async with http.put(proc.url + made.path, data=id_upload(ledger.genesis_text, made.tails), headers={"Connection": "close"}) as resp:
            return resp.status

    statuses = sorted(await asyncio.gather(*(upload_by_id() for _ in range(UPLOADERS))))
    assert statuses == [200] + [409] * (UPLOADERS - 1)

    data, h = random_tails(2048)

    async def upload_by_hash():
        headers = {"Content-Type": "application/octet-stream", "Connection": "close"}
        async with http.put(f"{proc.url}/hash/{h}", data=data, headers=headers) as resp:
            return resp.status

    statuses = sorted(await asyncio.gather(*(upload_by_hash() for _ in range(UPLOADERS))))
    assert statuses == [200] + [409] * (UPLOADERS - 1)
    for _ in range(8):
        async with http.get(proc.url + made.path, headers={"Connection": "close"}) as resp:
            assert tails_hash(await resp.read()) == made.tails_hash
    assert (proc.storage / "hash" / h).read_bytes() == data
    assert list((proc.storage / ".tmp").iterdir()) == []


async def test_supervisor_restarts_a_dead_worker_and_stops_cleanly(new_server, http):
    import psutil

    proc = new_server("--workers", "2")
    children = psutil.Process(proc.proc.pid).children()
    assert len(children) == 2
    os.kill(children[0].pid, signal.SIGKILL)
    for _ in range(100):  # bounded: up to 10 s for the replacement
        alive = [c for c in psutil.Process(proc.proc.pid).children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        if len(alive) == 2 and children[0].pid not in [c.pid for c in alive]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no replacement worker")
    async with http.get(proc.url + "/") as resp:
        assert resp.status == 200
    proc.proc.terminate()
    assert proc.proc.wait(20) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children[1:])


def test_workers_that_cannot_bind_make_the_server_exit(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tails_server", "--workers", "2", "--port", str(port), "--storage-path", str(tmp_path / "s")],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert "right after starting" in result.stderr


async def test_request_ids_made_by_two_workers_never_repeat(new_server):
    """Each worker makes its own ids (the module that makes them is loaded before the fork)."""
    proc = new_server("--workers", "2")
    data, h = random_tails(100)
    ids = set()
    for _ in range(40):  # a new connection each time: SO_REUSEPORT spreads them over both workers
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        for target in (f"/hash/{h}", "/livez"):  # the front door's 404 hand-over, then aiohttp's own route
            writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            ids.add(next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("x-request-id:")))
            length = int(next(line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("content-length:")))
            await reader.readexactly(length)
        writer.close()
    assert len(ids) == 80

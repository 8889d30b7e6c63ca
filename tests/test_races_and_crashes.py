"""Races between uploads, downloads racing an upload, and a server killed mid-upload."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from ledger_double import SILENT_READS
from support import SlowUpload, encode_multipart, id_upload, random_tails, raw_request, read_response, tails_hash, wait_for

UPLOADERS = 8


async def test_concurrent_uploads_of_one_id(http, server, ledger, issuer):
    made = issuer.registry(1000)
    ledger.publish(made.definition)

    async def upload():
        async with http.put(server.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
            return resp.status, await resp.text()

    results = await asyncio.gather(*(upload() for _ in range(UPLOADERS)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (UPLOADERS - 1), results
    async with http.get(server.url + made.path) as resp:
        assert tails_hash(await resp.read()) == made.tails_hash
    assert server.view.temp_files() == []


async def test_concurrent_uploads_of_one_hash(http, server):
    data, h = random_tails(4096)

    async def upload():
        async with http.put(f"{server.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
            return resp.status

    statuses = sorted(await asyncio.gather(*(upload() for _ in range(UPLOADERS))))
    assert statuses == [200] + [409] * (UPLOADERS - 1)
    assert server.view.file(h) == data


async def test_get_racing_an_upload_sees_404_or_the_whole_file(http, server, ledger, issuer):
    made = issuer.registry(1000)
    ledger.publish(made.definition)
    body, ctype = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", made.tails)])
    upload = SlowUpload(server.port, made.path, body, ctype)
    seen: list[int] = []

    async def reader(stop: asyncio.Event):
        for _ in range(2000):  # bounded
            for path in (made.path, f"/hash/{made.tails_hash}"):
                async with http.get(server.url + path) as resp:
                    data = await resp.read()
                    assert resp.status in (200, 404)
                    if resp.status == 200:
                        assert data == made.tails
                    seen.append(resp.status)
            if stop.is_set():
                return

    stop = asyncio.Event()
    task = asyncio.create_task(reader(stop))
    await upload.send_first_half()
    await asyncio.sleep(0.2)
    status, text = await upload.finish()
    assert (status, text) == (200, made.tails_hash.encode())
    await asyncio.sleep(0.1)
    stop.set()
    await task
    assert 404 in seen and seen[-1] == 200


async def test_sigkill_mid_upload_leaves_nothing_and_restart_sweeps(new_server, ledger, issuer, http):
    made = issuer.registry(1000)
    ledger.publish(made.definition)
    proc = new_server()
    body, ctype = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", made.tails)])
    upload = SlowUpload(proc.port, made.path, body, ctype)
    await upload.send_first_half()
    tmp = proc.storage / ".tmp"
    await wait_for(lambda: any(tmp.iterdir()))  # the server is writing the temp file
    proc.kill()
    upload.abandon()

    assert list((proc.storage / "hash").iterdir()) == []
    assert list((proc.storage / "id").iterdir()) == []
    assert len(list(tmp.iterdir())) == 1  # the crash left its temp file...

    restarted = new_server(storage=proc.storage)
    assert list(tmp.iterdir()) == []  # ...and the next start removed it
    async with http.get(restarted.url + made.path) as resp:
        assert resp.status == 404
    async with http.put(restarted.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert resp.status == 200
    assert (restarted.storage / "id" / quote(made.id, safe=":")).read_bytes() == made.tails


async def test_live_temp_files_of_another_server_survive_its_start(new_server, tmp_path, http):
    """A second instance on the same storage must not delete uploads that are still running."""
    first = new_server()
    data, h = random_tails(4096)
    upload = SlowUpload(first.port, f"/hash/{h}", data, "application/octet-stream")
    await upload.send_first_half()
    tmp = first.storage / ".tmp"
    await wait_for(lambda: any(tmp.iterdir()))
    new_server(storage=first.storage)
    assert len(list(tmp.iterdir())) == 1
    assert await upload.finish() == (200, h.encode())
    assert (first.storage / "hash" / h).read_bytes() == data


async def test_client_disconnect_mid_upload_leaves_no_temp_file(server, http):
    """An uploader that hangs up is routine: no temp file, no traceback, logged as 499."""
    data, h = random_tails(4096)
    log_start = len(server.log())
    upload = SlowUpload(server.port, f"/hash/{h}", data, "application/octet-stream")
    await upload.send_first_half()
    tmp = server.storage / ".tmp"
    await wait_for(lambda: any(tmp.iterdir()))
    upload.abandon()
    await wait_for(lambda: not any(tmp.iterdir()))
    assert server.view.file(h) is None
    await wait_for(lambda: f"/hash/{h}" in server.log()[log_start:])  # access lines come in batches
    log = server.log()[log_start:]
    assert f'"PUT /hash/{h}" 499 ' in log and "Traceback" not in log and "Error handling request" not in log
    async with http.get(f"{server.url}/metrics") as resp:
        counts = re.findall(r'^tails_uploads_total\{outcome="abandoned"\} ([0-9.]+)$', await resp.text(), re.M)
    assert counts and float(counts[0]) >= 1


async def test_storage_failure_is_503_and_server_recovers(new_server, http):
    proc = new_server()
    tmp = proc.storage / ".tmp"
    tmp.rmdir()
    tmp.write_text("not a directory")  # every new temp file now fails with ENOTDIR
    data, h = random_tails(10)
    headers = {"Content-Type": "application/octet-stream"}
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=headers) as resp:
        assert resp.status == 503 and (await resp.text()).startswith("Storage error")
    assert not (proc.storage / "hash" / h).exists()
    tmp.unlink()
    tmp.mkdir()
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers=headers) as resp:
        assert resp.status == 200


async def test_dangling_id_link_left_by_a_crash_counts_as_absent(http, new_server, ledger, issuer):
    """A power loss may keep an id's symlink but not its target: 404, and the next upload repairs it."""
    server = new_server()  # the local layout's own failure mode
    made = issuer.registry(5)
    ledger.publish(made.definition)
    _, missing = random_tails(3)
    link = server.storage / "id" / quote(made.id, safe=":")
    link.symlink_to(f"../hash/{missing}")
    async with http.get(server.url + made.path) as resp:
        assert resp.status == 404
    async with http.put(server.url + made.path, data=id_upload(ledger.genesis_text, made.tails)) as resp:
        assert (resp.status, await resp.text()) == (200, made.tails_hash)
    assert link.read_bytes() == made.tails


async def test_stalled_upload_is_cut_off_with_408(new_server, ledger, issuer, http):
    """A client that stops sending gets 408 after --read-timeout; its temp file goes; others are served."""
    proc = new_server("--read-timeout", "1")
    data, h = random_tails(4096)
    made = issuer.registry(1000)
    ledger.publish(made.definition)
    multipart, ctype = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", made.tails)])
    for target, body, content_type in ((f"/hash/{h}", data, "application/octet-stream"), (made.path, multipart, ctype)):
        stalled = SlowUpload(proc.port, target, body, content_type)
        await stalled.send_first_half()
        async with http.get(proc.url + "/livez") as resp:  # the server keeps serving meanwhile
            assert resp.status == 200
        status, text = await stalled.response()
        stalled.abandon()
        assert status == 408 and b"No request data for 1 s" in text
    await wait_for(lambda: not any((proc.storage / ".tmp").iterdir()))
    assert list((proc.storage / "hash").iterdir()) == []


async def test_upload_stalled_while_the_ledger_is_silent_gets_408(new_server, ledger, issuer):
    """The body's clock runs while the lookup is pending too (the read then has a task of its own)."""
    ledger.set_modes(SILENT_READS)
    proc = new_server("--read-timeout", "1", "--ledger-timeout", "10")
    made = issuer.registry(1000)
    ledger.publish(made.definition)
    multipart, ctype = encode_multipart([("genesis", ledger.genesis_text.encode()), ("tails", made.tails)])
    stalled = SlowUpload(proc.port, made.path, multipart, ctype)
    await stalled.send_first_half()
    status, text = await stalled.response()
    stalled.abandon()
    assert status == 408 and b"No request data for 1 s" in text, (status, text)
    await wait_for(lambda: not any((proc.storage / ".tmp").iterdir()))


async def test_upload_trickling_in_below_the_read_timeout_is_not_cut_off(new_server):
    """--read-timeout bounds each wait for bytes, not the whole body: a slow, steady client is served."""
    proc = new_server("--read-timeout", "1")
    data, h = random_tails(4096)
    pieces = 8  # 0.3 s apart: the body takes over twice the timeout
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        writer.write(data[start:start + step])
        await writer.drain()
        await asyncio.sleep(0.3)
    status, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, h.encode())
    assert proc.view.file(h) == data


async def test_uploads_past_max_uploads_get_503_and_the_rest_go_on(new_server, http):
    proc = new_server("--max-uploads", "2")
    held = []
    for _ in range(2):  # two uploads in flight hold both places
        data, h = random_tails(4096)
        upload = SlowUpload(proc.port, f"/hash/{h}", data, "application/octet-stream")
        await upload.send_first_half()
        held.append((upload, h))
    await wait_for(lambda: len(list((proc.storage / ".tmp").iterdir())) == 2)
    data, h = random_tails(3)
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 503 and "Too many uploads" in await resp.text()
    async with http.get(proc.url + "/livez") as resp:
        assert resp.status == 200
    for upload, held_hash in held:
        assert await upload.finish() == (200, held_hash.encode())
    async with http.put(f"{proc.url}/hash/{h}", data=data, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200


async def test_oversized_headers_are_refused(new_server, http):
    proc = new_server("--max-header-size", "1024")
    status, _ = await raw_request(proc.port, "GET", "/livez", {"X-Big": "a" * 2000})
    assert status in (400, 431)
    status, _ = await raw_request(proc.port, "GET", "/livez", {"X-Small": "a" * 500})
    assert status == 200


async def test_slowloris_headers_are_cut_off_while_others_are_served(new_server, http):
    """A client trickling its request headers loses the connection after --idle-timeout."""
    proc = new_server("--idle-timeout", "1")
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for i in range(40):  # one header byte every 0.25 s, never finishing: bounded to 10 s
        async with http.get(proc.url + "/livez") as resp:
            assert resp.status == 200  # everyone else is served meanwhile
        try:
            writer.write(b"X-Slow: " if i == 0 else b"a")
            await writer.drain()
            if await asyncio.wait_for(reader.read(1), 0.25) == b"":
                closed = True
                break
        except (ConnectionError, TimeoutError):
            if writer.transport.is_closing() or reader.at_eof():
                closed = True
                break
    writer.close()
    assert closed, "the server kept a connection whose headers never ended"

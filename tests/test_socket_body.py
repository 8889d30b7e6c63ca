"""Bodies a worker thread reads straight off the socket: exact bytes, refusals, stalls and hang-ups.

A body that has not fully arrived when its handler starts (plain HTTP with a Content-Length)
is read by a worker thread, and its response closes the connection: these tests send their
bodies in pieces so that it is, and check that the response says `Connection: close`.
"""

from __future__ import annotations

import asyncio

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from support import ServerProcess, encode_multipart, random_tails, read_response, tails_hash, wait_for

PIECE = 1 << 16


async def put_in_pieces(port: int, target: str, body: bytes, content_type: str = "application/octet-stream",
                        send: int | None = None, pause: float = 0.01, drained: bool = True,
                        ) -> tuple[int, dict[str, str], bytes, asyncio.StreamWriter]:
    """PUT with a Content-Length, the body written in 64 KiB pieces (only `send` bytes of it, if given).

    Returns status, headers (lower-case names), body and the writer (the caller closes it). After a
    200 to a whole body, checks that the server closes the connection at once if it says it will.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    end = len(body) if send is None else send
    for start in range(0, end, PIECE):
        writer.write(body[start:min(start + PIECE, end)])
        await writer.drain()
        await asyncio.sleep(pause)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    data = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 30)
    if status_line.split()[1] == "200" and send is None and headers.get("connection") == "close" and drained:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once: nothing was left unread
    return int(status_line.split()[1]), headers, data, writer


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_a_body_read_off_the_socket_is_stored_exactly(new_server, form):
    proc = new_server()
    data, h = random_tails(24_000)  # 3 MiB
    body, ctype = (data, "application/octet-stream") if form == "raw" else encode_multipart([("tails", data)])
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", body, ctype)
    writer.close()
    assert (status, text) == (200, h.encode())
    assert headers["connection"] == "close"  # the worker thread read it: aiohttp's parser did not
    assert proc.view.file(h) == data
    assert proc.view.temp_files() == []


async def test_a_body_sent_with_its_headers_keeps_the_connection(new_server):
    """A small body that arrived with the headers stays on the event loop: keep-alive as usual."""
    proc = new_server()
    data, h = random_tails(40)
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    for attempt in range(2):  # two uploads on one connection
        target = f"/hash/{h}"
        writer.write(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert b"connection: close" not in head.lower(), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        text = await asyncio.wait_for(reader.readexactly(length), 30)
        assert (head.split()[1], text) == ((b"200", h.encode()) if attempt == 0 else (b"409", b"This tails file already exists."))
    writer.close()


async def test_a_stall_off_the_event_loop_gets_408(new_server):
    proc = new_server("--read-timeout", "1")
    data, h = random_tails(24_000)
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", data, send=len(data) // 2)
    writer.close()
    assert (status, text) == (408, b"No request data for 1 s.")
    assert headers["connection"] == "close"
    await wait_for(lambda: proc.view.temp_files() == [])
    assert proc.view.file(h) is None


async def test_a_bad_header_is_refused_before_the_body_ends(new_server):
    proc = new_server()
    data, h = random_tails(24_000)
    bad = b"\x00\x03" + data[2:]
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", bad, send=len(bad) // 2)
    writer.close()
    assert (status, text) == (400, b'Tails file must start with "00 02".')
    await wait_for(lambda: proc.view.temp_files() == [])


async def test_an_oversized_body_is_refused_before_it_ends(new_server):
    proc = new_server("--max-tails-size", str(1 << 20))
    data, h = random_tails(24_000)
    body, ctype = encode_multipart([("tails", data)])
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", body, ctype, send=len(body) // 2)
    writer.close()
    assert status == 413 and b"larger than the limit" in text
    await wait_for(lambda: proc.view.temp_files() == [])
    assert proc.view.file(h) is None


async def test_a_client_that_hangs_up_mid_body_leaves_nothing(new_server, http):
    proc = new_server()
    data, h = random_tails(24_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[: len(data) // 2])
    await writer.drain()
    await wait_for(lambda: proc.view.temp_files() != [])  # the upload is under way
    writer.close()
    await wait_for(lambda: proc.view.temp_files() == [])
    assert proc.view.file(h) is None
    async with http.put(f"{proc.url}/hash/{h}", data=data) as resp:  # the server goes on
        assert (resp.status, await resp.text()) == (200, h)
    assert "Traceback" not in proc.log()


async def test_a_long_epilogue_after_the_tails_part_is_drained_by_the_server(new_server):
    """Bytes after the part's closing delimiter are not tails content; far more than a closing
    "--" is left to aiohttp's bounded drain, and the upload still succeeds."""
    proc = new_server()
    data, h = random_tails(24_000)
    body, ctype = encode_multipart([("tails", data), ("extra", b"x" * 300_000)])
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", body, ctype, drained=False)
    writer.close()
    assert (status, text) == (200, h.encode())
    assert proc.view.file(h) == data


async def test_a_part_without_its_closing_boundary_is_400(new_server):
    proc = new_server()
    data, h = random_tails(24_000)
    body, ctype = encode_multipart([("tails", data)])
    cut = body[: body.rindex(b"\r\n--")]  # the whole body as declared, but the delimiter is missing
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", cut, ctype)
    writer.close()
    assert status == 400 and b"no closing boundary" in text
    assert proc.view.file(h) is None


BOUNDARY = "9f3c1b7e5a2d4c6b8e0f1a3c5d7e9b2a"  # as ACA-Py's HTTP client makes them
DELIMITER = b"\r\n--" + BOUNDARY.encode()


def lookalike_records(count: int) -> bytes:
    """Tails records full of pieces of the closing delimiter, so that some land on every 1 MiB edge."""
    records = []
    for i in range(count):
        stub = DELIMITER[: 1 + i % (len(DELIMITER) - 1)]  # never the whole delimiter
        records.append((stub * (128 // len(stub) + 1))[:128])
    return b"".join(records)


async def test_pieces_of_the_delimiter_in_the_content_are_content(new_server):
    """The thread finds the part's end in the file and hashes in 1 MiB regions; a delimiter's
    first bytes held back at a region's edge are content once the next region shows they are."""
    proc = new_server()
    data = b"\x00\x02" + lookalike_records(24_000)
    h = tails_hash(data)
    body, ctype = encode_multipart([("tails", data)], BOUNDARY)
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", body, ctype)
    writer.close()
    assert (status, text, headers["connection"]) == (200, h.encode(), "close")
    assert proc.view.file(h) == data


async def test_a_part_ends_at_the_first_whole_delimiter(new_server):
    """A delimiter inside the bytes sent ends the part there: what follows it, already in the temp
    file, is cut off, and the part up to it is stored if it is a tails file of its own."""
    proc = new_server()
    first, h = random_tails(12_000)  # 1.5 MiB
    rest, _ = random_tails(12_000)
    body, ctype = encode_multipart([("tails", first + DELIMITER + b"\r\n" + rest)], BOUNDARY)
    status, headers, text, writer = await put_in_pieces(proc.port, f"/hash/{h}", body, ctype, drained=False)
    writer.close()
    assert (status, text, headers["connection"]) == (200, h.encode(), "close")
    assert proc.view.file(h) == first
    assert proc.view.temp_files() == []


async def test_a_delimiter_the_client_sends_in_two_pieces_is_found(new_server):
    """The thread hashes what it has up to the last bytes that may start the delimiter: with the
    file exactly at --max-tails-size, hashing those bytes too would count them as content (413)."""
    data, h = random_tails(8_000)
    proc = new_server("--max-tails-size", str(len(data)))
    body, ctype = encode_multipart([("tails", data)], BOUNDARY)
    cut = body.index(DELIMITER) + 12  # inside the delimiter
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(f"PUT /hash/{h} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    writer.write(body[:cut])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(body[cut:])
    assert await read_response(reader) == (200, h.encode())
    writer.close()
    assert proc.view.file(h) == data


async def test_a_bad_header_already_received_is_refused_without_waiting_for_more(new_server):
    """Bytes that came with the request headers are checked before the thread waits for the rest."""
    proc = new_server("--read-timeout", "20")
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(b"PUT /hash/4ANLaDmJVzMTUaQdhVbqLP8vobQGsDL7Lbm6pHsGsUta HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 1000002\r\n\r\n\x00\x03" + bytes(1000))
    await writer.drain()
    assert await read_response(reader, timeout=10) == (400, b'Tails file must start with "00 02".')
    writer.close()
    await wait_for(lambda: proc.view.temp_files() == [])


RECORDS = 64
LOOKALIKE_RECORDS = [(DELIMITER[:k] * (128 // k + 1))[-128:] for k in (1, 2, 4, 5, 17, len(DELIMITER) - 1)]
WHOLE_DELIMITER_RECORD = (b"x" * 128 + DELIMITER)[-128:]


async def put_in_cut_pieces(port: int, target: str, content_type: str, body: bytes, cuts: list[int]) -> tuple[int, bytes]:
    """PUT with the body cut at `cuts`, pausing between pieces so that each is a read of its own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode())
    start = 0
    try:
        for end in [*sorted(set(cuts)), len(body)]:
            await asyncio.sleep(0.01)
            writer.write(body[start:end])
            await writer.drain()
            start = end
    except ConnectionError:  # answered early and closed: the answer is what counts
        pass
    try:
        return await read_response(reader)
    finally:
        writer.close()


@pytest.fixture(scope="module")
def exact_limit_server(tmp_path_factory):
    """A server whose size limit is exactly the content size below: every read past the content
    (delimiter bytes) makes the thread look at what it has, so the pieces' edges are its edges."""
    proc = ServerProcess(tmp_path_factory.mktemp("limit") / "storage", "--max-tails-size", str(2 + 128 * RECORDS)).start()
    yield proc
    proc.stop()


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.one_of(st.binary(min_size=128, max_size=128), st.sampled_from(LOOKALIKE_RECORDS)),
                     min_size=RECORDS, max_size=RECORDS),
    whole_at=st.one_of(st.none(), st.integers(0, RECORDS - 1)),
    cuts=st.lists(st.integers(-60, len(DELIMITER) + 4), min_size=1, max_size=4),
)
def test_a_part_cut_anywhere_near_its_end_is_read_to_its_first_delimiter(exact_limit_server, records, whole_at, cuts):
    """Whatever the pieces, the stored content is the part up to its first delimiter, as aiohttp reads it."""
    if whole_at is not None:
        records[whole_at] = WHOLE_DELIMITER_RECORD
    content = b"\x00\x02" + b"".join(records)
    body, ctype = encode_multipart([("tails", content)], BOUNDARY)
    expected = content[: (content + DELIMITER).find(DELIMITER)]
    h = tails_hash(expected)
    end = body.index(DELIMITER)  # where the part's content ends: the pieces are cut around it
    status, text = asyncio.run(put_in_cut_pieces(exact_limit_server.port, f"/hash/{h}", ctype, body, [end + c for c in cuts]))
    if (len(expected) - 2) % 128:
        assert (status, text) == (400, b"Tails file is not the correct size.")
    else:
        assert (status, text) in ((200, h.encode()), (409, b"This tails file already exists."))
        assert exact_limit_server.view.file(h) == expected

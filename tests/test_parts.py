"""LastPart against aiohttp's own part reader: the same content for any body, cut into any chunks."""

from __future__ import annotations

import asyncio
import itertools

import hypothesis.strategies as st
import pytest
from aiohttp import MultipartReader, StreamReader
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given, settings

from tails_server.errors import BadRequest
from tails_server.parts import LastPart

BOUNDARY = "tails-part-boundary"
DELIMITER = b"\r\n--" + BOUNDARY.encode()
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
PART_HEAD = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="tails"\r\n\r\n'.encode()

# Content made of pieces that look like the start of the delimiter, so that some cut falls inside one.
LOOKALIKES = [DELIMITER[:k] for k in range(1, len(DELIMITER))] + [b"\r\n", b"--", b"\r\n\r\n"]
CONTENT = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(LOOKALIKES)), max_size=24).map(b"".join)
ENDINGS = st.sampled_from([b"--\r\n", b"--", b"\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nmore\r\n--" + BOUNDARY.encode() + b"--\r\n"])


def cut(body: bytes, points: list[int]) -> list[bytes]:
    """The body in chunks, cut at the given offsets (as TCP might deliver it)."""
    offsets = sorted({0, len(body), *(p % (len(body) + 1) for p in points)})
    return [body[a:b] for a, b in itertools.pairwise(offsets)]


async def first_part(chunks: list[bytes], ours: bool, http_chunked: bool = False) -> bytes:
    """The first part's content, read by LastPart or by aiohttp's BodyPartReader.

    `http_chunked`: each piece arrives as one HTTP/1.1 chunk (Transfer-Encoding: chunked), with
    an empty chunk between them, as aiohttp's parser marks them.
    """
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), 1 << 24, loop=loop)  # never pauses: all is fed at once
    for chunk in chunks:
        if http_chunked:
            stream.begin_http_chunk_receiving()
            stream.end_http_chunk_receiving()  # an empty chunk: readchunk() then gives (b"", True)
            stream.begin_http_chunk_receiving()
        stream.feed_data(chunk)
        if http_chunked:
            stream.end_http_chunk_receiving()
    stream.feed_eof()
    part = await MultipartReader(HEADERS, stream).next()

    async def passthrough(awaitable):
        return await awaitable

    read_chunk = LastPart(stream, BOUNDARY.encode(), passthrough).read_chunk if ours else part.read_chunk
    pieces = []
    while piece := await read_chunk(1 << 16):
        pieces.append(bytes(piece))
    return b"".join(pieces)


@settings(max_examples=400, deadline=None)
@given(content=CONTENT, ending=ENDINGS, points=st.lists(st.integers(0, 1 << 12), max_size=12), http_chunked=st.booleans())
def test_last_part_reads_what_aiohttp_reads(content, ending, points, http_chunked):
    body = PART_HEAD + content + DELIMITER + ending
    chunks = cut(body, points)
    ours = asyncio.run(first_part(chunks, ours=True, http_chunked=http_chunked))
    # The content ends at the first delimiter, counting a CRLF in front of the content (as aiohttp does).
    expected = (b"\r\n" + content + DELIMITER).find(DELIMITER)
    assert ours == (b"\r\n" + content)[2:expected]
    assert ours == asyncio.run(first_part(chunks, ours=False))


@pytest.mark.parametrize("size", [1, 7, 1 << 16])
def test_a_large_part_in_chunks_of_any_size_comes_out_whole(size):
    content = bytes(range(256)) * 1024 + DELIMITER[:-1]  # ends in a near-delimiter
    body = PART_HEAD + content + DELIMITER + b"--\r\n"
    assert asyncio.run(first_part([body[i:i + size] for i in range(0, len(body), size)], ours=True)) == content


def test_a_part_without_its_closing_boundary_is_a_bad_request():
    with pytest.raises(BadRequest, match="no closing boundary"):
        asyncio.run(first_part([PART_HEAD + b"\x00\x02" + b"x" * 128], ours=True))

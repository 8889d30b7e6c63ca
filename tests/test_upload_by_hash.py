"""PUT /hash/{tails_hash}: multipart (any first part) or a raw body, checked against the hash itself."""

from __future__ import annotations

import aiohttp
import pytest
from conftest import MAX_TAILS
from support import chunked_put, encode_multipart, hash_upload, random_tails


async def put_raw(http, server, path: str, data: bytes, content_type: str | None = "application/octet-stream"):
    headers = {"Content-Type": content_type} if content_type else {}
    async with http.put(server.url + path, data=data, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_multipart_upload_stores_exact_bytes(http, server):
    data, h = random_tails(1000)
    async with http.put(f"{server.url}/hash/{h}", data=hash_upload(data)) as resp:
        assert (resp.status, await resp.text()) == (200, h)
        assert resp.content_type == "text/plain"
    assert server.view.file(h) == data


async def test_raw_body_as_curl_T_sends(http, server):
    data, h = random_tails(64)
    assert await put_raw(http, server, f"/hash/{h}", data) == (200, h)
    async with http.get(f"{server.url}/hash/{h}") as resp:
        assert await resp.read() == data


@pytest.mark.parametrize("form", ["raw", "multipart"])
async def test_chunked_bodies_store_exact_bytes(server, form):
    """Transfer-Encoding: chunked, with an HTTP chunk ending right where the part's content starts."""
    data, h = random_tails(3000)
    if form == "raw":
        body, content_type, cut = data, "application/octet-stream", 1000
    else:
        body, content_type = encode_multipart([("tails", data)])
        cut = body.index(b"\r\n\r\n") + 4  # the end of the part's headers
    pieces = [body[:cut], body[cut:cut + 7], body[cut + 7:cut + 200_000], body[cut + 200_000:]]
    assert await chunked_put(server.port, f"/hash/{h}", content_type, pieces) == (200, h.encode())
    assert server.view.file(h) == data


async def test_raw_body_without_content_type(http, server):
    data, h = random_tails(3)
    assert await put_raw(http, server, f"/hash/{h}", data, content_type=None) == (200, h)


async def test_unnamed_part_of_multipart_mixed_as_the_reference_tests_send(http, server):
    data, h = random_tails(2)
    with aiohttp.MultipartWriter("mixed") as writer:
        writer.append(data)
    async with http.put(f"{server.url}/hash/{h}", data=writer) as resp:
        assert (resp.status, await resp.text()) == (200, h)


async def test_two_byte_file_with_zero_records_is_accepted(http, server):
    data, h = random_tails(0)
    assert await put_raw(http, server, f"/hash/{h}", data) == (200, h)


async def test_duplicate_is_409(http, server):
    data, h = random_tails(5)
    assert (await put_raw(http, server, f"/hash/{h}", data))[0] == 200
    assert await put_raw(http, server, f"/hash/{h}", data) == (409, "This tails file already exists.")


async def test_hash_mismatch_is_400_and_nothing_stored(http, server):
    data, _ = random_tails(5)
    _, other = random_tails(5)
    assert await put_raw(http, server, f"/hash/{other}", data) == (400, "tailsHash does not match hash of file.")
    assert server.view.file(other) is None


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x03", 'Tails file must start with "00 02".'),
        (b"\x00\x02\x01", "Tails file is not the correct size."),
        (b"", 'Tails file must start with "00 02".'),
        (b"\x00", 'Tails file must start with "00 02".'),
    ],
)
async def test_not_a_tails_file_is_400(http, server, data, reason):
    from support import tails_hash

    assert await put_raw(http, server, f"/hash/{tails_hash(data)}", data) == (400, reason)


@pytest.mark.parametrize("bad", ["abc", "0" * 44, "x" * 500, "4ANLaDmJVzMTUaQdhVbqLP8vobQGsDL7Lbm6pHsGsUt", "1111111111111111111111111111111111111111111"])
async def test_malformed_hash_is_400(http, server, bad):
    data, _ = random_tails(1)
    status, body = await put_raw(http, server, f"/hash/{bad}", data)
    assert status == 400 and body.startswith("Tails hash is not valid")


async def test_oversized_is_413_without_temp_orphan(http, server):
    data, h = random_tails((MAX_TAILS // 128) + 1)
    status, body = await put_raw(http, server, f"/hash/{h}", data)
    assert status == 413 and "larger than the limit" in body
    assert server.view.file(h) is None
    assert server.view.temp_files() == []

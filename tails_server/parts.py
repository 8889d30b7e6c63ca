"""Request bodies read straight off the stream: raw, or the content of the last multipart part.

aiohttp's BodyPartReader finds the closing delimiter by joining each chunk to the one before
it: every byte of a tails file was copied twice more on the event loop, and multipart uploads
(the form ACA-Py sends) ran ~17% slower than raw ones. LastPart looks for the delimiter inside
each chunk and across chunk edges only, and hands out views of the chunks as they came off the
socket. It reads past the delimiter, so it is only for the last part an upload reads. (A body
that a worker thread moves into the temp file is searched there instead: socket_body.py.)
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import BodyPartReader, StreamReader, hdrs
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from .errors import BadRequest

Buffer = bytes | memoryview
Read = Callable[[Awaitable], Awaitable]  # wraps every wait for bytes (the request's stall clock)
NO_CLOSING_BOUNDARY = "Malformed multipart body: the tails part has no closing boundary."


def part_name(part: BodyPartReader) -> str | None:
    """The part's name, as BodyPartReader.name reads it."""
    return _name_in(part.headers.get(hdrs.CONTENT_DISPOSITION))


# aiohttp's parse_content_disposition re-escapes 128 characters for a default argument on every
# call (~0.15 ms under load here, three times per PUT /{id}); clients repeat the same few headers.
@functools.lru_cache(maxsize=128)
def _name_in(disposition: str | None) -> str | None:
    return content_disposition_filename(parse_content_disposition(disposition)[1], "name")


async def stream_chunk(content: StreamReader, read: Read) -> bytes:
    """The body's next bytes as the connection delivered them (no joining), b"" at its end."""
    while True:
        data, end_of_http_chunk = await read(content.readchunk())
        if data or not end_of_http_chunk:  # (b"", True) is an empty HTTP chunk, (b"", False) the end
            return data


class LastPart:
    """One part's content up to `CRLF--boundary`, as aiohttp would give it, without the copies."""

    def __init__(self, content: StreamReader, boundary: bytes, read: Read) -> None:
        self._content = content
        self._read = read
        self._delimiter = b"\r\n--" + boundary
        # As in aiohttp, a CRLF stands in front of the content (the part headers' blank line took
        # it), so that a delimiter right after the headers ends an empty part. It is never content.
        self._tail = b"\r\n"
        self._skip = 2
        self._ready: deque[Buffer] = deque()
        self._done = False

    async def read_chunk(self, _size: int = 0) -> Buffer:
        """The next piece of content, b"" after the last."""
        while not self._ready and not self._done:
            chunk = await stream_chunk(self._content, self._read)
            if not chunk:
                raise BadRequest(NO_CLOSING_BOUNDARY)
            self._scan(chunk)
        return self._ready.popleft() if self._ready else b""

    def _scan(self, chunk: bytes) -> None:
        """Queue the content in `chunk`; hold back its last bytes if they may start the delimiter."""
        keep = len(self._delimiter) - 1
        if len(chunk) < keep:  # a small piece (a trickling client): join it to what is held
            window = self._tail + chunk
            cut = window.find(self._delimiter)
            if cut >= 0:
                return self._finish(window[:cut])
            self._emit(window[:-keep])
            self._tail = window[-keep:]
            return None
        edge = self._tail + chunk[:keep]  # every delimiter that starts in the held bytes ends in here
        cut = edge.find(self._delimiter)
        if cut >= 0:
            return self._finish(edge[:cut])
        self._emit(self._tail)
        cut = chunk.find(self._delimiter)
        if cut >= 0:
            return self._finish(memoryview(chunk)[:cut])
        self._emit(memoryview(chunk)[:-keep])
        self._tail = chunk[-keep:]
        return None

    def _emit(self, piece: Buffer) -> None:
        if self._skip:
            dropped = min(self._skip, len(piece))
            piece, self._skip = piece[dropped:], self._skip - dropped
        if len(piece):
            self._ready.append(piece)

    def _finish(self, piece: Buffer) -> None:
        self._emit(piece)
        self._done = True

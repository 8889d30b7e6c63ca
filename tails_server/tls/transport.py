"""One TLS connection as an asyncio transport over a non-blocking ssl.SSLSocket.

asyncio's TLS runs OpenSSL over memory buffers and moves every record through Python: its
pure-Python state machine, a copy out of the outgoing buffer, then its own write to the socket.
Here OpenSSL reads and writes the socket itself, and Python only says when: the records of a
128 KiB answer leave in one call. The handshake is OpenSSL's, driven by the event loop's readiness
callbacks, within a timeout; the crypto is OpenSSL's through the standard library.

OpenSSL's rule for non-blocking writes shapes the write buffer: a write that would block must be
repeated with the same bytes, so each queued write stays whole until OpenSSL has sent all of it.
A writer that passes a read-only memoryview promises that its bytes stay as they are until the
write buffer is empty again (get_write_buffer_size() == 0): such a view is kept without a copy.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from asyncio import constants, transports
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

RECORD = 16384  # the most plaintext one TLS record carries
MAX_READ = 1 << 18  # the most one data_received gets: as much as asyncio's TLS gives, so uploads parse in big pieces
_LATER = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError)  # a write the socket cannot take now
_NO_DATA = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)  # a read with nothing there now
_CORK = getattr(socket, "TCP_CORK", None)
# Writes of more than one record, up to this size, are corked. A 128 KiB answer then took 100 against
# 113 us of the server's CPU and 70 against 81 us of the client's (bench/ab.py --tls, 8 rounds);
# corking each 256 KiB chunk of a 4 MiB body as well cost that body 25-35% more.
CORK_UP_TO = 1 << 18
_DETAILS = {"peercert": "getpeercert", "cipher": "cipher", "compression": "compression"}  # asked of OpenSSL when wanted


class TlsTransport(transports._FlowControlMixin):
    """A server-side TLS connection: handshake, reads, writes with flow control, close_notify, abort."""

    # loop.sendfile() writes file chunks through write() (aiohttp's FileResponse, for one).
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: Any, read_buffer: memoryview,
                 on_close: Callable[[TlsTransport], None]) -> None:
        super().__init__({"peername": peer, "socket": sock}, loop)
        self._sock: socket.socket | ssl.SSLSocket = sock
        self._fd = sock.fileno()
        self._protocol: asyncio.BaseProtocol | None = None  # set once the handshake is done
        self._buffer = read_buffer  # shared by the connections of one event loop: reads are copied out at once
        self._on_close = on_close
        self._pending: collections.deque[bytes] = collections.deque()  # whole writes OpenSSL has yet to finish
        self._size = 0  # bytes in _pending
        self._handshaking = True
        self._handshake_reads = True  # what the handshake waits for: reading (or else writing)
        self._reading = True  # the protocol wants data (pause_reading/resume_reading)
        self._eof = False  # the client closed its side
        self._closing = False  # close() or abort(): nothing more is read or accepted for writing
        self._lost = False  # the socket is closed
        self._read_wants_write = self._write_wants_read = False  # OpenSSL needs the other direction first
        self._watch_read = self._watch_write = False  # registered with the event loop
        self._timer: asyncio.TimerHandle | None = None  # the handshake's timeout, then the closing one
        self._timeout = 0.0  # for the handshake, and for a closing connection to take what is queued
        self._progress = 0.0  # when the socket last had room for queued writes
        self._ready: Callable[[], asyncio.BaseProtocol] | None = None

    # --- the handshake ------------------------------------------------------------------------

    def start(self, context: ssl.SSLContext, protocol_factory: Callable[[], asyncio.BaseProtocol], timeout: float) -> None:
        """Begin the handshake; the protocol is made and connected when it is done, and not if it fails or times out."""
        try:
            self._sock = context.wrap_socket(self._sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:  # the client is gone already
            self._force_close(exc)
            return
        self._extra["socket"] = self._sock
        self._ready = protocol_factory
        self._timeout = timeout
        self._timer = self._loop.call_later(timeout, self._handshake_timed_out)
        self._handshake()

    def _handshake(self) -> None:
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_reads = True
        except ssl.SSLWantWriteError:
            self._handshake_reads = False
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a bad hello, a reset, an EOF
            log.debug("TLS handshake failed: %s", exc.__class__.__name__)
            self._force_close(exc)
            return
        else:
            self._handshake_done()
            return
        self._update()

    def _handshake_done(self) -> None:
        self._handshaking = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._extra.update(sslcontext=self._sock.context, ssl_object=self._sock)
        try:
            self._protocol, self._ready = self._ready(), None
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._protocol_failed(exc)
            return
        if not self._closing:
            self._update()
            if self._reading:
                self._read()  # a request sent right behind the client's Finished is here already

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._handshaking:
            log.debug("TLS handshake timed out")
            self._force_close(TimeoutError("TLS handshake timed out"))

    # --- readiness ------------------------------------------------------------------------------

    def _update(self) -> None:
        """Watch the socket for what is wanted now, and only that (a watched, ready socket wakes the loop)."""
        if self._lost:
            return
        if self._handshaking:
            read, write = self._handshake_reads, not self._handshake_reads
        else:
            read = (self._reading and not self._closing and not self._eof) or self._write_wants_read
            write = (bool(self._pending) and not self._write_wants_read) or self._read_wants_write
        if read != self._watch_read:
            self._watch_read = read
            if read:
                self._loop.add_reader(self._fd, self._on_readable)
            else:
                self._loop.remove_reader(self._fd)
        if write != self._watch_write:
            self._watch_write = write
            if write:
                self._loop.add_writer(self._fd, self._on_writable)
            else:
                self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        if self._handshaking:
            self._handshake()
            return
        if self._write_wants_read:
            self._write_wants_read = False
            self._flush()
        if self._reading and not self._closing and not self._eof:
            self._read()

    def _on_writable(self) -> None:
        if self._handshaking:
            self._handshake()
            return
        self._progress = self._loop.time()  # the socket has room again: the client took some bytes
        if self._read_wants_write:
            self._read_wants_write = False
            if self._reading and not self._closing and not self._eof:
                self._read()
        self._flush()

    # --- reading --------------------------------------------------------------------------------

    def _read(self) -> None:
        """Hand the protocol what OpenSSL decrypts now, up to MAX_READ bytes in one piece."""
        sock, view, got, error, eof = self._sock, self._buffer, 0, None, False
        try:
            while got < MAX_READ:
                n = sock.recv_into(view[got:])
                if not n:
                    eof = True
                    break
                got += n
                if n < RECORD:
                    break  # a short record: the client's write ended; anything more wakes the loop again
        except _NO_DATA:
            pass
        except ssl.SSLWantWriteError:  # OpenSSL must answer something (a key update) before it reads on
            self._read_wants_write = True
            self._update()
        except (OSError, ValueError) as exc:
            error = exc
        try:
            if got:
                self._protocol.data_received(bytes(view[:got]))
            if error is None and eof and not self._closing:
                self._eof = True
                self._update()
                if not self._protocol.eof_received():
                    self.close()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # as asyncio's transports: report it, and end the connection
            self._protocol_failed(exc)
            return
        if error is not None:
            self._fatal(error)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._update()

    def resume_reading(self) -> None:
        if self._reading or self._closing:
            return
        self._reading = True
        self._update()
        # Reads take whole records, so OpenSSL keeps none decrypted; if it ever did, no wake-up would say so.
        if not self._handshaking and not self._eof and self._sock.pending():
            self._loop.call_soon(self._read_if_wanted)

    def _read_if_wanted(self) -> None:
        if self._reading and not self._closing and not self._eof:
            self._read()

    # --- writing --------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._maybe_corked(self._write, data, len(data))

    def writelines(self, items: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write each item; a short one is joined to the start of the next, so it does not take a record of its own."""
        items = items if isinstance(items, (list, tuple)) else list(items)
        self._maybe_corked(self._writelines, items, sum(map(len, items)))

    def _maybe_corked(self, write: Callable[[Any], None], what: Any, size: int) -> None:
        """One answer of more than one record, up to CORK_UP_TO, under TCP_CORK (Linux): its records
        leave in full segments, not one segment each. With something queued the socket is full anyway."""
        if _CORK is None or not RECORD < size <= CORK_UP_TO or self._pending or self._closing:
            write(what)
            return
        sock = self._sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
        except OSError:  # the connection failed: the write learns why
            write(what)
            return
        try:
            write(what)
        finally:
            if not self._lost:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self._closing:
            return  # like asyncio's transports, writes to a closed connection go nowhere
        if not self._pending and not self._handshaking:
            try:
                self._sock.send(data)
                return
            except _LATER:
                pass
            except ssl.SSLWantReadError:
                self._write_wants_read = True
            except (OSError, ValueError) as exc:
                self._fatal(exc)
                return
        # Kept whole, as OpenSSL must be given it again: bytes and read-only views as they are (see
        # the module's docstring), anything else copied, as it may change under us.
        if not (isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly)):
            data = bytes(data)
        self._pending.append(data)
        self._size += len(data)
        self._update()
        self._maybe_pause_protocol()

    def _writelines(self, items: Iterable[bytes | bytearray | memoryview]) -> None:
        short = b""
        for item in items:
            if len(short) + len(item) <= RECORD:
                short += item
                continue
            if short:
                view = memoryview(item).cast("B")
                fill = RECORD - len(short)
                self._write(short + view[:fill])
                item, short = view[fill:], b""
            self._write(item)
        if short:
            self._write(short)

    def _flush(self) -> None:
        """Write queued data while the socket takes it; then let a paused protocol go on."""
        pending, sock = self._pending, self._sock
        while pending:
            data = pending[0]
            try:
                sock.send(data)
            except _LATER:
                break
            except ssl.SSLWantReadError:
                self._write_wants_read = True
                break
            except (OSError, ValueError) as exc:
                self._fatal(exc)
                return
            pending.popleft()
            self._size -= len(data)
        if not pending and self._closing:
            self._finish_close()
            return
        self._maybe_resume_protocol()  # may write more, at once
        self._update()

    def get_write_buffer_size(self) -> int:
        return self._size

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close of our side short of close_notify

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    # --- closing --------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading, send what is queued, then close_notify and close.

        A client that takes none of what is queued for the timeout is cut off: one that stopped
        reading must not hold its connection open past the idle timeout that closed it.
        """
        if self._closing:
            return
        self._closing = True
        if self._handshaking or not self._pending:
            self._finish_close()
        else:
            self._update()
            self._progress = self._loop.time()
            self._timer = self._loop.call_later(self._timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._timer = None
        if not self._pending:
            return
        due = self._progress + self._timeout
        if self._loop.time() < due:  # it took some since: it gets the time again
            self._timer = self._loop.call_at(due, self._close_timed_out)
            return
        log.debug("TLS connection closed with %d bytes unsent", self._size)
        self._force_close(None)

    def abort(self) -> None:
        self._force_close(None)

    def _finish_close(self) -> None:
        if not self._handshaking:
            try:  # close_notify, if the socket takes it; the client's own is not waited for (as nginx)
                self._sock.unwrap()
            except (OSError, ValueError):
                pass
        self._force_close(None)

    def _protocol_failed(self, exc: BaseException) -> None:
        self._loop.call_exception_handler(
            {"message": "protocol callback failed on a TLS connection", "exception": exc, "transport": self,
             "protocol": self._protocol}
        )
        self._force_close(exc)

    def _fatal(self, exc: BaseException) -> None:
        log.debug("TLS connection failed: %s", exc.__class__.__name__)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        if self._watch_read:
            self._loop.remove_reader(self._fd)
        if self._watch_write:
            self._loop.remove_writer(self._fd)
        self._watch_read = self._watch_write = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._size = 0
        self._sock.close()
        self._on_close(self)
        if self._protocol is not None:  # a protocol exists only once the handshake is done
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        protocol, self._protocol = self._protocol, None
        protocol.connection_lost(exc)

    # --- the rest of asyncio.Transport ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":  # asked for rarely: not looked up for every connection
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        method = _DETAILS.get(name)
        if method is not None:
            return getattr(self._sock, method)() if not self._handshaking and not self._lost else default
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def __repr__(self) -> str:
        state = "handshaking" if self._handshaking else "closed" if self._lost else "closing" if self._closing else "open"
        return f"<TlsTransport fd={self._fd} {state}>"

"""A plain blocking Python receiver with tails-server's durability: the upload reference.

    python bench/lean_receiver.py PORT ROOT [PROCESSES] [--splice]

Takes `PUT /hash/<hash>` with a Content-Length body: one blocking thread per connection receives
the body, hashes it with sha256 and writes it to a temp file in 1 MiB batches, fdatasyncs it,
link()s it to ROOT/hash/<hash>, fsyncs the directory and answers 200 with the hash, or 400 on a
mismatch, 409 if stored. No event loop, no HTTP framework, no checks beyond that: nginx is the
reference for downloads, this is the one for uploads (nginx has no hashing upload path). It
copies every byte into Python and back out with recv() and write(), as most servers do;
tails-server has the kernel move the bytes with splice() and hashes them through a mapping.
With --splice this receiver does that too, and starts each batch's write-back once it is hashed,
as tails-server does: the least CPU per upload a Python server can spend here, and so about the
most of the durable-write ceiling one can reach over the network.
Benchmark use only: it trusts its client.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import signal
import socket
import struct
import sys
import tempfile
import threading

import base58

BATCH = 1 << 20
SPLICE = "--splice" in sys.argv


def consume(sha, fd: int, pieces: list[bytes]) -> None:
    for piece in pieces:
        sha.update(piece)
    os.writev(fd, pieces)


def splice_body(conn: socket.socket, sha, fd: int, body: bytes, length: int) -> None:
    """The rest of the content moved socket -> pipe -> file by the kernel, hashed through a mapping per BATCH."""
    os.write(fd, body)
    written, hashed = len(body), 0
    pipe = os.pipe()
    try:
        fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, BATCH)
        while True:
            if written - hashed >= BATCH or written == length:
                start = hashed - hashed % mmap.ALLOCATIONGRANULARITY
                with mmap.mmap(fd, written - start, mmap.MAP_SHARED, mmap.PROT_READ, offset=start) as mapped, \
                        memoryview(mapped) as view, view[hashed - start:] as piece:
                    sha.update(piece)
                os.posix_fadvise(fd, hashed, written - hashed, os.POSIX_FADV_DONTNEED)  # start its write-back
                hashed = written
            if written == length:
                return
            moved = os.splice(conn.fileno(), pipe[1], min(length - written, BATCH))
            if not moved:
                raise ConnectionError("the client left")
            written += moved
            while moved:
                moved -= os.splice(pipe[0], fd, moved)
    finally:
        os.close(pipe[0])
        os.close(pipe[1])


def handle(conn: socket.socket, root: str) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            piece = conn.recv(65536)
            if not piece:
                return
            head += piece
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        expected = lines[0].split(b" ")[1].rsplit(b"/", 1)[-1].decode()
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        length = int(fields[b"content-length"])
        epilogue = b""
        if fields.get(b"content-type", b"").startswith(b"multipart/"):
            # One part, framed as the benchmark's client frames it: skip its headers, drop the closing boundary.
            boundary = fields[b"content-type"].split(b"boundary=", 1)[1]
            epilogue = b"\r\n--" + boundary + b"--\r\n"
            while b"\r\n\r\n" not in body:
                body += conn.recv(65536)
            part_head, body = body.split(b"\r\n\r\n", 1)
            length -= len(part_head) + 4 + len(epilogue)
        body, rest = body[:length], body[length:]
        sha = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=f"{root}/.tmp")
        try:
            received, pieces, batched = len(body), [body], len(body)
            if SPLICE:
                splice_body(conn, sha, fd, body, length)
                received, pieces = length, []
            while received < length:
                piece = conn.recv(min(262144, length - received))
                if not piece:
                    return
                received += len(piece)
                batched += len(piece)
                pieces.append(piece)
                if batched >= BATCH:
                    consume(sha, fd, pieces)
                    pieces, batched = [], 0
            if pieces:
                consume(sha, fd, pieces)
            while len(rest) < len(epilogue):
                rest += conn.recv(len(epilogue) - len(rest))
            os.fdatasync(fd)
            actual = base58.b58encode(sha.digest()).decode()
            status = b"400 Bad Request"
            if actual == expected:
                try:
                    os.link(temp, f"{root}/hash/{actual}")
                    directory = os.open(f"{root}/hash", os.O_RDONLY | os.O_DIRECTORY)
                    os.fsync(directory)
                    os.close(directory)
                    status = b"200 OK"
                except FileExistsError:
                    status = b"409 Conflict"
        finally:
            os.close(fd)
            os.unlink(temp)
        reply = actual.encode()
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(reply), reply))


def serve(port: int, root: str) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    while True:
        conn, _ = listener.accept()
        # Kernel timeouts keep the socket blocking (no poll() before every recv) and a stuck
        # client ends its own thread, never the benchmark.
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            conn.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", 60, 0))
        threading.Thread(target=handle, args=(conn, root), daemon=True).start()


def main() -> None:
    port, root = int(sys.argv[1]), sys.argv[2]
    processes = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 2
    for sub in ("hash", ".tmp"):
        os.makedirs(f"{root}/{sub}", exist_ok=True)
    children = []
    for _ in range(processes - 1):  # as many processes as tails-server has workers, on one port
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    def stop(_signum, _frame) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    serve(port, root)


if __name__ == "__main__":
    main()

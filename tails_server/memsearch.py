"""Finding a multipart delimiter in a mapped file region without holding the GIL.

bytes.find and mmap.find hold the GIL while they scan. The upload threads search each multipart
body's content in the temp file (socket_body.py): ~0.7 ms per 4 MiB upload during which no other
thread and no event loop could run, a third of the GIL's busy time under 16 multipart uploads at
once. libc's memmem(), called through ctypes (which lets go of the GIL during a foreign call), is
also twice as fast here. Where there is no memmem, mmap.find does the work as before.
"""

from __future__ import annotations

import ctypes
import mmap


def _libc_memmem():
    """libc's memmem (glibc, musl and the BSDs have it), or None."""
    try:
        memmem = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    return memmem


_MEMMEM = _libc_memmem()


def map_region(fd: int, length: int, offset: int) -> mmap.mmap:
    """Map a file region for reading and searching.

    Private and writable, because ctypes can only take the address of a writable buffer: nothing
    ever writes to it, so its pages stay the page cache's own and the file is never changed. Under
    strict overcommit (vm.overcommit_memory=2) such a mapping counts against the commit limit:
    one batch (1 MiB) per upload being received.
    """
    return mmap.mmap(fd, length, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)


def find(mapped: mmap.mmap, needle: bytes, start: int = 0) -> int:
    """The offset of the first `needle` in `mapped` at or after `start`, or -1: as mmap.find, with the GIL released."""
    if _MEMMEM is None or not needle or start >= len(mapped):
        return mapped.find(needle, start)
    region = (ctypes.c_char * len(mapped)).from_buffer(mapped)
    try:
        base = ctypes.addressof(region)
        hit = _MEMMEM(base + start, len(mapped) - start, needle, len(needle))
    finally:
        del region  # gives the buffer back: a mapping with an export cannot be closed
    return -1 if hit is None else hit - base

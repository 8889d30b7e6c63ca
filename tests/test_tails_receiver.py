"""The event-loop receiver never lets go of its temp file while a thread still writes to it."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from support import random_tails

from tails_server.storage.base import TempFile
from tails_server.tails import BATCH, TailsReceiver


def blocked_temp_file(directory: Path) -> tuple[TempFile, int]:
    """A real temp file whose descriptor now names a pipe's write end: a write blocks once the pipe is full."""
    temp = TempFile(directory)
    read, write = os.pipe()
    os.dup2(write, temp.fd)
    os.close(write)
    return temp, read


def drain(read: int, count: int) -> None:
    while count > 0:
        count -= len(os.read(read, min(count, 1 << 16)))


async def drained_until_done(read: int, count: int, task: asyncio.Future) -> None:
    """Let the blocked writer go (a thread reads `count` bytes of the pipe), then wait for `task` to end."""
    drainer = threading.Thread(target=drain, args=(read, count))
    drainer.start()
    try:
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    finally:
        drainer.join()


async def test_abort_waits_for_a_write_whose_wait_was_cancelled(tmp_path: Path) -> None:
    temp, read = blocked_temp_file(tmp_path)
    receiver = TailsReceiver(temp, 1 << 30)
    data, _ = random_tails(3 * BATCH // 128)
    try:
        # Two batches: the second feed waits for the first, which the thread cannot finish writing.
        feeding = asyncio.ensure_future(receiver.feed(data[:BATCH]))
        await feeding
        second = asyncio.ensure_future(receiver.feed(data[BATCH : 2 * BATCH + 2]))
        await asyncio.sleep(0.05)
        assert not second.done()  # waiting on the thread, which waits on the pipe
        second.cancel()  # as a stopping server cancels a handler
        await asyncio.gather(second, return_exceptions=True)

        aborting = asyncio.ensure_future(receiver.abort())
        await asyncio.sleep(0.1)
        assert not aborting.done(), "abort() returned while a thread still wrote to the temp file"
        aborting.cancel()  # a second cancellation must not cut the wait short either
        await asyncio.sleep(0.05)
        assert not aborting.done()

        await drained_until_done(read, BATCH, aborting)
        assert aborting.cancelled() or isinstance(aborting.exception(), asyncio.CancelledError)
    finally:
        temp.discard()
        os.close(read)


async def test_close_removes_the_temp_file_even_when_its_wait_is_cancelled(tmp_path: Path) -> None:
    temp, read = blocked_temp_file(tmp_path)
    receiver = TailsReceiver(temp, 1 << 30)
    data, _ = random_tails(BATCH // 128)
    try:
        await receiver.feed(data)  # a batch the thread cannot finish writing until the pipe is drained
        closing = asyncio.ensure_future(receiver.close())
        await asyncio.sleep(0.05)
        closing.cancel()
        await drained_until_done(read, BATCH, closing)
        assert closing.cancelled()
        assert not temp.path.exists() and temp.fd is None
    finally:
        temp.discard()
        os.close(read)


async def test_a_small_upload_is_written_and_synced_in_one_trip(tmp_path: Path) -> None:
    """finish() writes the last batch and syncs it: the file holds every byte and the hash is right."""
    temp = TempFile(tmp_path)
    receiver = TailsReceiver(temp, 1 << 30)
    data, tails_hash = random_tails(5)
    try:
        await receiver.feed(data[:100])
        await receiver.feed(data[100:])
        assert (await receiver.finish()).value == tails_hash
        assert temp.path.read_bytes() == data
    finally:
        await receiver.close()
    assert not temp.path.exists()

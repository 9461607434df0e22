"""A real Label Studio server for the end-to-end test: SQLite, 127.0.0.1, stopped by PID.

The first start on an empty data folder migrates the database (about 80 s on the 2-core
VM); the migrated folder, with the user created, is kept beside the environment
(``<cache>/label-studio-data``) and copied for each session, which then starts in about 10 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.io.consumers import cache_dir, venv_bin

EMAIL, PASSWORD = "prelabel@example.com", "prelabel-test-password"
START_TIMEOUT_S = 400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data: Path, files_root: Path | None) -> dict:
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "PYTHONPATH": ""}
    # No calls home from a test: version check, analytics, error reporting.
    env.update(LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="")
    if files_root is not None:
        env.update(
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true", LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(files_root)
        )
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextlib.contextmanager
def _server(data: Path, log: Path, files_root: Path | None = None) -> Iterator[str]:
    port = _free_port()
    command = [
        str(venv_bin("label-studio") / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
        "--port", str(port), "--username", EMAIL, "--password", PASSWORD,
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=_env(data, files_root), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.skip(f"Label Studio did not start (exit {proc.returncode}): {log.read_text()[-1500:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.skip(f"Label Studio did not answer /health in {START_TIMEOUT_S} s: {log.read_text()[-1500:]}")
            time.sleep(1)
        yield url
    finally:
        _stop(proc)


def migrated_data() -> Path:
    """The migrated data folder (user created, no token yet), built once per cache."""
    folder = cache_dir() / "label-studio-data"
    stamp = folder / ".complete"
    with open(cache_dir() / "label-studio-data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            with _server(folder, cache_dir() / "label-studio-first-start.log"):
                pass
            stamp.write_text("migrated")
    return folder


@contextlib.contextmanager
def label_studio(tmp: Path, files_root: Path | None = None) -> Iterator[str]:
    """A fresh server on a copy of the migrated data folder; yields its URL."""
    data = tmp / "label-studio-data"
    shutil.copytree(migrated_data(), data, ignore=shutil.ignore_patterns(".complete"))
    with _server(data, tmp / "label-studio.log", files_root) as url:
        yield url

"""The real consumers of our exports, each in a virtual environment of its own.

Label Studio and datumaro pin versions of numpy, pandas, pillow, pyarrow and opencv that
conflict with ours and with each other (label-studio 1.23.2 wants pyarrow < 25, datumaro
1.13.12 pyarrow ~= 25), so neither can sit in the test extra. Each is installed once into
``<cache>/venvs/<name>`` (``$YOLACT_BATCH_TEST_CACHE``, default ``~/.cache/yolact_batch_tests``)
by the first test that needs it; a finished environment carries a ``.complete`` stamp of its
requirements, a half-built one is rebuilt. Scripts run there read our files and write what the
consumer decoded (``.npz`` / JSON) for the test to compare in our environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CONSUMERS = {
    # label-studio 1.23.2 installs label-studio-sdk 2.1.2 (the brush decoder, LabelInterface).
    "label-studio": ("label-studio==1.23.2", "label-studio-sdk==2.1.2"),
    "datumaro": ("datumaro==1.13.12",),
}
SCRIPTS = Path(__file__).resolve().parent / "consumer_scripts"
INSTALL_TIMEOUT_S = 1500


def cache_dir() -> Path:
    return Path(os.environ.get("YOLACT_BATCH_TEST_CACHE") or Path.home() / ".cache" / "yolact_batch_tests")


def venv_bin(name: str) -> Path:
    """``bin/`` of the consumer's environment, built on first use; skips with pip's error if the
    packages cannot be installed here (no network and no cache)."""
    requirements = CONSUMERS[name]
    folder = cache_dir() / "venvs" / f"{name}-py{sys.version_info.major}{sys.version_info.minor}"
    stamp = folder / ".complete"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per cache, even across test sessions
        if not (stamp.exists() and json.loads(stamp.read_text()) == list(requirements)):
            shutil.rmtree(folder, ignore_errors=True)
            # --no-compile: modules compile when first imported; most of Label Studio never is.
            steps = [[sys.executable, "-m", "venv", str(folder)],
                     [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", *requirements]]  # fmt: skip
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
                if done.returncode:
                    shutil.rmtree(folder, ignore_errors=True)
                    pytest.skip(f"cannot install {' '.join(requirements)} into {folder}: {done.stderr[-800:]}")
            stamp.write_text(json.dumps(list(requirements)))
    return folder / "bin"


def run_script(name: str, script: str, *args: str, timeout: float = 600) -> dict:
    """Run ``consumer_scripts/<script>`` with the consumer's Python; its JSON stdout line, parsed."""
    python = venv_bin(name) / "python"
    done = subprocess.run(
        [str(python), str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, f"{script} failed in the {name} environment:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _build(name: str) -> None:
    try:
        venv_bin(name)
        if name == "label-studio":
            from tests.io.labelstudio_server import migrated_data

            migrated_data()
    except BaseException:  # noqa: BLE001 (pytest's Skipped too): the tests meet the same error and report it
        pass


def build_in_background(names) -> None:
    """Start building these consumers' environments in background threads when a session
    collects tests that use them: pip mostly waits on downloads and disk, so on a clean checkout
    the installs overlap the tests that run first. The tests then wait on the build lock."""
    for name in sorted(set(names)):
        threading.Thread(target=_build, args=(name,), name=f"build-{name}", daemon=True).start()

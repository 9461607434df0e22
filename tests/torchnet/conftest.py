"""Fixtures for the exporter tests: golden arrays and cached ONNX Runtime runs.

The golden checkpoints and their session-wide exports (``golden_checkpoint``, ``exported``)
live in ``tests/conftest.py`` because the job tests use them too.

The golden data lives in ``../shared/golden`` beside the project root (read-only, never copied).
Checkpoints are rebuilt with its ``make_checkpoint.py`` into a session temp dir, and every
exported model / ONNX Runtime run is cached for the session: exporting ``yolact_base`` and
running it on two CPU cores takes seconds each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def golden_arrays(golden_dir):
    """``golden_arrays(name, image_id) -> dict``: one image's golden arrays, ``input`` always included.

    The yolact_base files have no ``input``: it is bitwise the resnet50 one for the same image.
    """

    def load(name: str, image_id: int) -> dict[str, np.ndarray]:
        path = golden_dir / name / f"{image_id}.npz"
        if not path.is_file():
            pytest.skip(f"golden arrays {path} not found")
        with np.load(path) as data:
            arrays = dict(data)
        if "input" not in arrays:
            with np.load(golden_dir / "yolact_resnet50" / f"{image_id}.npz") as data:
                arrays["input"] = data["input"]
        return arrays

    return load


@pytest.fixture(scope="session")
def onnx_session():
    """``onnx_session(path)``: a cached CPU ONNX Runtime session (2 threads)."""
    ort = pytest.importorskip("onnxruntime")
    sessions = {}

    def session(path: Path):
        if path not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            sessions[path] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return sessions[path]

    return session


@pytest.fixture(scope="session")
def golden_run(exported, onnx_session, golden_arrays):
    """``golden_run(name, contract, image_id) -> dict``: ONNX outputs for one golden image (batch 1), cached."""
    runs: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}

    def run(name: str, contract: str, image_id: int) -> dict[str, np.ndarray]:
        key = (name, contract, image_id)
        if key not in runs:
            session = onnx_session(exported(name, contract))
            names = [o.name for o in session.get_outputs()]
            outputs = session.run(None, {"images": golden_arrays(name, image_id)["input"]})
            runs[key] = dict(zip(names, outputs))
        return runs[key]

    return run

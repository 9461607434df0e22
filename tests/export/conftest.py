"""Fixtures for the exporter tests: golden checkpoints, golden arrays and session-wide ONNX exports.

The golden data lives in ``../shared/golden`` beside the project root (read-only, never copied).
Checkpoints are rebuilt with its ``make_checkpoint.py`` into a session temp dir, and every
exported model / ONNX Runtime run is cached for the session: exporting ``yolact_base`` and
running it on two CPU cores takes seconds each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "make_checkpoint.py").is_file():
        pytest.skip(f"golden data not found at {GOLDEN} (the shared data folder beside the project root)")
    return GOLDEN


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
def golden_checkpoint(golden_dir, tmp_path_factory):
    """``golden_checkpoint(name) -> Path``: the synthetic checkpoint, built once, digest checked."""
    manifest = json.loads((golden_dir / "manifest.json").read_text())
    folder = tmp_path_factory.mktemp("golden_checkpoints")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            path = folder / f"{name}_golden.pth"
            result = subprocess.run(
                [sys.executable, str(golden_dir / "make_checkpoint.py"), "--list-sha256", name, str(path)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            digest = result.stdout.split()[2]
            assert digest == manifest["configs"][name]["checkpoint"]["state_dict_sha256"], result.stdout
            built[name] = path
        return built[name]

    return build


@pytest.fixture(scope="session")
def exported(golden_checkpoint, tmp_path_factory):
    """``exported(name, contract) -> Path``: the golden checkpoint exported to ONNX, once per session."""
    from yolact_batch.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    models: dict[tuple[str, str], Path] = {}

    def export(name: str, contract: str) -> Path:
        if (name, contract) not in models:
            path = folder / f"{name}_{contract}.onnx"
            models[name, contract] = export_onnx(golden_checkpoint(name), name, path, contract=contract)
        return models[name, contract]

    return export


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

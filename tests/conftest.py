"""Shared fixtures: the read-only shared data beside the repository, skipped when absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Beside the repository in CI; YOLACT_BATCH_SHARED or ./shared where only the checkout travels (a GPU machine).
SHARED = Path(os.environ.get("YOLACT_BATCH_SHARED") or next(
    (p for p in (REPO.parent / "shared", REPO / "shared") if p.is_dir()), REPO.parent / "shared"
))  # fmt: skip
GOLDEN = SHARED / "golden"
COCO_SUBSET = SHARED / "coco_val2017_subset"
GOLDEN_IDS = {"yolact_resnet50": (165518, 184324, 205401, 376322), "yolact_base": (165518, 184324, 376322)}
# YOLACT++ goldens (golden/README.md "YOLACT++"): JSON for 4 images, raw-head npz for 2; own script and manifest.
PLUS = "yolact_plus_resnet50"
PLUS_IDS = (165518, 184324, 205401, 376322)
_CHECKPOINT_SOURCES = {PLUS: ("make_checkpoint_plus.py", "manifest_plus.json")}


def require(path: Path) -> Path:
    """Skip the calling test unless ``path`` exists (a user's clone has no ../shared)."""
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (it sits beside the repository in CI)")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require(GOLDEN / "make_checkpoint.py").parent


@pytest.fixture(scope="session")
def golden_checkpoint(golden_dir, tmp_path_factory):
    """``golden_checkpoint(name) -> Path``: the synthetic checkpoint, built once, digest checked."""
    folder = tmp_path_factory.mktemp("golden_checkpoints")
    built: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in built:
            script, manifest_name = _CHECKPOINT_SOURCES.get(name, ("make_checkpoint.py", "manifest.json"))
            manifest = json.loads(require(golden_dir / manifest_name).read_text())
            path = folder / f"{name}_golden.pth"
            result = subprocess.run(
                [sys.executable, str(golden_dir / script), "--list-sha256", name, str(path)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            digest = result.stdout.split()[2]
            assert digest == manifest["configs"][name]["checkpoint"]["state_dict_sha256"], result.stdout
            built[name] = path
        return built[name]

    return build


@pytest.fixture(scope="session")
def exported(golden_checkpoint, tmp_path_factory):
    """``exported(name, contract) -> Path``: the golden checkpoint exported to ONNX, once per session,
    by the command users run: ``yolact-batch export --checkpoint C.pth -o m.onnx`` without ``--config``
    (the config is read from the weights)."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("onnx")
    models: dict[tuple[str, str], Path] = {}

    def export(name: str, contract: str) -> Path:
        if (name, contract) not in models:
            path = folder / f"{name}_{contract}.onnx"
            cmd = [sys.executable, "-m", "yolact_batch.cli", "export", "--checkpoint", str(golden_checkpoint(name)),
                   "-o", str(path), "--contract", contract]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0 and path.is_file(), result.stderr
            models[name, contract] = path
        return models[name, contract]

    return export


@pytest.fixture(scope="session")
def coco_subset() -> Path:
    return require(COCO_SUBSET)


def golden_case(config: str, image_id: int) -> tuple[dict, dict]:
    """(npz arrays, reference JSON) for one golden image of one config."""
    base = require(GOLDEN / config)
    arrays = dict(np.load(base / f"{image_id}.npz"))
    with open(base / f"{image_id}.json") as f:
        return arrays, json.load(f)


def golden_json(config: str, image_id: int) -> dict:
    """The reference JSON of one golden image (YOLACT++ has JSON for more images than npz)."""
    with open(require(GOLDEN / config / f"{image_id}.json")) as f:
        return json.load(f)


def golden_image_bytes(image_id: int) -> bytes:
    return require(COCO_SUBSET / "val2017" / f"{image_id:012d}.jpg").read_bytes()


def golden_params() -> list:
    return [pytest.param(cfg, i, id=f"{cfg}-{i}") for cfg, ids in GOLDEN_IDS.items() for i in ids]

"""Shared fixtures: the read-only shared data beside the repository, skipped when absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
COCO_SUBSET = SHARED / "coco_val2017_subset"
GOLDEN_IDS = {"yolact_resnet50": (165518, 184324, 205401, 376322), "yolact_base": (165518, 184324, 376322)}


def require(path: Path) -> Path:
    """Skip the calling test unless ``path`` exists (a user's clone has no ../shared)."""
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (it sits beside the repository in CI)")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require(GOLDEN)


@pytest.fixture(scope="session")
def coco_subset() -> Path:
    return require(COCO_SUBSET)


def golden_case(config: str, image_id: int) -> tuple[dict, dict]:
    """(npz arrays, reference JSON) for one golden image of one config."""
    base = require(GOLDEN / config)
    arrays = dict(np.load(base / f"{image_id}.npz"))
    with open(base / f"{image_id}.json") as f:
        return arrays, json.load(f)


def golden_image_bytes(image_id: int) -> bytes:
    return require(COCO_SUBSET / "val2017" / f"{image_id:012d}.jpg").read_bytes()


def golden_params() -> list:
    return [pytest.param(cfg, i, id=f"{cfg}-{i}") for cfg, ids in GOLDEN_IDS.items() for i in ids]

"""Outputs for the pre-labeling export tests: real detections plus hand-made hard cases.

``real_rows``: yolact_base's reference detections on the 4 shared COCO images (up to 100
instances each, real masks, some empty), with ``image_uri`` pointing at the JPEG files.
``shape_rows``: one 100x120 PNG holding a ring (a mask with a hole), a two-part mask, a
speck and a 1-pixel line (both vanish as polygons), a low-score square; an image where
nothing was found; an error row.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import COCO_SUBSET, SHARED, require
from yolact_batch.core import rle
from yolact_batch.io.results_io import results_from_reference_dets, results_to_rows
from yolact_batch.io.schema import ModelRef

SHARED_IMAGE_IDS = (239627, 261712, 368212, 403385)
MODEL = {"name": "yolact_base", "digest": "0123456789abcdef" * 4}
SHAPES_SIZE = (100, 120)  # H, W


def instance(mask: np.ndarray, category_id: int, category: str, score: float) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)] if ys.size else [0.0] * 4
    return {
        "category_id": category_id, "category": category, "score": score, "bbox": bbox,
        "area": int(mask.sum()), "segmentation": rle.encode(mask),
    }  # fmt: skip


def shape_masks() -> dict[str, np.ndarray]:
    h, w = SHAPES_SIZE
    yy, xx = np.mgrid[:h, :w]
    d2 = (yy - 50) ** 2 + (xx - 60) ** 2
    masks = {name: np.zeros((h, w), bool) for name in ("ring", "two_parts", "speck", "line", "square")}
    masks["ring"] = (d2 < 30**2) & (d2 >= 12**2)
    masks["two_parts"] = ((yy - 15) ** 2 + (xx - 15) ** 2 < 10**2) | ((yy - 85) ** 2 + (xx - 105) ** 2 < 12**2)
    masks["speck"][3, 110] = True
    masks["line"][95, 20:90] = True
    masks["square"][60:80, 5:25] = True
    return masks


def shape_rows(folder: Path) -> list[dict]:
    """Rows of the hand-made cases; their images are written into ``folder``."""
    h, w = SHAPES_SIZE
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("shapes.png", "nothing.png"):
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 127, np.uint8))
    m = shape_masks()
    instances = [
        instance(m["ring"], 1, "ring", 0.95), instance(m["two_parts"], 2, "disc", 0.9),
        instance(m["speck"], 2, "disc", 0.8), instance(m["line"], 3, "line", 0.7),
        instance(m["square"], 4, "square", 0.2),
    ]  # fmt: skip
    ok = {"image_id": None, "width": w, "height": h, "status": "ok", "error": None, "model": MODEL}
    return [
        {**ok, "image_uri": str(folder / "shapes.png"), "instances": instances},
        {**ok, "image_uri": str(folder / "nothing.png"), "instances": []},
        {**ok, "image_uri": str(folder / "broken.jpg"), "width": None, "height": None, "status": "error",
         "error": "truncated JPEG (no end-of-image marker)", "instances": []},
    ]  # fmt: skip


def real_rows() -> list[dict]:
    """yolact_base on the 4 shared images, ``image_uri`` = the JPEG on disk (skips without ../shared)."""
    folder = require(COCO_SUBSET / "val2017")
    gt = json.loads(require(COCO_SUBSET / "annotations" / "instances_val2017_subset.json").read_text())
    dets = json.loads(require(SHARED / "reference_dets" / "yolact_base.json").read_text())
    images = [im for im in gt["images"] if im["id"] in SHARED_IMAGE_IDS]
    results = [r for r in results_from_reference_dets(dets) if r["image_id"] in SHARED_IMAGE_IDS]
    rows = results_to_rows(
        results, images, category_names={c["id"]: c["name"] for c in gt["categories"]}, model=ModelRef(**MODEL)
    )
    return [{**row, "image_uri": f"{folder}/{row['image_uri']}"} for row in rows]


def kept(rows: list[dict], threshold: float = 0.0, min_area: int = 1) -> list[tuple[dict, dict]]:
    """(row, instance) pairs the default selection keeps, in output order."""
    return [
        (r, i) for r in rows if r["status"] == "ok" for i in r["instances"] if i["score"] > threshold and i["area"] >= min_area
    ]  # fmt: skip

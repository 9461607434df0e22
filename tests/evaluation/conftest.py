"""Fixtures for evaluation, export and overlay tests: the shared COCO subset, the official
models' reference detections, rows made from them, and pycocotools run directly (the oracle)."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from tests.conftest import COCO_SUBSET, SHARED, require
from yolact_batch.io.results_io import results_from_reference_dets, results_to_rows

GT_FILE = COCO_SUBSET / "annotations" / "instances_val2017_subset.json"
REFERENCE_DETS = SHARED / "reference_dets"
REFERENCE_MODELS = (
    "yolact_base", "yolact_darknet53", "yolact_im700", "yolact_resnet101_conv4", "yolact_resnet101_maskrcnn",
    "yolact_resnet50",
)  # fmt: skip
SHARED_IMAGE_IDS = (239627, 261712, 368212, 403385)


@pytest.fixture(scope="session")
def gt_file():
    return require(GT_FILE)


@pytest.fixture(scope="session")
def gt_dataset(gt_file) -> dict:
    """The ground truth, parsed once (tests must not modify it)."""
    return json.loads(gt_file.read_text())


@pytest.fixture(scope="session")
def oracle_coco(gt_file):
    """pycocotools' own ``COCO`` of the ground-truth file (for the oracle only)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(gt_file))


def pycocotools_stats(coco_gt, results: list[dict], iou_type: str, image_ids=None) -> np.ndarray:
    """The 12 stats of pycocotools run the plain way (segm: bbox dropped, as detectron2 does)."""
    from pycocotools.cocoeval import COCOeval

    entries = [{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")} for r in copy.deepcopy(results)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(entries), iou_type)
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def max_abs_diff(summary_metrics: dict, stats: np.ndarray) -> float:
    """Largest |ours - pycocotools| over the 12 stats; null/NaN must be exactly pycocotools' -1."""
    from yolact_batch.evaluation import STAT_NAMES

    diffs = []
    for name, ref in zip(STAT_NAMES, stats):
        ours = summary_metrics[name]
        if ours is None or (isinstance(ours, float) and np.isnan(ours)):
            assert ref == -1, f"{name}: ours undefined, pycocotools {ref}"
            continue
        diffs.append(abs(ours - ref))
    return max(diffs)


@pytest.fixture(scope="session")
def reference_results(gt_dataset):
    """``reference_results(model) -> list``: COCO results of an official model on the shared images."""
    ids = {im["id"] for im in gt_dataset["images"]}

    def load(model: str) -> list[dict]:
        data = json.loads(require(REFERENCE_DETS / f"{model}.json").read_text())
        return [r for r in results_from_reference_dets(data) if r["image_id"] in ids]

    return load


def gt_results(dataset: dict, *, score: float = 1.0) -> list[dict]:
    """Every ground-truth annotation as a COCO result (RLE mask, bbox, ``score``)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    out = []
    for a in coco.dataset["annotations"]:
        r = coco.annToRLE(a)
        counts = r["counts"].decode() if isinstance(r["counts"], bytes) else r["counts"]
        seg = {"size": [int(v) for v in r["size"]], "counts": counts}
        out.append({
            "image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score,
            "segmentation": seg,
        })  # fmt: skip
    return out


def noisy_results(dataset: dict, seed: int = 0) -> list[dict]:
    """Imperfect predictions from the ground truth: misses, jittered boxes, box-shaped masks,
    wrong-class duplicates, spread scores (gives non-trivial PR curves)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    out = []
    for r in gt_results(dataset):
        u = rng.random(4)
        if u[0] < 0.15:
            continue  # a miss
        x, y, w, h = r["bbox"]
        jitter = rng.uniform(-0.15, 0.15, 4) * [w, h, w, h]
        box = [max(0.0, x + jitter[0]), max(0.0, y + jitter[1]), max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
        seg = r["segmentation"]
        if u[1] < 0.3:  # a box-shaped mask
            height, width = seg["size"]
            poly = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            m = mask_utils.merge(mask_utils.frPyObjects(poly, height, width))
            seg = {"size": [int(v) for v in m["size"]], "counts": m["counts"].decode()}
        out.append({**r, "bbox": box, "segmentation": seg, "score": float(rng.uniform(0.2, 1.0))})
        if u[2] < 0.1:  # a false positive of another class
            out.append({**r, "category_id": 1 if r["category_id"] != 1 else 2, "score": float(rng.uniform(0.05, 0.6))})
    return out


def rows_of(
    results: list[dict], dataset: dict, image_ids=None, *, uri_prefix: str = "s3://bucket/val2017/"
) -> list[dict]:
    """Row-format rows for ground-truth images (default all) holding their ``results``."""
    images = [im for im in dataset["images"] if image_ids is None or im["id"] in set(image_ids)]
    ids = {im["id"] for im in images}
    results = [r for r in results if r["image_id"] in ids]
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    rows = results_to_rows(results, images, category_names=names)
    for row in rows:
        row["image_uri"] = uri_prefix + row["image_uri"]
    return rows

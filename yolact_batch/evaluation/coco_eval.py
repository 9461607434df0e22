"""COCO evaluation with pycocotools: named metrics, per-class AP and PR curves, output captured.

As in detectron2's ``coco_evaluation.py``: results are plain COCO entries, segm results drop
``bbox`` so pycocotools takes areas (and the small/medium/large split) from the masks, and
pycocotools' printing is captured into ``CocoEvaluation.log`` rather than shown.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Collection

import numpy as np

from yolact_batch.core import rle
from yolact_batch.core.coco import IOU_TYPES

# faster-coco-eval (C++ COCOeval) is offered because tests/evaluation/test_evaluation.py shows
# its stats and precision arrays equal pycocotools' (to ~1e-16) on our data.
EVALUATORS = ("pycocotools", "faster-coco-eval")
# Names of pycocotools' 12 ``stats``, in its order (maxDets 100 unless named).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def ground_truth_coco(dataset: dict):
    """A ``pycocotools.coco.COCO`` of a parsed instances JSON (its printing captured)."""
    from pycocotools.coco import COCO

    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise ValueError(f"ground truth has no {key!r}: not a COCO instances file")
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def results_for_iou_type(results: list[dict], iou_type: str) -> list[dict]:
    """Fresh entries for one IoU type (pycocotools mutates what it loads).

    bbox: ``image_id, category_id, bbox, score`` (box from the mask when absent);
    segm: ``image_id, category_id, segmentation, score``, no ``bbox``; the score is the entry's
    ``mask_score`` when it has one (YOLACT++), else its ``score``.
    """
    if iou_type == "segm":
        out = []
        for r in results:
            if "segmentation" not in r:
                raise ValueError(f"a result for image {r['image_id']} has no segmentation: cannot evaluate segm")
            entry = {k: r[k] for k in ("image_id", "category_id", "segmentation", "score")}
            if r.get("mask_score") is not None:  # YOLACT++: masks are scored by the re-scored mask score
                entry["score"] = r["mask_score"]
            out.append(entry)
        return out
    if iou_type == "bbox":
        out = []
        for r in results:
            if "bbox" in r:
                box = list(r["bbox"])
            elif isinstance(r.get("segmentation"), dict):
                box = rle.bbox(r["segmentation"])
            else:
                raise ValueError(f"a result for image {r['image_id']} has neither bbox nor an RLE mask")
            out.append({"image_id": r["image_id"], "category_id": r["category_id"], "bbox": box, "score": r["score"]})
        return out
    raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")


@dataclass(frozen=True)
class CocoEvaluation:
    """What pycocotools computed for one IoU type.

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        stats: the 12 standard metrics by name (``STAT_NAMES``), NaN where pycocotools has
            -1 (no ground truth in that area range).
        precision: ``float[T, R, K, A, M]`` pycocotools' ``eval["precision"]`` (-1: undefined).
        recall: ``float[T, K, A, M]`` pycocotools' ``eval["recall"]``.
        iou_thresholds: ``float[T]`` (0.50:0.05:0.95).
        recall_thresholds: ``float[R]`` (0:0.01:1).
        category_ids: ``K`` category ids, the order of precision's K axis.
        gt_instances: ``int[K]`` non-crowd ground-truth instances per category.
        detections: ``int[K]`` predictions per category.
        log: the evaluator's printed output.
    """

    iou_type: str
    stats: dict
    precision: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: tuple
    gt_instances: np.ndarray
    detections: np.ndarray
    log: str

    def class_ap(self, iou: float | None = None) -> np.ndarray:
        """``float[K]`` AP per category (area all, 100 dets) at IoU ``iou`` or averaged
        over 0.50:0.95; NaN for categories without ground truth."""
        p = self.precision[:, :, :, 0, -1]
        if iou is not None:
            p = p[np.flatnonzero(np.isclose(self.iou_thresholds, iou))]
        valid = p > -1
        n = valid.sum(axis=(0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.where(valid, p, 0).sum(axis=(0, 1)) / n, np.nan)

    def mean_pr_curve(self, iou: float | None = None) -> np.ndarray:
        """``float[R]`` precision at each recall threshold, averaged over categories with
        ground truth (area all, 100 dets), at IoU ``iou`` or over 0.50:0.95."""
        p = self.precision[:, :, :, 0, -1]
        if iou is not None:
            p = p[np.flatnonzero(np.isclose(self.iou_thresholds, iou))]
        p = p[:, :, (p > -1).any(axis=(0, 1))]
        return p.mean(axis=(0, 2)) if p.size else np.full(len(self.recall_thresholds), np.nan)

    def class_pr_curve(self, category_id: int, iou: float = 0.5) -> np.ndarray:
        """``float[R]`` precision of one category at IoU ``iou`` (-1: no ground truth)."""
        t = int(np.flatnonzero(np.isclose(self.iou_thresholds, iou))[0])
        return self.precision[t, :, self.category_ids.index(category_id), 0, -1]


def check_evaluator(evaluator: str) -> str:
    """``"<package> <version>"`` of an evaluator; fails now when it is unknown or not installed."""
    from importlib.metadata import PackageNotFoundError, version

    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    try:
        return f"{evaluator} {version(evaluator)}"
    except PackageNotFoundError:
        raise RuntimeError(f"evaluator {evaluator!r} is not installed: pip install {evaluator}") from None


def _cocoeval(gt, dt, iou_type: str, evaluator: str):
    if evaluator == "faster-coco-eval":
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster(gt, dt, iou_type, print_function=print)
    from pycocotools.cocoeval import COCOeval

    return COCOeval(gt, dt, iou_type)


def _empty_results(gt):
    from pycocotools.coco import COCO

    res = COCO()  # loadRes cannot load an empty list: build the empty result set it would give
    res.dataset = {
        "images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]), "annotations": [],
    }  # fmt: skip
    res.createIndex()
    return res


def evaluate_coco(
    gt, results: list[dict], iou_type: str, *, image_ids: Collection[int] | None = None, evaluator: str = "pycocotools"
) -> CocoEvaluation:
    """Run ``COCOeval`` (evaluate, accumulate, summarize) on results of one IoU type.

    Args:
        gt: ground truth ``COCO`` (see :func:`ground_truth_coco`).
        results: COCO results entries whose ``image_id`` s are ground-truth ids (any layout
            :func:`results_for_iou_type` accepts; not modified).
        iou_type: ``"bbox"`` or ``"segm"``.
        image_ids: evaluate only these ground-truth images (default all: an image without
            predictions counts its ground truth as misses).
        evaluator: ``"pycocotools"`` or ``"faster-coco-eval"`` (same numbers, faster).

    With no results at all every AP is 0 where there is ground truth (what pycocotools
    gives for an empty result set), NaN where there is none.
    """
    entries = results_for_iou_type(results, iou_type)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        dt = gt.loadRes(entries) if entries else _empty_results(gt)
        coco_eval = _cocoeval(gt, dt, iou_type, evaluator)
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    p = coco_eval.params
    imgs = set(p.imgIds)
    index = {c: k for k, c in enumerate(p.catIds)}
    gt_count = np.zeros(len(p.catIds), np.int64)
    for a in gt.dataset["annotations"]:
        if a["image_id"] in imgs and a["category_id"] in index and not a.get("iscrowd", 0):
            gt_count[index[a["category_id"]]] += 1
    det_count = np.zeros(len(p.catIds), np.int64)
    for r in entries:
        if r["image_id"] in imgs and r["category_id"] in index:
            det_count[index[r["category_id"]]] += 1
    return CocoEvaluation(
        iou_type=iou_type,
        stats={name: float(v) if v > -1 else float("nan") for name, v in zip(STAT_NAMES, coco_eval.stats[:12])},
        precision=coco_eval.eval["precision"],
        recall=coco_eval.eval["recall"],
        iou_thresholds=np.asarray(p.iouThrs),
        recall_thresholds=np.asarray(p.recThrs),
        category_ids=tuple(int(c) for c in p.catIds),
        gt_instances=gt_count,
        detections=det_count,
        log=log.getvalue(),
    )

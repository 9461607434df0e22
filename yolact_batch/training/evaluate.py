"""COCO box and mask AP of a predictor on an ``instances.json`` split (numpy + pycocotools, no torch).

The shipped-model test and the training job both use it; the COCO plumbing is
``yolact_batch.evaluation.coco_eval``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from yolact_batch.core.coco import coco_results, instances
from yolact_batch.core.detections import Detections
from yolact_batch.evaluation.coco_eval import evaluate_coco, ground_truth_coco

_AP_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_metrics(json_path: str | Path, predictions: dict[int, Detections]) -> dict[str, float]:
    """Box and mask AP of ``predictions`` (by ground-truth image id) over those images only.

    Returns ``{"bbox_AP", "bbox_AP50", ..., "segm_APl"}`` (pycocotools' standard AP@[.5:.95]
    and its variants) plus ``"<iou type>_AP/<class name>"`` per class.
    """
    dataset = json.loads(Path(json_path).read_text())
    gt = ground_truth_coco(dataset)
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    results = [entry for image_id, dets in predictions.items() for entry in coco_results(image_id, instances(dets))]
    metrics: dict[str, float] = {}
    for iou_type in ("bbox", "segm"):
        evaluation = evaluate_coco(gt, results, iou_type, image_ids=predictions)
        metrics.update({f"{iou_type}_{stat}": evaluation.stats[stat] for stat in _AP_STATS})
        for category_id, ap in zip(evaluation.category_ids, evaluation.class_ap()):
            metrics[f"{iou_type}_AP/{names[category_id]}"] = float(ap)
    return metrics


def predict_split(
    json_path: str | Path,
    predict: Callable[[Sequence[np.ndarray]], list[Detections]],
    *,
    limit: int | None = None,
    batch_size: int = 8,
) -> dict[int, Detections]:
    """Run ``predict`` (for example a ``YolactModel``) over the split's images (the first ``limit``).

    Images are read as BGR from the paths in the json (``file_name`` relative to its folder).
    """
    import cv2

    json_path = Path(json_path)
    images = sorted(json.loads(json_path.read_text())["images"], key=lambda im: im["id"])[:limit]
    predictions: dict[int, Detections] = {}
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        bgr = [cv2.imread(str(json_path.parent / im["file_name"]), cv2.IMREAD_COLOR) for im in chunk]
        for im, dets in zip(chunk, predict(bgr)):
            predictions[im["id"]] = dets
    return predictions

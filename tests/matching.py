"""Compare our instances with the reference's JSON detections, as the golden README says to.

Near-tied scores may swap rank, so detections are matched by (category, integer box), not
by position; scores must agree to 1e-5 and each mask must have IoU >= 0.99 with its match.
"""

from __future__ import annotations

import numpy as np

try:
    from pycocotools import mask as coco_mask
except ImportError:  # a lent GPU machine has no pycocotools: our decoder (tested against it) stands in
    from yolact_batch.core import rle as coco_mask


def assert_same_detections(instances: list[dict], reference: dict, *, score_atol=1e-5, min_mask_iou=0.99) -> None:
    """``instances`` in our row format vs a golden ``<id>.json`` (``bbox_detections``, ``mask_detections``)."""
    ref_bbox, ref_mask = reference["bbox_detections"], reference["mask_detections"]
    key = lambda category, bbox: (category, tuple(round(v, 1) for v in bbox))  # noqa: E731
    ours = {key(i["category_id"], i["bbox"]): i for i in instances}
    theirs = {key(b["category_id"], b["bbox"]): (b, m) for b, m in zip(ref_bbox, ref_mask)}
    assert len(ours) == len(instances) and len(theirs) == len(ref_bbox), "duplicate (class, box) keys"
    assert set(ours) == set(theirs), f"unmatched: ours {set(ours) - set(theirs)}, reference {set(theirs) - set(ours)}"
    for k, (b, m) in theirs.items():
        mine = ours[k]
        assert abs(mine["score"] - b["score"]) <= score_atol, (k, mine["score"], b["score"])
        a, r = coco_mask.decode(mine["segmentation"]), coco_mask.decode(m["segmentation"])
        union = np.logical_or(a, r).sum()
        iou = 1.0 if union == 0 else np.logical_and(a, r).sum() / union
        assert iou >= min_mask_iou, (k, iou)

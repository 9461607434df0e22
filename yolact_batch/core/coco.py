"""COCO conventions: the 80 class names, their category ids, and results conversion.

The network predicts foreground class ``i`` (0-based); COCO files use sparse category
ids (1..90 with gaps). Conversion happens here, at the edge, and nowhere else.
"""

from __future__ import annotations

from typing import Iterable

COCO_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# COCO category id of each foreground class, in class order (the reference's COCO_LABEL_MAP inverted).
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
)


def coco_bbox(box_xyxy) -> list[float]:
    """Pixel ``(x1, y1, x2, y2)`` to COCO ``[x, y, w, h]``, rounded to 0.1 px as the reference writes it."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return [round(v * 10) / 10 for v in (x1, y1, x2 - x1, y2 - y1)]


def instances(dets) -> list[dict]:
    """One instance dict per detection, in the row format (COCO ids, names, xywh, RLE).

    ``score`` is the box score; ``mask_score`` the re-scored mask score of a YOLACT++ model
    (None otherwise). Instances stay in box-score order.
    """
    areas = dets.areas
    mask_scores = [None] * len(dets) if dets.mask_scores is None else [float(v) for v in dets.mask_scores]
    return [
        {
            "category_id": int(dets.category_ids[c]),
            "category": dets.class_names[c],
            "score": float(score),
            "bbox": coco_bbox(box),
            "area": int(area),
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]},
            "mask_score": mask_score,
        }
        for box, score, c, area, rle, mask_score in zip(
            dets.boxes, dets.scores, dets.class_ids, areas, dets.rles, mask_scores
        )
    ]


IOU_TYPES = ("bbox", "segm")


def coco_results(
    image_id: int, items: Iterable[dict], *, iou_type: str = "both", score_threshold: float | None = None
) -> list[dict]:
    """COCO results entries of one image's instances (the row format's instance dicts).

    The one builder of COCO results: every writer and evaluator goes through it.

    Args:
        image_id: the COCO image id of every entry.
        items: instance dicts with ``category_id``, ``score``, ``bbox`` (COCO xywh),
            ``segmentation`` (RLE) and, for YOLACT++, ``mask_score``.
        iou_type: ``"bbox"`` or ``"segm"`` gives entries for that evaluation, scored by the box
            score or by the mask score (``segm_score``); ``"both"`` gives ``bbox`` and
            ``segmentation`` in each entry (detectron2's layout; an evaluator drops ``bbox`` for
            segm, so that area ranges come from the masks), scored by the box score, plus
            ``mask_score`` when the instance has one (evaluators use it for segm).
        score_threshold: keep instances whose box score is strictly above this (default: all),
            as the reference's ``score_threshold`` applies before re-scoring.

    Returns:
        Entries in the instances' (box-score) order; segm entries are never re-sorted by their
        mask score, as the reference writes them.
    """
    if iou_type not in ("both", *IOU_TYPES):
        raise ValueError(f"iou_type must be 'both', 'bbox' or 'segm', got {iou_type!r}")
    out = []
    for item in items:
        if score_threshold is not None and not item["score"] > score_threshold:
            continue
        entry = {"image_id": int(image_id), "category_id": int(item["category_id"])}
        if iou_type != "segm":
            entry["bbox"] = [float(v) for v in item["bbox"]]
        entry["score"] = segm_score(item) if iou_type == "segm" else float(item["score"])
        if iou_type == "both" and item.get("mask_score") is not None:
            entry["mask_score"] = float(item["mask_score"])
        if iou_type != "bbox":
            seg = item["segmentation"]
            entry["segmentation"] = {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]}
        out.append(entry)
    return out


def segm_score(instance: dict) -> float:
    """The score of an instance's mask: its ``mask_score`` (YOLACT++), else its box ``score``.

    Rows written before mask scores existed have no ``mask_score`` key; they read as YOLACT rows.
    """
    mask_score = instance.get("mask_score")
    return float(instance["score"] if mask_score is None else mask_score)

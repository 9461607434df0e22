"""YOLO segmentation pre-labels in Ultralytics' layout::

    FOLDER/data.yaml                 names {0: ..., 1: ...}; train and val both point at images/train
    FOLDER/images/train/<name>       the images (copied, linked, or left for you to place)
    FOLDER/labels/train/<stem>.txt   one line per instance: class x1 y1 x2 y2 ... (normalized)

Each instance is one polygon line, as Ultralytics expects: vertices are the mask's boundary
pixels divided by the image width and height (6 decimals), simplified by Douglas-Peucker to
``tolerance`` pixels. A mask of several parts, or with holes, is one polygon whose rings are
joined by zero-width bridges (``core.polygons.merge_rings``), which Ultralytics' and
supervision's ``cv2.fillPoly`` rasterisation turns back into the parts with their holes
empty. A mask left without a ring of 3+ vertices and some area (a speck, a 1-pixel line)
writes no line and is counted (``no_polygon``); use ``min_area`` to drop small masks first.
Images without kept instances get an empty label file (a background image for training).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from yolact_batch.core import rle
from yolact_batch.core.polygons import mask_rings, merge_rings
from yolact_batch.io.prelabel import IMAGE_MODES, ExportReport, Prelabeler, PrelabelSettings, place_image, scan_classes
from yolact_batch.io.storage import StorageOptions

__all__ = ["YoloOptions", "export_yolo", "polygon_line"]

SUBSET = "train"


@dataclass(frozen=True)
class YoloOptions:
    """How the YOLO dataset is written.

    Attributes:
        tolerance: polygon simplification, maximum deviation in pixels (0: lossless outline).
        images: ``"copy"`` the images into ``images/train`` (any fsspec source), ``"symlink"``
            them (local images only), or ``"none"`` (put them there yourself, same names).
    """

    tolerance: float = 1.0
    images: str = "copy"

    def __post_init__(self) -> None:
        if self.images not in IMAGE_MODES:
            raise ValueError(f"images must be one of {IMAGE_MODES}, got {self.images!r}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {self.tolerance}")


def polygon_line(class_index: int, polygon: np.ndarray, width: int, height: int) -> str:
    """``class x1 y1 ...`` of an ``int[N, 2]`` (x, y) pixel polygon, normalized by the image size."""
    xy = np.clip(polygon / np.array([width, height], dtype=np.float64), 0.0, 1.0)
    return " ".join([str(class_index), *(f"{v:.6f}" for v in xy.ravel())])


def _names(uri: str, taken: set[str]) -> tuple[str, str]:
    """(image file name, label stem), unique in the dataset: the base name, or with a hash of
    the URI when another image already has that stem (Ultralytics pairs files by stem)."""
    base = uri.rstrip("/").rsplit("/", 1)[-1].split("#")[-1] or "image"
    stem, dot, ext = base.rpartition(".")
    stem, ext = (stem, dot + ext) if dot else (base, "")
    if stem in taken:
        stem = f"{stem}-{hashlib.sha1(uri.encode()).hexdigest()[:10]}"
    taken.add(stem)
    return stem + (ext or ".jpg"), stem


def _data_yaml(labels: Sequence[str]) -> str:
    import json

    lines = [
        "# YOLO segmentation pre-labels written by yolact_batch (export-yolo).",
        f"train: images/{SUBSET}",
        f"val: images/{SUBSET}  # pre-labels are one set: split them after review",
        f"nc: {len(labels)}",
        "names:",
        *(f"  {i}: {json.dumps(name)}" for i, name in enumerate(labels)),  # JSON strings are YAML strings
    ]
    return "\n".join(lines) + "\n"


def export_yolo(
    output_uri: str,
    folder: str,
    *,
    settings: PrelabelSettings = PrelabelSettings(),
    options: YoloOptions = YoloOptions(),
    labels: Sequence[str] = (),
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> ExportReport:
    """Write an Ultralytics YOLO segmentation dataset of the pre-labels into ``folder`` (local).

    Args:
        output_uri: our Parquet output (see ``results_io.part_files``).
        folder: dataset folder (local path: training reads it from disk).
        settings: which instances become pre-labels, and their label names.
        options: polygon tolerance and what to do with the images.
        labels: class list to use, in order (class index = position); labels of kept
            instances missing from it are an error. Default: the labels seen, in category
            id order.
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options (for reading the output and the images).
    """
    pre = Prelabeler(settings, scan_classes(output_uri, storage=storage, allow_incomplete=allow_incomplete))
    labels = list(labels) or pre.labels()
    index = {name: i for i, name in enumerate(labels)}
    images_dir = os.path.join(folder, "images", SUBSET)
    labels_dir = os.path.join(folder, "labels", SUBSET)
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(labels_dir, exist_ok=True)
    own = {"no_polygon": 0}
    exported, taken = 0, set()
    for row, kept in pre.rows(output_uri, ["image_uri", "width", "height"], storage=storage,
                              allow_incomplete=allow_incomplete):  # fmt: skip
        image_name, stem = _names(row["image_uri"], taken)
        lines = []
        for inst in kept:
            if inst["label"] not in index:
                raise ValueError(f"label {inst['label']!r} of {row['image_uri']} is not in the class list {labels}")
            polygon = merge_rings(mask_rings(rle.decode(inst["segmentation"]), options.tolerance))
            if len(polygon) < 3:
                own["no_polygon"] += 1
                continue
            lines.append(polygon_line(index[inst["label"]], polygon, row["width"], row["height"]))
        exported += len(lines)
        with open(os.path.join(labels_dir, stem + ".txt"), "w") as f:
            f.write("".join(line + "\n" for line in lines))
        place_image(row["image_uri"], os.path.join(images_dir, image_name), options.images, storage)
    yaml_path = os.path.join(folder, "data.yaml")
    with open(yaml_path, "w") as f:
        f.write(_data_yaml(labels))
    return pre.report(exported, [yaml_path, labels_dir, images_dir], own)

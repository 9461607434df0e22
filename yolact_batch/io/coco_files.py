"""Pre-labeling exports of our Parquet output, streamed: COCO results JSON and COCO dataset JSON.

A results JSON feeds any COCO evaluator; a dataset JSON whose annotations are the predictions
(pre-labels, selected by ``io.prelabel``) imports into CVAT through datumaro (in the folder
layout of :func:`export_datumaro`) or Roboflow. Label Studio's COCO import has no RLE masks: see
``io.labelstudio``. Both are written entry by entry while the Parquet parts are read a record
batch at a time.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from yolact_batch.core import rle
from yolact_batch.core.polygons import mask_rings
from yolact_batch.io.prelabel import IMAGE_MODES, ExportReport, Prelabeler, PrelabelSettings, place_image, scan_classes
from yolact_batch.io.results_io import COCO_NAMES, iter_batches, load_json, rows_to_results
from yolact_batch.io.storage import StorageOptions, filesystem


class _JsonArrayWriter:
    """Writes ``[e1, e2, ...]`` one entry at a time to an open binary file."""

    def __init__(self, f):
        self.f, self.count = f, 0

    def __enter__(self):
        self.f.write(b"[")
        return self

    def write(self, entry) -> None:
        self.f.write((",\n" if self.count else "\n").encode() + json.dumps(entry).encode())
        self.count += 1

    def __exit__(self, *exc) -> None:
        self.f.write(b"\n]")


def _rows(output_uri: str, columns: list[str], storage: StorageOptions, allow_incomplete: bool) -> Iterator[dict]:
    for batch in iter_batches(output_uri, columns=columns, storage=storage, allow_incomplete=allow_incomplete):
        yield from batch.to_pylist()


def export_results(
    output_uri: str,
    path: str,
    *,
    score_threshold: float = 0.0,
    iou_type: str = "both",
    ground_truth: str | None = None,
    match: str = "auto",
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> int:
    """Write the COCO results JSON of an output; returns the number of entries.

    Args:
        output_uri: our Parquet output (see ``results_io.part_files``).
        path: JSON file to write (local path or URL).
        score_threshold: keep instances scoring above this.
        iou_type: ``"both"`` (``bbox`` and ``segmentation`` per entry: evaluators must drop
            ``bbox`` for segm, as ``yolact-batch evaluate`` does), ``"bbox"`` or ``"segm"``.
        ground_truth: COCO instances JSON whose image ids the entries take (rows matched by
            ``match``, see ``io.image_match.ImageMatcher``); without it every row needs an ``image_id``.
        match: ``"auto"``, ``"id"`` or ``"file-name"`` (with ``ground_truth``).
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options.
    """
    rows = _rows(output_uri, ["image_uri", "image_id", "status", "instances"], storage, allow_incomplete)
    unknown: list[str] = []
    if ground_truth is not None:
        from yolact_batch.io.image_match import ImageMatcher

        matcher = ImageMatcher(tuple(load_json(ground_truth, storage)["images"]), match)

        def mapped(rows: Iterable[dict]) -> Iterator[dict]:
            for row in rows:
                gid = matcher.match(row["image_id"], row["image_uri"])
                if gid is None:
                    unknown.append(row["image_uri"])
                    continue
                yield {**row, "image_id": gid}

        rows = mapped(rows)
    fs, out = filesystem(path, storage)
    with fs.open(out, "wb") as f, _JsonArrayWriter(f) as writer:
        for entry in rows_to_results(rows, score_threshold=score_threshold, iou_type=iou_type):
            writer.write(entry)
    if unknown:
        fs.rm(out)
        raise ValueError(f"rows for {len(unknown)} images not in {ground_truth}: {', '.join(unknown[:10])}")
    return writer.count


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """Outer contours of ``bool[H, W]`` as COCO polygons ``[[x1, y1, x2, y2, ...], ...]``.

    Points are pixel centres (``cv2.findContours`` + 0.5, as detectron2 does), simplified to
    ``tolerance`` pixels; holes are dropped; rings of fewer than 3 points or no area
    (1-pixel specks, thin lines) are skipped (see ``core.polygons``).
    """
    return [(ring + 0.5).ravel().tolist() for ring in mask_rings(mask, tolerance).outer]


def _polygon_area(polygons: list[list[float]], height: int, width: int) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))


def _file_name(uri: str, image_root: str | None) -> str:
    if image_root and uri.startswith(image_root.rstrip("/") + "/"):
        return uri[len(image_root.rstrip("/")) + 1 :]
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _category_ids(label_ids: dict[str, int], extra: Sequence[tuple[int, str]]) -> dict[str, int]:
    """Label -> COCO category id: our ids where they stay distinct and >= 1 (0 means "no
    class" to datumaro and CVAT), else all labels renumbered 1..K in the same order."""
    ids = {**label_ids, **{name: cid for cid, name in extra if name not in label_ids}}
    if len(set(ids.values())) == len(ids) and min(ids.values(), default=1) >= 1:
        return ids
    return {name: k + 1 for k, name in enumerate(ids)}


def export_dataset(
    output_uri: str,
    path: str,
    *,
    settings: PrelabelSettings = PrelabelSettings(),
    polygons: bool = False,
    tolerance: float = 0.0,
    categories: Sequence[tuple[int, str]] = (),
    image_root: str | None = None,
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> ExportReport:
    """Write a COCO dataset JSON whose annotations are the predictions (pre-labels).

    Three streamed passes over the output (ids and file names, images, annotations) after
    ``scan_classes``; memory holds the image ids and file names only.

    Args:
        output_uri: our Parquet output (see ``results_io.part_files``).
        path: JSON file to write (local path or URL).
        settings: which instances become pre-labels, and their label (category) names.
        polygons: store masks as polygons (outer contours) instead of RLE; most labeling
            tools edit polygons, RLE imports as a brush mask where supported.
        tolerance: polygon simplification in pixels (0: every boundary turn kept).
        categories: ``(id, name)`` pairs listed even without predictions (e.g. the 80 COCO
            classes); every label of the output is listed too.
        image_root: ``file_name`` is the ``image_uri`` relative to this prefix (keeps
            sub-folders); otherwise the base name. File names must be unique (datumaro and
            CVAT key images by them).
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options.

    Images keep their row ``image_id`` when every ok row has a distinct one, else they are
    numbered 1..N in row order. Annotations are numbered 1..M and carry ``iscrowd`` 0, their
    mask ``area`` and ``score``; categories are keyed by label (see ``_category_ids``).
    """
    read = lambda columns: _rows(output_uri, columns, storage, allow_incomplete)  # noqa: E731
    pre = Prelabeler(settings, scan_classes(output_uri, storage=storage, allow_incomplete=allow_incomplete))
    ids, names, keep_ids = set(), set(), True
    for row in read(["image_uri", "image_id", "status"]):
        if row["status"] == "ok":
            keep_ids = keep_ids and row["image_id"] is not None and row["image_id"] not in ids
            ids.add(row["image_id"])
            name = _file_name(row["image_uri"], image_root)
            if name in names:
                raise ValueError(
                    f"{output_uri}: two images would be named {name!r} in the dataset ({row['image_uri']}); "
                    "pass image_root (--image-root) so file names keep their sub-folders"
                )
            names.add(name)
    del ids, names
    category_ids = _category_ids(pre.label_ids(), categories)
    no_polygon = 0
    fs, out = filesystem(path, storage)
    with fs.open(out, "wb") as f:
        f.write(b'{"info": ' + json.dumps({"description": f"yolact_batch predictions of {output_uri}"}).encode())
        f.write(b', "licenses": [], "images": ')
        with _JsonArrayWriter(f) as images:
            for row in read(["image_uri", "image_id", "status", "width", "height"]):
                if row["status"] == "ok":
                    image_id = row["image_id"] if keep_ids else images.count + 1
                    name = _file_name(row["image_uri"], image_root)
                    images.write({"id": image_id, "file_name": name, "width": row["width"], "height": row["height"]})
        f.write(b', "annotations": ')
        with _JsonArrayWriter(f) as annotations:
            columns = ["image_id", "width", "height"]
            for n_image, (row, kept) in enumerate(pre.rows(output_uri, columns, storage=storage,
                                                             allow_incomplete=allow_incomplete), 1):  # fmt: skip
                image_id = row["image_id"] if keep_ids else n_image
                for inst in kept:
                    seg = {"size": list(inst["segmentation"]["size"]), "counts": inst["segmentation"]["counts"]}
                    area = inst["area"]
                    if polygons:
                        seg = mask_to_polygons(rle.decode(seg), tolerance)
                        if not seg:
                            no_polygon += 1
                            continue
                        area = _polygon_area(seg, *inst["segmentation"]["size"])
                    annotations.write({
                        "id": annotations.count + 1, "image_id": image_id, "category_id": category_ids[inst["label"]],
                        "segmentation": seg, "area": area, "bbox": inst["bbox"], "iscrowd": 0, "score": inst["score"],
                    })  # fmt: skip
        cats = [
            {"id": cid, "name": name, "supercategory": ""}
            for name, cid in sorted(category_ids.items(), key=lambda c: c[1])
        ]
        f.write(b', "categories": ' + json.dumps(cats).encode() + b"}\n")
    return pre.report(annotations.count, [path], {"no_polygon": no_polygon})


def export_datumaro(
    output_uri: str,
    folder: str,
    *,
    settings: PrelabelSettings = PrelabelSettings(),
    polygons: bool = False,
    tolerance: float = 0.0,
    categories: Sequence[tuple[int, str]] = (),
    image_root: str | None = None,
    images: str = "none",
    subset: str = "default",
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> ExportReport:
    """The COCO dataset in the folder layout datumaro (CVAT's import engine) reads::

        FOLDER/annotations/instances_<subset>.json     :func:`export_dataset`
        FOLDER/images/<subset>/<file_name>             the images (copied / symlinked), or empty

    Zip the folder and upload it to a CVAT task as "COCO 1.0" annotations, or import it with
    datumaro (``Dataset.import_from(json, "coco_instances")``). Datumaro refuses a JSON that is
    not in an ``annotations`` folder beside an ``images`` folder.

    Args:
        output_uri, settings, polygons, tolerance, categories, image_root, allow_incomplete,
            storage: as for :func:`export_dataset`.
        folder: dataset folder (local path).
        images: ``"copy"``, ``"symlink"`` or ``"none"`` (datumaro needs the folder, not the files).
        subset: subset name (CVAT's own exports use ``default``).
    """
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")
    images_dir = os.path.join(folder, "images", subset)
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(os.path.join(folder, "annotations"), exist_ok=True)
    report = export_dataset(
        output_uri, os.path.join(folder, "annotations", f"instances_{subset}.json"), settings=settings,
        polygons=polygons, tolerance=tolerance, categories=categories, image_root=image_root,
        allow_incomplete=allow_incomplete, storage=storage,
    )  # fmt: skip
    if images != "none":
        for row in _rows(output_uri, ["image_uri", "status"], storage, allow_incomplete):
            if row["status"] == "ok":
                target = os.path.join(images_dir, _file_name(row["image_uri"], image_root))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                place_image(row["image_uri"], target, images, storage)
    return report


COCO_CATEGORIES: tuple[tuple[int, str], ...] = tuple(COCO_NAMES.items())

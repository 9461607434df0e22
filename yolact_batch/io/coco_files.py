"""Pre-labeling exports of our Parquet output, streamed: COCO results JSON and COCO dataset JSON.

A results JSON feeds any COCO evaluator; a dataset JSON whose annotations are the predictions
imports into CVAT, Roboflow or Label Studio (COCO import). Both are written entry by entry
while the Parquet parts are read a record batch at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from yolact_batch.core import rle
from yolact_batch.core.coco import segm_score
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


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of ``bool[H, W]`` as COCO polygons ``[[x1, y1, x2, y2, ...], ...]``.

    Points are pixel centres (``cv2.findContours`` + 0.5, as detectron2 does); holes are
    dropped; contours of fewer than 3 points (1-pixel specks, thin lines) are skipped.
    """
    import cv2

    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return []
    y0, x0 = int(ys.min()), int(xs.min())
    crop = np.ascontiguousarray(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], dtype=np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
    return [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours if len(c) >= 3]


def _polygon_area(polygons: list[list[float]], height: int, width: int) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))


@dataclass(frozen=True)
class DatasetExport:
    """Counts of a COCO dataset export.

    Attributes:
        images: images written (ok rows).
        annotations: annotations written.
        below_score: instances dropped by the score threshold.
        empty_mask: instances dropped because their mask has no pixel (nothing to label).
        no_polygon: instances dropped because their mask has no polygon of 3+ points.
        error_rows: rows skipped because their image could not be processed.
    """

    images: int
    annotations: int
    below_score: int
    empty_mask: int
    no_polygon: int
    error_rows: int


def _file_name(uri: str, image_root: str | None) -> str:
    if image_root and uri.startswith(image_root.rstrip("/") + "/"):
        return uri[len(image_root.rstrip("/")) + 1 :]
    return uri.rstrip("/").rsplit("/", 1)[-1]


def export_dataset(
    output_uri: str,
    path: str,
    *,
    score_threshold: float = 0.0,
    polygons: bool = False,
    categories: Sequence[tuple[int, str]] = (),
    image_root: str | None = None,
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> DatasetExport:
    """Write a COCO dataset JSON whose annotations are the predictions (pre-labels).

    Three streamed passes over the output (ids, images, annotations); memory holds the
    image ids only.

    Args:
        output_uri: our Parquet output (see ``results_io.part_files``).
        path: JSON file to write (local path or URL).
        score_threshold: keep instances scoring above this.
        polygons: store masks as polygons (outer contours) instead of RLE; most labeling
            tools edit polygons, RLE imports as a brush mask where supported.
        categories: ``(id, name)`` pairs listed even without predictions (e.g. the 80 COCO
            classes); every category that appears in the rows is listed too.
        image_root: ``file_name`` is the ``image_uri`` relative to this prefix (keeps
            sub-folders); otherwise the base name.
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options.

    Images keep their row ``image_id`` when every ok row has a distinct one, else they are
    numbered 1..N in row order. Each annotation is a mask and carries its mask score
    (``coco.segm_score``: YOLACT++'s re-scored score, else the box score), which
    ``score_threshold`` applies to.
    """
    read = lambda columns: _rows(output_uri, columns, storage, allow_incomplete)  # noqa: E731
    ids, keep_ids = set(), True
    for row in read(["image_id", "status"]):
        if row["status"] == "ok":
            keep_ids = keep_ids and row["image_id"] is not None and row["image_id"] not in ids
            ids.add(row["image_id"])
    del ids
    names = dict(categories)
    counts = dict(images=0, annotations=0, below_score=0, empty_mask=0, no_polygon=0, error_rows=0)
    fs, out = filesystem(path, storage)
    with fs.open(out, "wb") as f:
        f.write(b'{"info": ' + json.dumps({"description": f"yolact_batch predictions of {output_uri}"}).encode())
        f.write(b', "licenses": [], "images": ')
        with _JsonArrayWriter(f) as images:
            for row in read(["image_uri", "image_id", "status", "width", "height"]):
                if row["status"] != "ok":
                    counts["error_rows"] += 1
                    continue
                image_id = row["image_id"] if keep_ids else images.count + 1
                name = _file_name(row["image_uri"], image_root)
                images.write({"id": image_id, "file_name": name, "width": row["width"], "height": row["height"]})
        counts["images"] = images.count
        f.write(b', "annotations": ')
        with _JsonArrayWriter(f) as annotations:
            n_image = 0
            for row in read(["image_id", "status", "width", "height", "instances"]):
                if row["status"] != "ok":
                    continue
                n_image += 1
                image_id = row["image_id"] if keep_ids else n_image
                for inst in row["instances"]:
                    names.setdefault(inst["category_id"], inst["category"])
                    if not segm_score(inst) > score_threshold:
                        counts["below_score"] += 1
                        continue
                    if inst["area"] == 0:
                        counts["empty_mask"] += 1
                        continue
                    seg = {"size": list(inst["segmentation"]["size"]), "counts": inst["segmentation"]["counts"]}
                    area = inst["area"]
                    if polygons:
                        seg = mask_to_polygons(rle.decode(seg))
                        if not seg:
                            counts["no_polygon"] += 1
                            continue
                        area = _polygon_area(seg, *inst["segmentation"]["size"])
                    annotations.write({
                        "id": annotations.count + 1, "image_id": image_id, "category_id": inst["category_id"],
                        "segmentation": seg, "area": area, "bbox": inst["bbox"], "iscrowd": 0, "score": segm_score(inst),
                    })  # fmt: skip
        counts["annotations"] = annotations.count
        cats = [{"id": int(c), "name": names[c], "supercategory": ""} for c in sorted(names)]
        f.write(b', "categories": ' + json.dumps(cats).encode() + b"}\n")
    return DatasetExport(**counts)


COCO_CATEGORIES: tuple[tuple[int, str], ...] = tuple(COCO_NAMES.items())

"""The one result row format, used by every output (JSON lines, Parquet, exports).

One row per input image::

    image_uri  string        where the image was read from
    image_id   int64 | null  COCO image id when known
    width      int32 | null  decoded image size (null when decoding failed)
    height     int32 | null
    status     string        "ok" | "error"
    error      string | null what went wrong, naming the cause
    instances  list<struct>  category_id (COCO id), category (name), score (float32),
                             bbox [x, y, w, h] pixels (COCO), area (int64 mask pixels),
                             segmentation {size [h, w], counts (COCO compressed RLE)},
                             mask_score (float32 | null: YOLACT++'s re-scored mask
                             score, the segm score; null for YOLACT and for older files)
    model      struct        name, digest (sha256 of the model file)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from yolact_batch.core.coco import instances as detection_instances
from yolact_batch.core.detections import Detections


def failure_text(stage: str, exc: BaseException, limit: int = 300) -> str:
    """The ``error`` text of an image that an unexpected exception stopped in ``stage``
    ("decode failed: error: ..."): one line, the exception's type, its message cut short."""
    message = " ".join(str(exc).split())[:limit]
    return f"{stage} failed: {type(exc).__name__}: {message}"


SEGMENTATION = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
INSTANCE = pa.struct(
    [
        ("category_id", pa.int32()),
        ("category", pa.string()),
        ("score", pa.float32()),
        ("bbox", pa.list_(pa.float64())),
        ("area", pa.int64()),
        ("segmentation", SEGMENTATION),
        ("mask_score", pa.float32()),
    ]
)
MODEL = pa.struct([("name", pa.string()), ("digest", pa.string())])
ROW_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),
        ("image_id", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("instances", pa.list_(INSTANCE)),
        ("model", MODEL),
    ]
)


@dataclass(frozen=True)
class ModelRef:
    """Which model produced a row: its name and the sha256 of its file."""

    name: str
    digest: str

    def to_dict(self) -> dict:
        return {"name": self.name, "digest": self.digest}


def ok_row(dets: Detections, *, image_uri: str, image_id: int | None, model: ModelRef) -> dict:
    """The row for an image that was processed (possibly with zero instances)."""
    height, width = dets.image_size
    return {
        "image_uri": image_uri,
        "image_id": image_id,
        "width": width,
        "height": height,
        "status": "ok",
        "error": None,
        "instances": detection_instances(dets),
        "model": model.to_dict(),
    }


def error_row(*, image_uri: str, image_id: int | None, error: str, model: ModelRef) -> dict:
    """The row for an image that could not be processed; ``error`` names the cause."""
    return {
        "image_uri": image_uri,
        "image_id": image_id,
        "width": None,
        "height": None,
        "status": "error",
        "error": error,
        "instances": [],
        "model": model.to_dict(),
    }


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows to an Arrow table with ``ROW_SCHEMA`` (an empty list gives an empty table)."""
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


# Per-instance fields of INSTANCE, each built for every instance of a batch at once from the
# concatenated Detections (no per-instance Python objects). A new field: one entry in
# _INSTANCE_COLUMNS and one in INSTANCE, in the same order (a test checks it).
def _category_ids(dets: list[Detections]) -> pa.Array:
    return pa.array(np.concatenate([np.asarray(d.category_ids, np.int32)[d.class_ids] for d in dets]), pa.int32())


def _categories(dets: list[Detections]) -> pa.Array:
    return pa.array([d.class_names[c] for d in dets for c in d.class_ids.tolist()], pa.string())


def _scores(dets: list[Detections]) -> pa.Array:
    return pa.array(np.concatenate([d.scores for d in dets]).astype(np.float32, copy=False), pa.float32())


def _bboxes(dets: list[Detections]) -> pa.Array:
    # coco_bbox's arithmetic on whole columns: float64 x, y, x2 - x1, y2 - y1, then
    # round(v * 10) / 10 (numpy rounds half to even, as Python's round).
    b = np.concatenate([d.boxes for d in dets]).reshape(-1, 4).astype(np.float64)
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    values = pa.array((np.round(xywh * 10) / 10).ravel(), pa.float64())
    return pa.ListArray.from_arrays(pa.array(np.arange(0, len(values) + 1, 4, dtype=np.int32)), values)


def _areas(dets: list[Detections]) -> pa.Array:
    return pa.array(np.concatenate([d.areas for d in dets]).astype(np.int64, copy=False), pa.int64())


def _segmentations(dets: list[Detections]) -> pa.Array:
    sizes = np.concatenate([np.tile(np.asarray(d.image_size, np.int32), len(d)) for d in dets])
    size = pa.ListArray.from_arrays(pa.array(np.arange(0, sizes.size + 1, 2, dtype=np.int32)), pa.array(sizes))
    counts = pa.array([r["counts"] for d in dets for r in d.rles], pa.string())
    return pa.StructArray.from_arrays([size, counts], fields=list(SEGMENTATION))


def _mask_scores(dets: list[Detections]) -> pa.Array:
    # YOLACT++ only; null for every instance of a model without mask re-scoring.
    values = np.concatenate(
        [np.full(len(d), np.nan, np.float32) if d.mask_scores is None else d.mask_scores for d in dets]
    )
    missing = np.concatenate([np.full(len(d), d.mask_scores is None) for d in dets])
    return pa.array(values.astype(np.float32, copy=False), pa.float32(), mask=missing)


_INSTANCE_COLUMNS = {
    "category_id": _category_ids,
    "category": _categories,
    "score": _scores,
    "bbox": _bboxes,
    "area": _areas,
    "segmentation": _segmentations,
    "mask_score": _mask_scores,
}


def results_table(
    image_uris: Sequence[str], image_ids: Sequence[int | None], results: Sequence[Detections | str], model: ModelRef
) -> pa.Table:
    """The rows of a batch of images as an Arrow table with ``ROW_SCHEMA``, built column by column.

    Equal to ``rows_to_table`` of ``ok_row``/``error_row`` of each image (tests check it), without
    a Python dict per instance. ``results[i]`` is the image's ``Detections``, or the text of
    its error.
    """
    n = len(results)
    if not len(image_uris) == len(image_ids) == n:
        raise ValueError(f"results_table: {len(image_uris)} uris, {len(image_ids)} ids and {n} results")
    ok = [r for r in results if isinstance(r, Detections)]
    per_image = np.array([len(r) if isinstance(r, Detections) else 0 for r in results], np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(per_image, dtype=np.int32)]).astype(np.int32))
    if per_image.sum():
        kept = [d for d in ok if len(d)]
        fields = [build(kept) for build in _INSTANCE_COLUMNS.values()]
    else:
        fields = [pa.array([], field.type) for field in INSTANCE]
    instances = pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(fields, fields=list(INSTANCE)))
    size = [r.image_size if isinstance(r, Detections) else (None, None) for r in results]
    columns = {
        "image_uri": pa.array(image_uris, pa.string()),
        "image_id": pa.array(image_ids, pa.int64()),
        "width": pa.array([s[1] for s in size], pa.int32()),
        "height": pa.array([s[0] for s in size], pa.int32()),
        "status": pa.array(["ok" if isinstance(r, Detections) else "error" for r in results], pa.string()),
        "error": pa.array([None if isinstance(r, Detections) else r for r in results], pa.string()),
        "instances": instances,
        "model": pa.array([model.to_dict()] * n, MODEL),
    }
    return pa.Table.from_arrays(list(columns.values()), schema=ROW_SCHEMA)

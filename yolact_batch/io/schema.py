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

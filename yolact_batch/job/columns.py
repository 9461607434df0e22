"""The columns that pass between the job's stages, declared once, with their encodings.

    read      -> IMAGE_URI, IMAGE_ID, DATA, ERROR                          (pyarrow)
    decode    -> META + INPUT                                              (numpy)
    model     -> META + RAW_OUTPUTS (raw contract) | META + PACKED + PROTO_SIZE (graph)
                 [+ MASK_SCORES (graph, YOLACT++)]
    postprocess -> rows of ``io.schema.ROW_SCHEMA``

``IMAGE_ID`` travels as a string ("" = none) because Ray Data turns nullable integer columns
into floats in numpy batches. ``ERROR`` is "" for a good image; a failed image keeps its text
and every later stage passes it through untouched. Graph-contract heads travel packed: per
image only the kept detections and each mask inside its crop window, as ragged columns.
"""

from __future__ import annotations

import numpy as np

from yolact_batch.core.heads import MASK_SCORES, RAW_OUTPUTS, PackedDetections, RawHeads

IMAGE_URI, IMAGE_ID, ERROR, HEIGHT, WIDTH = "image_uri", "image_id", "error", "height", "width"
DATA = "data"  # encoded image bytes, read stage -> decode stage
INPUT = "input"  # float32[3, S, S] network input, decode stage -> model stage
META = (IMAGE_URI, IMAGE_ID, ERROR, HEIGHT, WIDTH)  # carried from decode to postprocess
PACKED = ("boxes", "scores", "classes", "mask_values")  # ragged, one value per image
PROTO_SIZE = "proto_size"  # int32[2] per image: the mask windows' prototype grid
_EMPTY = dict(
    boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
    classes=np.zeros(0, np.int64), mask_values=np.zeros(0, np.float32), mask_scores=np.zeros(0, np.float32),
)  # fmt: skip


def encode_image_id(value: int | None) -> str:
    return "" if value is None else str(value)


def decode_image_id(value: str) -> int | None:
    return int(value) if value else None


def pack_columns(packed: dict[int, PackedDetections], n: int, *, mask_scores: bool = False) -> dict[str, np.ndarray]:
    """``PACKED`` + ``PROTO_SIZE`` columns for ``n`` rows; rows missing from ``packed`` get nothing.

    ``mask_scores``: add the ``MASK_SCORES`` column (a model with mask re-scoring, YOLACT++).
    """
    out = {}
    for name in (*PACKED, MASK_SCORES) if mask_scores else PACKED:
        # Filled one by one: np.array() would try to stack equal shapes into one array.
        column = out[name] = np.empty(n, object)
        for i in range(n):
            column[i] = getattr(packed[i], name) if i in packed else _EMPTY[name]
    out[PROTO_SIZE] = np.array([packed[i].proto_size if i in packed else (0, 0) for i in range(n)], np.int32)
    return out


def unpack_columns(batch: dict[str, np.ndarray], rows: list[int]) -> list[PackedDetections]:
    """The packed detections of ``rows`` (inverse of ``pack_columns``)."""
    # A column arrives as one array when all its ragged values happened to have the same shape.
    return [
        PackedDetections(
            boxes=np.asarray(batch["boxes"][i], np.float32).reshape(-1, 4),
            scores=np.asarray(batch["scores"][i], np.float32).reshape(-1),
            classes=np.asarray(batch["classes"][i], np.int64).reshape(-1),
            mask_values=np.asarray(batch["mask_values"][i], np.float32).reshape(-1),
            proto_size=tuple(int(v) for v in batch[PROTO_SIZE][i]),
            mask_scores=np.asarray(batch[MASK_SCORES][i], np.float32).reshape(-1) if MASK_SCORES in batch else None,
        )
        for i in rows
    ]


def raw_columns(batch: dict[str, np.ndarray], rows: list[int]) -> RawHeads:
    """The raw heads of ``rows``."""
    return RawHeads(**{name: batch[name][rows] for name in RAW_OUTPUTS})

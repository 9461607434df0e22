"""Our Parquet output, read a record batch at a time, and COCO results JSON <-> rows.

The batch job writes ``OUTPUT/predictions/*.parquet`` (rows of ``schema.ROW_SCHEMA``, any
number of part files) and ``OUTPUT/_SUCCESS`` once every part is complete. Readers here never
hold more than one record batch of rows: a million-image output streams through in constant
memory. ``write_rows`` writes the same layout (tests, round trips, conversions).
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from typing import Iterable, Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from yolact_batch.core import rle
from yolact_batch.core.coco import COCO_CATEGORY_IDS, COCO_CLASSES, coco_results
from yolact_batch.io.commit import OutputStore
from yolact_batch.io.schema import ROW_SCHEMA, ModelRef, rows_to_table
from yolact_batch.io.storage import StorageOptions, filesystem

PREDICTIONS_DIR = OutputStore.PREDICTIONS
SUCCESS_MARKER = OutputStore.SUCCESS
BATCH_ROWS = 256  # rows per record batch: an image row holds up to ~100 RLE masks (~50 kB)
COCO_NAMES: dict[int, str] = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
RESULTS_MODEL = ModelRef("coco-results-json", "")


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def part_files(
    output_uri: str, *, storage: StorageOptions = StorageOptions(), allow_incomplete: bool = False
) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The filesystem and sorted Parquet part files of an output.

    ``output_uri`` is a job output folder (``predictions/`` + ``_SUCCESS``), a folder of
    ``.parquet`` files, or one ``.parquet`` file. A job output without ``_SUCCESS`` did not
    finish; it is refused unless ``allow_incomplete``.
    """
    fs, path = filesystem(output_uri, storage)
    if fs.isfile(path):
        return fs, [path]
    if not fs.isdir(path):
        raise FileNotFoundError(f"{output_uri}: no such file or directory")
    predictions = _join(path, PREDICTIONS_DIR)
    if fs.isdir(predictions):
        if not allow_incomplete and not fs.exists(_join(path, SUCCESS_MARKER)):
            raise RuntimeError(
                f"{output_uri}: no {SUCCESS_MARKER} marker, the job did not finish "
                "(allow_incomplete / --allow-incomplete reads it anyway)"
            )
        path = predictions
    files = sorted(
        p for p in fs.find(path)
        if p.endswith(".parquet") and not any(part.startswith(("_", ".")) for part in p[len(path):].split("/"))
    )  # fmt: skip
    if not files:
        raise FileNotFoundError(f"{output_uri}: no .parquet files under {path}")
    return fs, files


def iter_batches(
    output_uri: str,
    *,
    columns: Sequence[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    storage: StorageOptions = StorageOptions(),
    allow_incomplete: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_rows`` rows, part file by part file, row group by row group.

    Args:
        output_uri: see :func:`part_files`.
        columns: top-level columns of ``ROW_SCHEMA`` to read (default all); the rest are
            never read from storage.
        batch_rows: rows per batch (memory is about one batch plus one row group).
        storage: object storage options.
        allow_incomplete: read an output that has no ``_SUCCESS`` marker.
    """
    fs, files = part_files(output_uri, storage=storage, allow_incomplete=allow_incomplete)
    for path in files:
        with fs.open(path, "rb") as f:
            try:
                parquet = pq.ParquetFile(f)
            except (pa.ArrowException, OSError) as exc:
                raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
            missing = sorted(set(columns or ROW_SCHEMA.names) - set(parquet.schema_arrow.names))
            if missing:
                raise ValueError(f"{path}: missing columns {missing} of the row format")
            yield from parquet.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None)


def iter_rows(output_uri: str, **kwargs) -> Iterator[dict]:
    """Rows as dicts, one record batch in memory at a time (arguments of :func:`iter_batches`)."""
    for batch in iter_batches(output_uri, **kwargs):
        yield from batch.to_pylist()


def write_rows(
    rows: Iterable[dict],
    output_uri: str,
    *,
    rows_per_file: int | None = None,
    row_group_rows: int = 1024,
    storage: StorageOptions = StorageOptions(),
) -> list[str]:
    """Write rows in the job's layout (``io.commit.OutputStore``): part files numbered
    ``part-NNNNN.parquet`` in order (the job names its commits by a hash instead), then ``_SUCCESS``.

    Args:
        rows: row dicts of ``ROW_SCHEMA`` (any iterable; consumed in row groups).
        output_uri: output folder (local path or URL).
        rows_per_file: start a new part file after this many rows (default: one file).
        row_group_rows: rows per Parquet row group.
        storage: object storage options.

    Returns the part file paths written.
    """
    fs, path = filesystem(output_uri, storage)
    folder = _join(path, PREDICTIONS_DIR)
    fs.makedirs(folder, exist_ok=True)
    rows = iter(rows)
    per_file = rows_per_file or sys.maxsize
    written: list[str] = []
    images = 0
    chunk = list(islice(rows, min(row_group_rows, per_file)))
    while True:  # one part file per pass; an empty input still gets one (empty) part
        part = _join(folder, f"{OutputStore.PART_PREFIX}{len(written):05d}.parquet")
        count = 0
        with fs.open(part, "wb") as f, pq.ParquetWriter(f, ROW_SCHEMA) as writer:
            while chunk:
                writer.write_table(rows_to_table(chunk), row_group_size=row_group_rows)
                count += len(chunk)
                chunk = list(islice(rows, min(row_group_rows, per_file - count)))
        written.append(part)
        images += count
        chunk = list(islice(rows, min(row_group_rows, per_file))) if count >= per_file else []
        if not chunk:
            break
    OutputStore(output_uri, storage).write_success({"images": images, "files": len(written), "writer": "write_rows"})
    return written


def load_json(uri: str, storage: StorageOptions = StorageOptions()):
    """Parsed JSON of a local file or URL; errors name the file."""
    fs, path = filesystem(uri, storage)
    try:
        with fs.open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{uri}: not valid JSON ({exc})") from None


def rows_to_results(
    rows: Iterable[dict], *, score_threshold: float | None = None, iou_type: str = "both"
) -> Iterator[dict]:
    """COCO results entries of rows (error rows have none); see ``core.coco.coco_results``.

    Each row with instances needs an ``image_id`` (map file names to ids first otherwise).
    """
    for row in rows:
        if not row["instances"]:
            continue
        if row["image_id"] is None:
            raise ValueError(f"{row['image_uri']}: row has no image_id (map file names to ground-truth ids)")
        yield from coco_results(row["image_id"], row["instances"], iou_type=iou_type, score_threshold=score_threshold)


def results_to_rows(
    results: Iterable[dict],
    images: Sequence[dict],
    *,
    category_names: dict[int, str] | None = None,
    model: ModelRef = RESULTS_MODEL,
) -> list[dict]:
    """Rows of COCO results entries: one ok row per image of ``images``, in that order.

    Args:
        results: entries with ``image_id``, ``category_id``, ``score``, ``segmentation``
            (compressed RLE) and optionally ``bbox`` (derived from the mask when absent) and
            ``mask_score`` (our ``both`` layout of a YOLACT++ output).
        images: COCO image dicts (``id``, ``file_name``, ``width``, ``height``), e.g. the
            ground truth's; ``file_name`` becomes ``image_uri``.
        category_names: category id -> name (default: the 80 COCO classes).
        model: recorded in every row.

    Raises ``ValueError`` naming results for images not in ``images`` or without a mask.
    """
    names = COCO_NAMES if category_names is None else category_names
    by_image: dict[int, list[dict]] = {int(im["id"]): [] for im in images}
    unknown: set = set()
    for r in results:
        items = by_image.get(r["image_id"])
        if items is None:
            unknown.add(r["image_id"])
            continue
        seg = r.get("segmentation")
        if not isinstance(seg, dict):
            raise ValueError(f"result for image {r['image_id']} has no RLE segmentation: rows carry masks")
        seg = {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]}
        if isinstance(seg["counts"], bytes):
            seg["counts"] = seg["counts"].decode("ascii")
        elif not isinstance(seg["counts"], str):
            seg["counts"] = rle.counts_to_string(seg["counts"])
        cid = int(r["category_id"])
        items.append({
            "category_id": cid,
            "category": names.get(cid, str(cid)),
            "score": float(r["score"]),
            "bbox": [float(v) for v in r["bbox"]] if "bbox" in r else rle.bbox(seg),
            "area": rle.area(seg),
            "segmentation": seg,
            "mask_score": None if r.get("mask_score") is None else float(r["mask_score"]),
        })  # fmt: skip
    if unknown:
        raise ValueError(f"results for {len(unknown)} image ids not in the images given: {sorted(unknown)[:10]}")
    return [
        {
            "image_uri": im.get("file_name", str(im["id"])),
            "image_id": int(im["id"]),
            "width": im.get("width"),
            "height": im.get("height"),
            "status": "ok",
            "error": None,
            "instances": by_image[int(im["id"])],
            "model": model.to_dict(),
        }
        for im in images
    ]


def results_from_reference_dets(data: dict) -> list[dict]:
    """COCO results of the official YOLACT per-image format (``web/dets``).

    ``{"images": [{"image_id", "dets": [{"score", "bbox" [x, y, w, h], "category" (name),
    "mask" {size, counts}}]}]}`` -> entries with ``bbox`` and ``segmentation``.
    """
    ids = dict(zip(COCO_CLASSES, COCO_CATEGORY_IDS))
    out = []
    for image in data["images"]:
        for det in image["dets"]:
            if det["category"] not in ids:
                raise ValueError(f"image {image['image_id']}: unknown COCO class {det['category']!r}")
            out.append({
                "image_id": int(image["image_id"]),
                "category_id": ids[det["category"]],
                "bbox": [float(v) for v in det["bbox"]],
                "score": float(det["score"]),
                "segmentation": {"size": [int(v) for v in det["mask"]["size"]], "counts": det["mask"]["counts"]},
            })  # fmt: skip
    return out

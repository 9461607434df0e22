"""Reading our Parquet output a record batch at a time; results JSON <-> rows."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from yolact_batch.core import rle
from yolact_batch.io.results_io import (
    iter_batches,
    iter_rows,
    part_files,
    results_from_reference_dets,
    results_to_rows,
    rows_to_results,
    write_rows,
)  # fmt: skip


def _row(i: int, n_instances: int = 2) -> dict:
    mask = np.zeros((6, 8), bool)
    mask[1:4, i % 5 : i % 5 + 3] = True
    seg = rle.encode(mask)
    inst = {
        "category_id": 1, "category": "person", "score": 0.5, "bbox": [float(i % 5), 1.0, 3.0, 3.0], "area": 9,
        "segmentation": seg, "mask_score": None,  # null: a YOLACT model (no mask re-scoring)
    }  # fmt: skip
    return {
        "image_uri": f"s3://b/img_{i:03d}.jpg", "image_id": i, "width": 8, "height": 6, "status": "ok", "error": None,
        "instances": [inst] * n_instances, "model": {"name": "m", "digest": "sha256:0"},
    }  # fmt: skip


def test_parts_and_row_groups_stream_in_order(tmp_path):
    rows = [_row(i) for i in range(23)]
    parts = write_rows(rows, str(tmp_path / "out"), rows_per_file=10, row_group_rows=4)
    assert [p.rsplit("/", 1)[-1] for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in parts] == [3, 3, 1]
    assert (tmp_path / "out" / "_SUCCESS").exists()
    batches = list(iter_batches(str(tmp_path / "out"), batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2, 4, 4, 2, 3]  # one row group (at most 4 rows) at a time
    assert list(iter_rows(str(tmp_path / "out"))) == rows
    only = next(iter_batches(str(tmp_path / "out"), columns=["image_uri", "status"]))
    assert only.schema.names == ["image_uri", "status"]


def test_reading_is_lazy_part_by_part(tmp_path):
    """A broken last part does not stop the first batches: nothing is read ahead."""
    parts = write_rows([_row(i) for i in range(12)], str(tmp_path / "out"), rows_per_file=4, row_group_rows=2)
    with open(parts[-1], "wb") as f:
        f.write(b"not parquet at all")
    batches = iter_batches(str(tmp_path / "out"), batch_rows=2)
    first = [next(batches) for _ in range(4)]  # both row groups of parts 0 and 1
    assert [b.column("image_id").to_pylist() for b in first] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match=r"part-00002.parquet: not a readable Parquet file"):
        next(batches)


def test_output_layouts_and_incomplete_outputs(tmp_path):
    out = tmp_path / "out"
    write_rows([_row(0)], str(out))
    assert len(part_files(str(out))[1]) == 1
    assert len(part_files(str(out / "predictions"))[1]) == 1  # the folder of parts itself
    assert len(part_files(str(out / "predictions" / "part-00000.parquet"))[1]) == 1
    (out / "_SUCCESS").unlink()
    with pytest.raises(RuntimeError, match="no _SUCCESS marker, the job did not finish"):
        part_files(str(out))
    assert len(list(iter_rows(str(out), allow_incomplete=True))) == 1
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        part_files(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        part_files(str(tmp_path / "empty"))


def test_empty_output_has_one_empty_part(tmp_path):
    parts = write_rows([], str(tmp_path / "out"))
    assert len(parts) == 1 and list(iter_rows(str(tmp_path / "out"))) == []


def test_missing_columns_are_named(tmp_path):
    import pyarrow as pa

    path = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"image_uri": ["a.jpg"]}), path)
    with pytest.raises(ValueError, match=r"odd.parquet: missing columns \['instances'\] of the row format"):
        next(iter_batches(str(path), columns=["image_uri", "instances"]))
    with pytest.raises(ValueError, match=r"odd.parquet: missing columns \['error', 'height', 'image_id'"):
        next(iter_batches(str(path)))


def test_results_rows_round_trip_and_reference_format():
    data = {"images": [{"image_id": 5, "dets": [
        {"score": 0.75, "bbox": [1.0, 1.0, 3.0, 3.0], "category": "dog", "mask": rle.encode(np.eye(6, 8, dtype=bool))},
    ]}, {"image_id": 6, "dets": []}]}  # fmt: skip
    results = results_from_reference_dets(data)
    mask = data["images"][0]["dets"][0]["mask"]
    assert results == [
        {"image_id": 5, "category_id": 18, "bbox": [1.0, 1.0, 3.0, 3.0], "score": 0.75, "segmentation": mask}
    ]
    images = [
        {"id": 5, "file_name": "five.jpg", "width": 8, "height": 6},
        {"id": 6, "file_name": "six.jpg", "width": 8, "height": 6},
    ]
    rows = results_to_rows(results, images)
    assert [r["image_uri"] for r in rows] == ["five.jpg", "six.jpg"] and rows[1]["instances"] == []
    assert rows[0]["instances"][0]["category"] == "dog" and rows[0]["instances"][0]["area"] == 6
    assert list(rows_to_results(rows)) == results
    assert list(rows_to_results(rows, score_threshold=0.75)) == []
    assert list(rows_to_results(rows, iou_type="segm"))[0].keys() == {
        "image_id",
        "category_id",
        "score",
        "segmentation",
    }
    no_box = results_to_rows([{k: v for k, v in results[0].items() if k != "bbox"}], images)
    assert no_box[0]["instances"][0]["bbox"] == [0.0, 0.0, 6.0, 6.0]  # from the mask (pycocotools toBbox)
    with pytest.raises(ValueError, match=r"image ids not in the images given: \[99\]"):
        results_to_rows([{**results[0], "image_id": 99}], images)
    with pytest.raises(ValueError, match="unknown COCO class 'dragon'"):
        dragon = {**data["images"][0]["dets"][0], "category": "dragon"}
        results_from_reference_dets({"images": [{"image_id": 1, "dets": [dragon]}]})
    with pytest.raises(ValueError, match="row has no image_id"):
        list(rows_to_results([{**rows[0], "image_id": None}]))

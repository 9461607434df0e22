"""YOLACT++ mask scores downstream: evaluate, the COCO exports, pre-labels and overlays use the mask
score for masks and the box score for boxes; outputs written before mask scores existed still read."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yolact_batch.core import rle
from yolact_batch.evaluation import evaluate
from yolact_batch.evaluation.overlays import draw_instances
from yolact_batch.io.coco_files import export_dataset, export_results
from yolact_batch.io.prelabel import Prelabeler, PrelabelSettings
from yolact_batch.io.results_io import iter_rows, part_files, write_rows
from yolact_batch.io.schema import INSTANCE, ROW_SCHEMA

GT = {
    "images": [{"id": 7, "file_name": "seven.jpg", "width": 10, "height": 10}],
    "annotations": [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 1,
            "bbox": [1, 1, 4, 4],
            "area": 16,
            "iscrowd": 0,
            "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
        }
    ],  # fmt: skip
    "categories": [{"id": 1, "name": "person"}],
}


def _mask(y, x):
    mask = np.zeros((10, 10), bool)
    mask[y : y + 4, x : x + 4] = True
    return mask


def _instance(bbox, mask, score, mask_score):
    return {"category_id": 1, "category": "person", "score": score, "bbox": bbox, "area": int(mask.sum()),
            "segmentation": rle.encode(mask), "mask_score": mask_score}  # fmt: skip


def _rows(with_mask_scores=True):
    # A: the right box but a wrong mask, high box score, low mask score; B: the reverse.
    a = _instance([1.0, 1.0, 4.0, 4.0], _mask(6, 6), 0.9, 0.1 if with_mask_scores else None)
    b = _instance([6.0, 0.0, 4.0, 4.0], _mask(1, 1), 0.5, 0.8 if with_mask_scores else None)
    return [{"image_uri": "seven.jpg", "image_id": 7, "width": 10, "height": 10, "status": "ok", "error": None,
             "instances": [a, b], "model": {"name": "m", "digest": ""}}]  # fmt: skip


def _write_old_format(rows, folder):
    """An output as written before mask scores existed: no ``mask_score`` field in the Parquet schema."""
    write_rows(rows, str(folder))
    old_instance = pa.struct([f for f in INSTANCE if f.name != "mask_score"])
    fields = [pa.field("instances", pa.list_(old_instance)) if f.name == "instances" else f for f in ROW_SCHEMA]
    old_rows = [{**r, "instances": [{k: v for k, v in i.items() if k != "mask_score"} for i in r["instances"]]}
                for r in rows]  # fmt: skip
    _, (part,) = part_files(str(folder))
    pq.write_table(pa.Table.from_pylist(old_rows, schema=pa.schema(fields)), part)


@pytest.fixture
def outputs(tmp_path):
    write_rows(_rows(), str(tmp_path / "plus"))
    _write_old_format(_rows(with_mask_scores=False), tmp_path / "old")
    return tmp_path


def test_evaluate_scores_masks_by_the_mask_score(outputs):
    plus = evaluate(str(outputs / "plus"), GT, str(outputs / "r1"), plots=False).metrics
    assert plus["bbox"]["AP"] == pytest.approx(1.0)  # the right box ranks first by box score
    assert plus["segm"]["AP"] == pytest.approx(1.0)  # the right mask ranks first by mask score
    old = evaluate(str(outputs / "old"), GT, str(outputs / "r2"), plots=False).metrics
    assert old["bbox"]["AP"] == pytest.approx(1.0)
    assert old["segm"]["AP"] < 0.6  # by the box score the wrong mask ranks first


def test_older_outputs_read_without_mask_scores(outputs):
    (row,) = iter_rows(str(outputs / "old"))
    assert [i.get("mask_score") for i in row["instances"]] == [None, None]


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "both"])
def test_results_json_scores(outputs, iou_type):
    path = outputs / f"{iou_type}.json"
    export_results(str(outputs / "plus"), str(path), iou_type=iou_type)
    entries = json.loads(path.read_text())
    assert [e["score"] for e in entries] == pytest.approx([0.1, 0.8] if iou_type == "segm" else [0.9, 0.5])
    if iou_type == "both":
        assert [e["mask_score"] for e in entries] == pytest.approx([0.1, 0.8])
    else:
        assert all("mask_score" not in e for e in entries)


def test_dataset_json_carries_and_thresholds_mask_scores(outputs):
    path = outputs / "dataset.json"
    report = export_dataset(str(outputs / "plus"), str(path), settings=PrelabelSettings(score_threshold=0.3))
    annotations = json.loads(path.read_text())["annotations"]
    assert [a["score"] for a in annotations] == pytest.approx([0.8]) and report.dropped["below_score"] == 1


def test_prelabel_top_n_keeps_the_best_mask_scores():
    (row,) = _rows()
    kept = Prelabeler(PrelabelSettings(top_n=1)).select(row["instances"])
    assert [k["score"] for k in kept] == pytest.approx([0.8])  # the mask scored 0.8, its box 0.5


def test_overlays_draw_the_best_mask_score_on_top():
    image = np.zeros((10, 10, 3), np.uint8)
    low_box_high_mask = {**_instance([1.0, 1.0, 4.0, 4.0], _mask(1, 1), 0.5, 0.9), "category_id": 1}
    high_box_low_mask = {**_instance([1.0, 1.0, 4.0, 4.0], _mask(1, 1), 0.9, 0.2), "category_id": 2}
    first = draw_instances(image, [low_box_high_mask, high_box_low_mask], alpha=1.0)
    alone = draw_instances(image, [low_box_high_mask], alpha=1.0)
    np.testing.assert_array_equal(first[3, 3], alone[3, 3])  # the higher mask score is drawn last, on top
    assert draw_instances(image, [high_box_low_mask], score_threshold=0.3, alpha=1.0).max() == 0

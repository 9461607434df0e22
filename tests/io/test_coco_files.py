"""COCO results / dataset exports: pycocotools loads them and decodes every mask."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import numpy as np
import pytest

from tests.evaluation.conftest import SHARED_IMAGE_IDS, rows_of
from yolact_batch.cli.reports import add_command
from yolact_batch.core import rle
from yolact_batch.io.coco_files import export_dataset, export_results, mask_to_polygons
from yolact_batch.io.prelabel import PrelabelSettings
from yolact_batch.io.results_io import write_rows


@pytest.fixture(scope="module")
def job(reference_results, gt_dataset, tmp_path_factory):
    """(output folder, rows): yolact_base on the 4 shared images, an image with nothing found,
    and an error row."""
    ids = list(SHARED_IMAGE_IDS)
    empty = next(im["id"] for im in gt_dataset["images"] if im["id"] not in ids)
    rows = rows_of(reference_results("yolact_base"), gt_dataset, [*ids, empty])
    rows.append({**rows[-1], "image_uri": "s3://bucket/val2017/broken.jpg", "image_id": None, "status": "error",
                 "error": "corrupt image data", "instances": [], "width": None, "height": None})  # fmt: skip
    out = tmp_path_factory.mktemp("job") / "out"
    write_rows(rows, str(out), rows_per_file=2, row_group_rows=1)
    return str(out), rows


def _coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _scored(rows, threshold):
    return [i for r in rows for i in r["instances"] if i["score"] > threshold]


def _instances(rows, threshold=0.0):
    """(row, instance) pairs a dataset export keeps: above the threshold, mask not empty."""
    return [(r, i) for r in rows if r["status"] == "ok" for i in r["instances"] if i["score"] > threshold and i["area"]]


def test_dataset_json_loads_and_decodes_every_mask(job, tmp_path):
    out, rows = job
    counts = export_dataset(out, str(tmp_path / "d.json"), settings=PrelabelSettings(score_threshold=0.3))
    kept = _instances(rows, 0.3)
    assert (counts.images, counts.exported, counts.error_rows, counts.dropped["below_area"]) == (5, len(kept), 1, 0)
    assert counts.dropped["below_score"] == sum(len(r["instances"]) for r in rows) - len(kept) > 0
    everything = export_dataset(out, str(tmp_path / "all.json"))
    assert everything.dropped["below_area"] == 17 and everything.exported == len(
        _instances(rows)
    )  # yolact_base has empty masks
    coco = _coco(tmp_path / "d.json")
    assert sorted(coco.getImgIds()) == sorted(r["image_id"] for r in rows if r["status"] == "ok")
    assert coco.imgs[SHARED_IMAGE_IDS[0]]["file_name"] == f"{SHARED_IMAGE_IDS[0]:012d}.jpg"
    assert {c["name"] for c in coco.dataset["categories"]} >= {i["category"] for _, i in kept}
    for ann, (row, inst) in zip(coco.dataset["annotations"], kept):
        assert ann["image_id"] == row["image_id"] and ann["score"] == inst["score"] > 0.3 and ann["iscrowd"] == 0
        assert np.array_equal(coco.annToMask(ann).astype(bool), rle.decode(inst["segmentation"]))
        assert ann["area"] == inst["area"]


def test_dataset_json_with_polygons(job, tmp_path):
    out, rows = job
    counts = export_dataset(out, str(tmp_path / "p.json"), polygons=True, image_root="s3://bucket")
    coco = _coco(tmp_path / "p.json")
    assert coco.imgs[SHARED_IMAGE_IDS[0]]["file_name"] == f"val2017/{SHARED_IMAGE_IDS[0]:012d}.jpg"
    assert counts.exported + counts.dropped["no_polygon"] == len(_instances(rows)) and counts.dropped["no_polygon"] <= 1
    ious = []
    originals = iter(i for _, i in _instances(rows) if mask_to_polygons(rle.decode(i["segmentation"])))
    for ann in coco.dataset["annotations"]:
        assert all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        mask = coco.annToMask(ann).astype(bool)
        original = rle.decode(next(originals)["segmentation"])
        assert ann["area"] == mask.sum()
        if original.sum() > 500:
            ious.append((mask & original).sum() / (mask | original).sum())
    assert len(ious) > 20 and np.median(ious) > 0.85 and min(ious) > 0.5


def test_polygons_of_simple_shapes():
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:9] = True  # a 4x6 rectangle
    mask[8, 0] = True  # a 1-pixel speck: no polygon
    assert mask_to_polygons(mask) == [[3.5, 2.5, 3.5, 5.5, 8.5, 5.5, 8.5, 2.5]]
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []


def test_dataset_numbers_images_without_ids(tmp_path, job):
    _, rows = job
    anonymous = [{**r, "image_id": None} for r in rows]
    write_rows(anonymous, str(tmp_path / "out"))
    export_dataset(str(tmp_path / "out"), str(tmp_path / "d.json"))
    coco = _coco(tmp_path / "d.json")
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5]
    per_image = [sum(i["area"] > 0 for i in r["instances"]) for r in rows if r["status"] == "ok"]
    assert [len(coco.getAnnIds(imgIds=[k + 1])) for k in range(5)] == per_image


def test_results_json_export(job, tmp_path, gt_file):
    out, rows = job
    n = export_results(out, str(tmp_path / "r.json"), iou_type="segm", score_threshold=0.5)
    results = json.loads((tmp_path / "r.json").read_text())
    assert n == len(results) == len(_scored(rows, 0.5))  # empty masks too: still detections
    assert all(r.keys() == {"image_id", "category_id", "score", "segmentation"} and r["score"] > 0.5 for r in results)
    # rows without image ids take them from the ground truth, by file name
    anonymous = [{**r, "image_id": None} for r in rows if r["status"] == "ok"]
    write_rows(anonymous, str(tmp_path / "anon"))
    with pytest.raises(ValueError, match="row has no image_id"):
        export_results(str(tmp_path / "anon"), str(tmp_path / "x.json"))
    export_results(str(tmp_path / "anon"), str(tmp_path / "g.json"), ground_truth=str(gt_file))
    export_results(out, str(tmp_path / "o.json"))
    assert (tmp_path / "g.json").read_text() == (tmp_path / "o.json").read_text()
    write_rows([*anonymous, {**anonymous[0], "image_uri": "elsewhere/cat.jpg"}], str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"rows for 1 images not in .*: elsewhere/cat.jpg"):
        export_results(str(tmp_path / "bad"), str(tmp_path / "b.json"), ground_truth=str(gt_file))
    assert not (tmp_path / "b.json").exists()


def test_export_coco_commands(job, tmp_path, capsys):
    out, rows = job
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["export-coco", "dataset", "-p", out, "-o", str(tmp_path / "d.json"), "--all-coco-categories", "--polygons"]
    )
    assert args.func(args) == 0
    assert len(_coco(tmp_path / "d.json").dataset["categories"]) == 80
    args = parser.parse_args(
        ["export-coco", "results", "-p", out, "-o", str(tmp_path / "r.json"), "--score-threshold", "0.9"]
    )
    assert args.func(args) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())) == len(_scored(rows, 0.9))
    assert "export-coco results" in capsys.readouterr().err

"""COCO evaluation: our summary equals pycocotools run directly; mapping, misses, errors; the report."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from tests.evaluation.conftest import (
    REFERENCE_MODELS,
    SHARED_IMAGE_IDS,
    gt_results,
    max_abs_diff,
    noisy_results,
    pycocotools_stats,
    rows_of,
)  # fmt: skip
from yolact_batch.cli.reports import add_command
from yolact_batch.evaluation import (
    STAT_NAMES,
    ImageMatcher,
    evaluate,
    evaluate_output,
)
from yolact_batch.io.coco_files import export_results
from yolact_batch.io.results_io import write_rows

TOL = 1e-9


def _json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_reference_dets_equal_pycocotools_and_survive_parquet_round_trip(
    model, reference_results, gt_dataset, gt_file, oracle_coco, tmp_path
):
    results = reference_results(model)
    ids = sorted({r["image_id"] for r in results})  # the images this model's file shares with the subset
    assert ids == (sorted(SHARED_IMAGE_IDS) if "resnet101" not in model else [329219, 404484])
    direct = evaluate(
        _json(tmp_path / "res.json", results), str(gt_file), str(tmp_path / "a"), image_ids=ids, plots=False
    )
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary == direct.summary
    # results JSON -> Parquet (several parts) -> evaluate the Parquet, and -> results JSON again
    write_rows(rows_of(results, gt_dataset, ids), str(tmp_path / "out"), rows_per_file=3, row_group_rows=1)
    via_parquet = evaluate(str(tmp_path / "out"), gt_dataset, str(tmp_path / "b"), image_ids=ids, plots=False)
    assert export_results(str(tmp_path / "out"), str(tmp_path / "back.json")) == len(results)
    via_json = evaluate(str(tmp_path / "back.json"), str(gt_file), str(tmp_path / "c"), image_ids=ids, plots=False)
    for iou_type in ("bbox", "segm"):
        stats = pycocotools_stats(oracle_coco, results, iou_type, ids)
        assert stats[0] > 0.1, stats  # real detections, not a degenerate case
        for report in (summary, via_parquet.summary, via_json.summary):
            assert max_abs_diff(report["metrics"][iou_type], stats) <= TOL


@pytest.mark.slow
def test_ground_truth_against_itself_gives_ap_one(gt_dataset, gt_file, tmp_path):
    results = gt_results(gt_dataset)
    report = evaluate(_json(tmp_path / "gt.json", results), str(gt_file), str(tmp_path / "r"), plots=False)
    for iou_type in ("bbox", "segm"):
        metrics = report.summary["metrics"][iou_type]
        assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0 and metrics["AP75"] == 1.0
    unannotated = {im["id"] for im in gt_dataset["images"]} - {a["image_id"] for a in gt_dataset["annotations"]}
    assert report.summary["counts"]["images_without_predictions"] == len(unannotated) == 2


@pytest.mark.slow
def test_whole_subset_parquet_end_to_end_with_misses_errors_and_pictures(gt_dataset, gt_file, oracle_coco, tmp_path):
    """Noisy predictions for every image but 5 (misses), one error row, rows spread over part
    files; image ids dropped from some rows so they map by file name."""
    results = noisy_results(gt_dataset)
    skipped = {im["id"] for im in gt_dataset["images"][:5]}
    kept = [r for r in results if r["image_id"] not in skipped]
    rows = rows_of(kept, gt_dataset, [im["id"] for im in gt_dataset["images"]][5:])
    rows[0] = {
        **rows[0],
        "status": "error",
        "error": "corrupt image data",
        "instances": [],
        "width": None,
        "height": None,
    }
    for row in rows[::3]:
        row["image_id"] = None
    write_rows(rows, str(tmp_path / "job"), rows_per_file=50, row_group_rows=16)
    report = evaluate_output(str(tmp_path / "job"), str(gt_file))
    report_dir = tmp_path / "job" / "report"
    failed = ImageMatcher(tuple(gt_dataset["images"])).match(None, rows[0]["image_uri"])
    expected = [r for r in kept if r["image_id"] != failed]  # the error row's image: ground truth all missed
    counts = report.summary["counts"]
    assert counts == {
        "ground_truth_images": 206, "evaluated_images": 206, "images_without_predictions": 5, "rows": 201,
        "error_rows": 1, "predictions": len(expected),
    }  # fmt: skip
    for iou_type in ("bbox", "segm"):
        stats = pycocotools_stats(oracle_coco, expected, iou_type)
        assert max_abs_diff(report.summary["metrics"][iou_type], stats) <= TOL
        assert 0.2 < stats[0] < 0.95
    names = {p.name for p in report_dir.iterdir()}
    assert names == {
        "summary.json", "per_class_ap.csv", "per_class_ap.md", "report.md", "coco_eval_bbox.txt", "coco_eval_segm.txt",
        "pr_curves_bbox.png", "pr_curves_segm.png", "per_class_ap_bbox.png", "per_class_ap_segm.png",
    }  # fmt: skip
    import cv2

    for png in report_dir.glob("*.png"):
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 400, png
        colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
        assert len(colours) > 50, f"{png.name} looks blank"
    md = (report_dir / "report.md").read_text()
    for name in names - {"report.md", "summary.json"}:
        assert f"({name})" in md, f"report.md does not link {name}"
    table = (report_dir / "per_class_ap.csv").read_text().splitlines()
    assert table[0].split(",")[:6] == ["category_id", "category", "gt_instances", "detections", "bbox_AP", "bbox_AP50"]
    assert len(table) == 1 + 80
    person = next(line for line in table if line.split(",")[1] == "person").split(",")
    assert int(person[2]) > 100 and 0 < float(person[4]) < 1


def test_per_class_ap_matches_pycocotools_precision(reference_results, gt_dataset):
    from yolact_batch.evaluation import evaluate_coco, ground_truth_coco

    gt = ground_truth_coco(json.loads(json.dumps(gt_dataset)))
    e = evaluate_coco(gt, reference_results("yolact_base"), "segm", image_ids=SHARED_IMAGE_IDS)
    ap = e.class_ap()
    assert np.nanmean(ap) == pytest.approx(e.stats["AP"], abs=1e-12)
    assert np.nanmean(e.class_ap(0.5)) == pytest.approx(e.stats["AP50"], abs=1e-12)
    with_gt = e.gt_instances > 0
    assert np.isfinite(ap[with_gt]).all() and np.isnan(ap[~with_gt]).all()
    assert e.detections.sum() == len(reference_results("yolact_base"))


# ---- small hand-made tables ----------------------------------------------------------------


def _tiny_gt() -> dict:
    """Two 10x10 images, one 4x4 square each (category 1), category 2 without ground truth."""

    def square(ann_id, image_id, x, y):
        return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [x, y, 4, 4], "area": 16, "iscrowd": 0,
                "segmentation": [[x, y, x + 4, y, x + 4, y + 4, x, y + 4]]}  # fmt: skip

    return {
        "images": [{"id": 7, "file_name": "a/seven.jpg", "width": 10, "height": 10},
                   {"id": 9, "file_name": "b/nine.jpg", "width": 10, "height": 10}],
        "annotations": [square(1, 7, 1, 1), square(2, 9, 5, 5)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}],
    }  # fmt: skip


def _tiny_rows(ids_and_uris, gt) -> list[dict]:
    """Rows whose instances are the ground-truth squares of the images they map to."""
    results = {r["image_id"]: r for r in gt_results(gt)}
    rows = []
    for image_id, uri, gt_id in ids_and_uris:
        row = rows_of([results[gt_id]], gt, [gt_id], uri_prefix="")[0]
        rows.append({**row, "image_id": image_id, "image_uri": uri})
    return rows


@pytest.mark.parametrize(
    "iou_type, expected",
    [
        ("bbox", {"AP": 0.0, "APs": 0.0, "APm": math.nan, "AR100": 0.0}),
        ("segm", {"AP": 0.0, "APl": math.nan, "ARs": 0.0}),
    ],
)
def test_no_predictions_give_zero_where_there_is_ground_truth_and_nan_elsewhere(iou_type, expected, tmp_path):
    write_rows([], str(tmp_path / "out"))
    report = evaluate(str(tmp_path / "out"), _tiny_gt(), str(tmp_path / "r"), iou_types=[iou_type], plots=False)
    got = report.metrics[iou_type]
    for name, value in expected.items():
        assert (math.isnan(got[name]) and math.isnan(value)) or got[name] == value, (name, got[name])
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())["metrics"][iou_type]
    assert saved["APm"] is None and saved["AP"] == 0.0 and list(saved) == list(STAT_NAMES)
    assert report.summary["counts"]["images_without_predictions"] == 2


def test_images_without_predictions_count_as_misses(tmp_path):
    gt = _tiny_gt()
    write_rows(_tiny_rows([(7, "x/seven.jpg", 7)], gt), str(tmp_path / "out"))
    report = evaluate(str(tmp_path / "out"), gt, str(tmp_path / "r"), plots=False)
    assert report.metrics["segm"]["AR100"] == pytest.approx(0.5)  # one of two squares found
    only_seven = evaluate(str(tmp_path / "out"), gt, str(tmp_path / "r2"), image_ids=[7], plots=False)
    assert only_seven.metrics["segm"]["AP"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "match, rows, expected_ap",
    [
        ("auto", [(None, "s3://bkt/a/seven.jpg", 7), (None, "/data/nine.jpg", 9)], 1.0),  # suffix, unique base name
        ("auto", [(9, "seven.jpg", 7), (9, "other.jpg", 9)], 1.0),  # file name wins over a wrong id, else the id
        ("id", [(7, "whatever.jpg", 7), (9, "nine.jpg", 9)], 1.0),
        ("file-name", [(123, "a/seven.jpg", 7), (None, "b/nine.jpg", 9)], 1.0),
    ],
)
def test_rows_map_to_ground_truth_by_id_or_file_name(match, rows, expected_ap, tmp_path):
    gt = _tiny_gt()
    write_rows(_tiny_rows(rows, gt), str(tmp_path / "out"))
    report = evaluate(str(tmp_path / "out"), gt, str(tmp_path / "r"), match=match, plots=False)
    assert report.metrics["bbox"]["AP"] == pytest.approx(expected_ap, abs=1e-12)
    assert report.summary["counts"]["images_without_predictions"] == 0


def test_predictions_for_unknown_images_are_an_error_naming_them(tmp_path):
    gt = _tiny_gt()
    write_rows(
        _tiny_rows([(7, "seven.jpg", 7), (None, "s3://b/cat.jpg", 9), (4242, "dog.jpg", 9)], gt), str(tmp_path / "out")
    )
    with pytest.raises(ValueError, match=r"not in the ground truth \(2\): s3://b/cat.jpg, dog.jpg \(id 4242\)"):
        evaluate(str(tmp_path / "out"), gt, str(tmp_path / "r"), plots=False)
    results = [{"image_id": 7, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9},
               {"image_id": 31337, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}]  # fmt: skip
    with pytest.raises(ValueError, match=r"results for images not in the ground truth \(1\): 31337"):
        evaluate(_json(tmp_path / "r.json", results), gt, str(tmp_path / "r"), iou_types=["bbox"], plots=False)


def test_an_image_in_two_rows_is_an_error(tmp_path):
    gt = _tiny_gt()
    write_rows(_tiny_rows([(7, "seven.jpg", 7), (None, "a/seven.jpg", 7)], gt), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"more than one row \(1\): a/seven.jpg \(ground-truth id 7\)"):
        evaluate(str(tmp_path / "out"), gt, str(tmp_path / "r"), plots=False)


def test_results_json_may_name_images_by_file_name_and_bbox_comes_from_masks(tmp_path):
    gt = _tiny_gt()
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in gt_results(gt)]
    results[1]["image_id"] = "nine.jpg"
    report = evaluate(_json(tmp_path / "r.json", results), gt, str(tmp_path / "r"), plots=False)
    assert report.metrics["bbox"]["AP"] == pytest.approx(1.0, abs=1e-12) == report.metrics["segm"]["AP"]


def test_bad_arguments_fail_before_reading(tmp_path):
    with pytest.raises(ValueError, match="iou_types"):
        evaluate(str(tmp_path / "nothing"), _tiny_gt(), str(tmp_path / "r"), iou_types=["keypoints"])
    with pytest.raises(ValueError, match="match mode"):
        evaluate(str(tmp_path / "nothing"), _tiny_gt(), str(tmp_path / "r"), match="fuzzy")
    with pytest.raises(ValueError, match=r"image_ids not in the ground truth \(1\): 5"):
        evaluate(str(tmp_path / "nothing"), _tiny_gt(), str(tmp_path / "r"), image_ids=[7, 5])


def test_evaluate_command(tmp_path, capsys):
    gt = _tiny_gt()
    write_rows(_tiny_rows([(7, "seven.jpg", 7)], gt), str(tmp_path / "out"))
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([
        "evaluate", "--predictions", str(tmp_path / "out"), "--ground-truth", _json(tmp_path / "gt.json", gt),
        "--output", str(tmp_path / "report"), "--iou-types", "segm", "--image-ids", "7,9", "--no-plots",
    ])  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert (
        "| AP | 0.505 |" in out.out and "| APm | - |" in out.out and "report.md" in out.err
    )  # 51 of 101 recall points
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert list(summary["metrics"]) == ["segm"] and summary["counts"]["images_without_predictions"] == 1
    assert not list((tmp_path / "report").glob("*.png"))


# ---- faster-coco-eval: offered only because these numbers equal pycocotools' ------------------


@pytest.fixture(scope="module")
def faster():
    return pytest.importorskip(
        "faster_coco_eval", reason="faster-coco-eval not installed (pip install faster-coco-eval)"
    )


@pytest.mark.slow
def test_faster_coco_eval_equals_pycocotools_on_our_data(faster, reference_results, gt_dataset):
    from yolact_batch.evaluation import evaluate_coco, ground_truth_coco

    gt = ground_truth_coco(json.loads(json.dumps(gt_dataset)))
    for results in [*(reference_results(m) for m in REFERENCE_MODELS), noisy_results(gt_dataset, seed=3)]:
        ids = sorted({r["image_id"] for r in results}) if len(results) < 200 else None  # the whole subset for noisy
        for iou_type in ("bbox", "segm"):
            a = evaluate_coco(gt, results, iou_type, image_ids=ids)
            b = evaluate_coco(gt, results, iou_type, image_ids=ids, evaluator="faster-coco-eval")
            np.testing.assert_allclose(
                [b.stats[n] for n in STAT_NAMES], [a.stats[n] for n in STAT_NAMES], rtol=0, atol=1e-12
            )
            np.testing.assert_allclose(b.precision, a.precision, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(b.recall, a.recall)
            assert b.log and "Average Precision" in b.log


def test_evaluate_with_faster_coco_eval(faster, tmp_path):
    gt = _tiny_gt()
    write_rows(_tiny_rows([(7, "seven.jpg", 7)], gt), str(tmp_path / "out"))
    report = evaluate(str(tmp_path / "out"), gt, str(tmp_path / "r"), plots=False, evaluator="faster-coco-eval")
    assert report.summary["evaluator"].startswith("faster-coco-eval ") and report.metrics["segm"]["AR100"] == 0.5
    write_rows([], str(tmp_path / "empty"))
    empty = evaluate(str(tmp_path / "empty"), gt, str(tmp_path / "r"), plots=False, evaluator="faster-coco-eval")
    assert empty.metrics["segm"]["AP"] == 0.0 and math.isnan(empty.metrics["segm"]["APl"])

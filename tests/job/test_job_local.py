"""`yolact-batch segment` on the embedded local Ray: COCO input in, Parquet out, same rows as the API."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_utils

from tests.conftest import COCO_SUBSET, GOLDEN_IDS, require
from tests.job.conftest import jpeg_images, read_rows, run_segment, success
from yolact_batch.io.schema import ok_row
from yolact_batch.model import YolactModel

SETTINGS = ["--score-threshold", "0.1", "--max-detections", "60"]


@pytest.fixture(scope="module")
def coco_job(tmp_path_factory, model_path):
    """One embedded-Ray run over a COCO annotation file (golden images + 4 more), then a rerun."""
    annotations = require(COCO_SUBSET / "annotations" / "instances_val2017_subset.json")
    images = json.loads(annotations.read_text())["images"]
    golden = set(GOLDEN_IDS["yolact_resnet50"])
    chosen = [i for i in images if i["id"] in golden] + [i for i in images if i["id"] not in golden][:4]
    root = tmp_path_factory.mktemp("coco")
    (root / "ann.json").write_text(json.dumps({"images": chosen, "annotations": [], "categories": []}))
    out = root / "out"
    args = [
        "--input",
        root / "ann.json",
        "--image-root",
        COCO_SUBSET / "val2017",
        "--model",
        model_path,
        "--output",
        out,
        "--batch-size",
        "2",
        "--commit-size",
        "3",
        *SETTINGS,
    ]
    first = run_segment(*args)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()}
    # The rerun also evaluates against the ground truth of the chosen images (--ground-truth).
    full = json.loads(annotations.read_text())
    ids = {i["id"] for i in chosen}
    truth = root / "truth.json"
    truth.write_text(
        json.dumps({**full, "images": chosen, "annotations": [a for a in full["annotations"] if a["image_id"] in ids]})
    )
    second = run_segment(*args, "--ground-truth", truth)
    return {"chosen": chosen, "out": out, "first": first, "second": second, "mtimes": mtimes, "args": args}


def test_ground_truth_option_writes_the_report(coco_job):
    report = coco_job["out"] / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["metrics"]) == {"bbox", "segm"} and summary["counts"]["evaluated_images"] == 8
    assert (report / "report.md").is_file()
    assert "evaluate: bbox AP" in coco_job["second"].stderr


def test_one_row_per_image_with_coco_ids_and_success_counts(coco_job):
    rows = read_rows(coco_job["out"])
    assert sorted(r["image_id"] for r in rows) == sorted(i["id"] for i in coco_job["chosen"])
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)
    by_id = {r["image_id"]: r for r in rows}
    for image in coco_job["chosen"]:
        row = by_id[image["id"]]
        assert (row["width"], row["height"]) == (image["width"], image["height"])
        assert row["image_uri"].endswith(image["file_name"]) and row["model"]["name"] == "yolact_resnet50"
    counts = success(coco_job["out"])
    assert counts["images"] == counts["images_ok"] == len(rows) == 8 and counts["images_error"] == 0
    assert counts["instances"] == sum(len(r["instances"]) for r in rows) > 0
    files = list((coco_job["out"] / "predictions").iterdir())
    assert counts["files"] == len(files) >= 3  # commit files hold at most --commit-size rows
    assert all(f.name.startswith("part-") and f.suffix == ".parquet" for f in files)
    assert counts["wall_s"] > 0 and counts["processed"] + counts["skipped"] == 8


def test_golden_rows_equal_the_python_api(coco_job, model_path):
    model = YolactModel(str(model_path), score_threshold=0.1, max_detections=60)
    rows = {r["image_id"]: r for r in read_rows(coco_job["out"])}
    for image_id in GOLDEN_IDS["yolact_resnet50"]:
        path = COCO_SUBSET / "val2017" / f"{image_id:012d}.jpg"
        expected = ok_row(model([path.read_bytes()])[0], image_uri=str(path), image_id=image_id, model=model.ref)
        got = rows[image_id]
        assert got["instances"] == expected["instances"] and len(got["instances"]) > 10
        assert got["model"] == expected["model"] and (got["width"], got["height"]) == (
            expected["width"],
            expected["height"],
        )


def test_pandas_duckdb_and_pycocotools_read_the_output(coco_job):
    out = coco_job["out"]
    frame = pd.read_parquet(out / "predictions")
    assert len(frame) == 8 and set(frame["status"]) == {"ok"}
    duckdb = pytest.importorskip("duckdb")
    total, instances = duckdb.sql(
        f"SELECT count(*), sum(len(instances)) FROM read_parquet('{out}/predictions/*.parquet')"
    ).fetchall()[0]
    assert (total, instances) == (8, success(out)["instances"])
    for row in read_rows(out):
        for instance in row["instances"]:
            rle = {"size": instance["segmentation"]["size"], "counts": instance["segmentation"]["counts"].encode()}
            mask = mask_utils.decode(rle)
            assert mask.shape == (row["height"], row["width"]) and int(mask.sum()) == instance["area"]
            x, y, w, h = instance["bbox"]
            assert 0 <= x <= row["width"] and 0 <= y <= row["height"] and w >= 0 and h >= 0


def test_progress_and_a_one_line_summary(coco_job):
    err = coco_job["first"].stderr
    assert "Started a local Ray instance" in err  # no address: the embedded default
    assert "MapBatches(ModelActor)" in err and "MapBatches(decode_stage)" in err  # Ray Data's progress
    summary = [line for line in err.splitlines() if line.startswith("segment: 8 images (")]
    assert len(summary) == 1 and "8 ok, 0 errors" in summary[0] and "this run processed 8" in summary[0]
    # The model actors' busy time (Ray Data's stats) is reported, and is part of the run's wall time.
    wall, busy = re.search(r"in ([\d.]+)s \([\d.]+ img/s, model busy ([\d.]+)s\)", summary[0]).groups()
    assert 0 < float(busy) <= float(wall)
    assert success(coco_job["out"])["model_busy_s"] is None  # the rerun's _SUCCESS: nothing ran


def test_rerunning_a_finished_job_skips_everything_without_starting_ray(coco_job):
    err = coco_job["second"].stderr
    assert "all 8 images already committed; nothing to run" in err and "Started a local Ray" not in err
    out = coco_job["out"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()} == coco_job["mtimes"]
    counts = success(out)
    assert counts["skipped"] == 8 and counts["processed"] == 0 and counts["images"] == 8


def test_other_settings_into_the_same_output_are_refused(coco_job):
    args = [a for a in coco_job["args"] if a not in SETTINGS] + ["--score-threshold", "0.5"]
    result = run_segment(*args, check=False, timeout=60)
    assert result.returncode == 2
    assert "settings.output.score_threshold 0.1 -> 0.5" in result.stderr and "--overwrite" in result.stderr
    assert np.all([r["status"] == "ok" for r in read_rows(coco_job["out"])])


def test_graph_contract_rows_cross_ray_packed_and_equal_the_python_api(tmp_path, graph_model_path):
    # The model stage hands packed detections (ragged columns) to the post-processing tasks.
    folder = tmp_path / "in"
    folder.mkdir()
    images = jpeg_images(4)
    for name, blob in images.items():
        (folder / name).write_bytes(blob)
    out = tmp_path / "out"
    # (--actor-memory: the actor's memory reservation reaches Ray and is honoured.)
    run_segment(
        "--input",
        folder,
        "--model",
        graph_model_path,
        "--output",
        out,
        "--batch-size",
        "3",
        "--actor-memory",
        "0.5",
        *SETTINGS,
    )
    rows = {r["image_uri"].rsplit("/", 1)[1]: r for r in read_rows(out)}
    model = YolactModel(str(graph_model_path), score_threshold=0.1, max_detections=60)
    assert sorted(rows) == sorted(images)
    for name, blob in images.items():
        expected = ok_row(model([blob])[0], image_uri="", image_id=None, model=model.ref)
        assert rows[name]["status"] == "ok" and rows[name]["instances"] == expected["instances"]
        assert len(expected["instances"]) > 10

"""The pre-labeling commands: one call each, options parsed into the exports' settings."""

from __future__ import annotations

import json
import os

import pytest

from tests.io.prelabel_data import shape_rows
from yolact_batch.cli.main import main
from yolact_batch.io.results_io import write_rows

PRELABEL = ["--score-threshold", "0.5", "--class-threshold", "square=0.1", "--min-area", "2", "--top-n", "3",
            "--rename", "disc=circle", "--classes", "ring,disc,square,zebra"]  # fmt: skip


@pytest.fixture
def output(tmp_path):
    write_rows(shape_rows(tmp_path / "img"), str(tmp_path / "out"))
    return str(tmp_path / "out")


def test_export_labelstudio_command(output, tmp_path, capsys):
    folder = tmp_path / "ls"
    assert main(["export-labelstudio", "-p", output, "-o", str(folder), *PRELABEL, "--extra-labels", "tree",
                 "--image-prefix", f"{tmp_path}/img/=/data/local-files/?d=img/", "--tasks-per-file", "1"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "export-labelstudio: 2 images, 3 of 5 instances (dropped: 1 other class, 1 below area)" in err
    assert "no instance of zebra" in err
    tasks = [json.load(open(folder / f"tasks-{k:05d}.json")) for k in range(2)]
    (shapes,), (nothing,) = tasks
    assert shapes["data"]["image"] == "/data/local-files/?d=img/shapes.png"
    assert [r["value"]["brushlabels"] for r in shapes["predictions"][0]["result"]] == [["ring"], ["circle"], ["square"]]
    config = (folder / "labeling_config.xml").read_text()
    assert "<BrushLabels" in config and 'value="circle"' in config and 'value="tree"' in config and "line" not in config


def test_export_yolo_command(output, tmp_path, capsys):
    assert main(["export-yolo", "-p", output, "-o", str(tmp_path / "y"), "--tolerance", "0", *PRELABEL]) == 0
    assert "export-yolo: 2 images, 3 of 5 instances" in capsys.readouterr().err
    assert open(tmp_path / "y" / "data.yaml").read().count('"') == 6  # ring, circle, square
    assert sorted(os.listdir(tmp_path / "y" / "images" / "train")) == ["nothing.png", "shapes.png"]


def test_export_coco_cvat_and_dataset_commands(output, tmp_path, capsys):
    assert main(["export-coco", "cvat", "-p", output, "-o", str(tmp_path / "c"), "--polygons", *PRELABEL]) == 0
    dataset = json.load(open(tmp_path / "c" / "annotations" / "instances_default.json"))
    assert [c["name"] for c in dataset["categories"]] == ["ring", "circle", "square"]
    assert main(["export-coco", "dataset", "-p", output, "-o", str(tmp_path / "d.json"), "--all-coco-categories"]) == 0
    assert len(json.load(open(tmp_path / "d.json"))["categories"]) == 80 + 4
    assert "export-coco dataset: 2 images, 5 of 5 instances (dropped: none), 1 error rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad, message",
    [(["--class-threshold", "square"], "expected NAME=VALUE, got 'square'"),
     (["--class-threshold", "square=high"], "'high' in 'square=high' is not a float"),
     (["--rename", "=x"], "expected NAME=VALUE, got '=x'")],
)  # fmt: skip
def test_bad_pairs_are_usage_errors(output, tmp_path, bad, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export-yolo", "-p", output, "-o", str(tmp_path / "y"), *bad])
    assert exit_.value.code == 2 and message in capsys.readouterr().err

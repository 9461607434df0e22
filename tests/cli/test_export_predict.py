"""Acceptance: `yolact-batch export` of the golden checkpoint, then `yolact-batch predict` on
the golden JPEGs, reproduces the reference's JSON detections (console scripts, as a user runs them)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GOLDEN_IDS, golden_case, golden_image_bytes
from tests.matching import assert_same_detections

pytest.importorskip("torch")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", params=["--config", "no-config"])
def exported_by_cli(request, golden_checkpoint, tmp_path_factory):
    """The golden checkpoint exported with --config yolact_resnet50, and with the config read from the weights."""
    out = tmp_path_factory.mktemp("cli") / "yolact_resnet50.onnx"
    config = ["--config", "yolact_resnet50"] if request.param == "--config" else []
    checkpoint = str(golden_checkpoint("yolact_resnet50"))
    cmd = [str(BIN / "yolact-batch"), "export", "--checkpoint", checkpoint, *config, "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "name           yolact_resnet50\n" in result.stderr  # the official config, not a custom one
    return out


def test_export_then_predict_reproduces_golden_json(exported_by_cli, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for image_id in GOLDEN_IDS["yolact_resnet50"]:
        (images / f"{image_id:012d}.jpg").write_bytes(golden_image_bytes(image_id))
    out = tmp_path / "preds.jsonl"
    cmd = [str(BIN / "yolact-batch"), "predict", "--model", str(exported_by_cli), str(images), "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for row in rows:
        _, reference = golden_case("yolact_resnet50", row["image_id"])
        assert (row["width"], row["height"]) == (reference["width"], reference["height"])
        assert_same_detections(row["instances"], reference)


def test_export_errors_name_the_file_and_fix(tmp_path):
    bogus = tmp_path / "not_a_checkpoint.pth"
    bogus.write_bytes(b"garbage")
    result = subprocess.run(
        [
            str(BIN / "yolact-batch"),
            "export",
            "--checkpoint",
            str(bogus),
            "--config",
            "yolact_resnet50",
            "--output",
            str(tmp_path / "m.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "not_a_checkpoint.pth" in result.stderr
    assert "Traceback" not in result.stderr

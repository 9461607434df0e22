"""Acceptance of ``--backend torch`` on the CPU, as a user runs it: ``predict`` straight from the
golden ``.pth`` reproduces the reference's JSON detections, and ``segment`` writes the same rows
as the ONNX Runtime backend on the same images."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GOLDEN_IDS, golden_case, golden_image_bytes
from tests.job.conftest import read_rows, run_segment
from tests.matching import assert_same_detections

pytest.importorskip("torch")
BIN = Path(sys.executable).parent
SEGMENT_IDS = GOLDEN_IDS["yolact_resnet50"][:2]  # two images keep the two Ray runs short


def golden_folder(root: Path, ids) -> Path:
    root.mkdir()
    for image_id in ids:
        (root / f"{image_id:012d}.jpg").write_bytes(golden_image_bytes(image_id))
    return root


@pytest.mark.parametrize("config", [["--config", "yolact_resnet50"], []], ids=["config", "from-weights"])
def test_predict_from_pth_reproduces_golden_json(golden_checkpoint, tmp_path, config):
    images = golden_folder(tmp_path / "images", GOLDEN_IDS["yolact_resnet50"])
    out = tmp_path / "preds.jsonl"
    cmd = [str(BIN / "yolact-batch"), "predict", "--backend", "torch", "--model", str(golden_checkpoint("yolact_resnet50")),
           *config, *sorted(map(str, images.iterdir())), "--output", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for row in rows:
        _, reference = golden_case("yolact_resnet50", row["image_id"])
        assert (row["width"], row["height"]) == (reference["width"], reference["height"])
        assert row["model"]["name"] == "yolact_resnet50"
        assert_same_detections(row["instances"], reference)


def test_predict_from_custom_pth_without_config_says_to_name_the_classes(golden_checkpoint, tmp_path):
    import torch

    from tests.custom_checkpoint import KEPT, keep_classes
    from yolact_batch.core.coco import COCO_CATEGORY_IDS

    state = torch.load(golden_checkpoint("yolact_resnet50"), map_location="cpu", weights_only=True)
    path = tmp_path / "custom_3.pth"
    torch.save(keep_classes(state, [c for c, _, _ in KEPT], COCO_CATEGORY_IDS), path)
    images = golden_folder(tmp_path / "images", GOLDEN_IDS["yolact_resnet50"][:1])
    cmd = [str(BIN / "yolact-batch"), "predict", "--backend", "torch", "--model", str(path), str(images)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert str(path) in result.stderr and "checkpoint predicts 3 classes (+ background)" in result.stderr
    assert "yolact-batch export --checkpoint ... --class-names" in result.stderr


def as_reference(row: dict) -> dict:
    """A segment row in the golden JSON's shape, for ``assert_same_detections``."""
    items = row["instances"]
    return {
        "bbox_detections": [{"category_id": i["category_id"], "bbox": i["bbox"], "score": i["score"]} for i in items],
        "mask_detections": [{"segmentation": i["segmentation"]} for i in items],
    }


@pytest.mark.slow
def test_segment_torch_rows_equal_onnx_rows(golden_checkpoint, exported, tmp_path):
    images = golden_folder(tmp_path / "images", SEGMENT_IDS)
    common = ["--input", images, "--batch-size", "2", "--commit-size", "2"]
    run_segment(*common, "--model", exported("yolact_resnet50", "graph"), "--output", tmp_path / "onnx")
    run_segment(*common, "--backend", "torch", "--model", golden_checkpoint("yolact_resnet50"),
                "--config", "yolact_resnet50", "--output", tmp_path / "torch")  # fmt: skip
    onnx = {r["image_uri"]: r for r in read_rows(tmp_path / "onnx")}
    torch_rows = {r["image_uri"]: r for r in read_rows(tmp_path / "torch")}
    assert sorted(onnx) == sorted(torch_rows) and len(onnx) == len(SEGMENT_IDS)
    for uri, row in torch_rows.items():
        want = onnx[uri]
        assert row["status"] == want["status"] == "ok"
        assert (row["image_id"], row["width"], row["height"]) == (want["image_id"], want["width"], want["height"])
        assert row["model"]["name"] == want["model"]["name"] == "yolact_resnet50"
        assert len(row["instances"]) == len(want["instances"]) == 100
        assert_same_detections(row["instances"], as_reference(want))

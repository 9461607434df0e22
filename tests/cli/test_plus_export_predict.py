"""Acceptance, YOLACT++: `yolact-batch export` of the golden yolact_plus_resnet50 checkpoint, then
`yolact-batch predict` on the 4 golden JPEGs, reproduces the reference's bbox and segm JSON: box
scores and re-scored mask scores within 1e-5, masks IoU >= 0.99, segm entries in box-score order."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PLUS, PLUS_IDS, golden_image_bytes, golden_json
from tests.matching import assert_same_detections, assert_same_mask_results

pytest.importorskip("torch")
BIN = Path(sys.executable).parent


def test_export_then_predict_reproduces_golden_bbox_and_segm_json(exported, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for image_id in PLUS_IDS:
        (images / f"{image_id:012d}.jpg").write_bytes(golden_image_bytes(image_id))
    out = tmp_path / "preds.jsonl"
    cmd = [str(BIN / "yolact-batch"), "predict", "--model", str(exported(PLUS, "graph")), str(images), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["image_id"] for r in rows) == sorted(PLUS_IDS) and all(r["status"] == "ok" for r in rows)
    for row in rows:
        reference = golden_json(PLUS, row["image_id"])
        assert_same_detections(row["instances"], reference)
        assert_same_mask_results(row["instances"], reference)
        assert all(i["mask_score"] < i["score"] for i in row["instances"])  # maskiou_p < 1 on the goldens


def test_cli_export_of_plus_writes_deform_conv_and_mask_scores(exported):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(exported(PLUS, "graph")), load_external_data=False)
    assert any(node.op_type == "DeformConv" for node in model.graph.node)
    assert [o.name for o in model.graph.output][-1] == "mask_scores"
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 19


def test_raw_contract_of_plus_is_refused_with_the_fix(golden_checkpoint, tmp_path):
    cmd = [str(BIN / "yolact-batch"), "export", "--checkpoint", str(golden_checkpoint(PLUS)), "--config", PLUS,
           "--contract", "raw", "-o", str(tmp_path / "m.onnx")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "raw contract" in result.stderr and "--contract graph" in result.stderr
    assert not (tmp_path / "m.onnx").exists()

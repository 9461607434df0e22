"""`yolact-batch predict` end to end: files in, one JSON line per image in the row format."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import golden_case, golden_image_bytes
from tests.onnx_models import constant_heads_model
from yolact_batch.cli.main import main
from yolact_batch.core.configs import get_config
from yolact_batch.core.metadata import ModelMetadata


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    arrays, _ = golden_case("yolact_resnet50", 184324)
    return constant_heads_model(
        tmp_path_factory.mktemp("m") / "raw.onnx", arrays, ModelMetadata(get_config("yolact_resnet50"), "raw")
    )


def test_predict_writes_rows_and_error_rows(tmp_path, model_path):
    images = tmp_path / "images" / "nested"
    images.mkdir(parents=True)
    (images / "000000184324.jpg").write_bytes(golden_image_bytes(184324))
    (images / "broken.jpg").write_bytes(golden_image_bytes(184324)[:1000])
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--model", str(model_path), str(tmp_path / "images"), "--output", str(out)]) == 0
    rows = {json.loads(line)["image_uri"].split("/")[-1]: json.loads(line) for line in out.read_text().splitlines()}
    assert set(rows) == {"000000184324.jpg", "broken.jpg"}
    good, bad = rows["000000184324.jpg"], rows["broken.jpg"]
    assert good["status"] == "ok" and good["image_id"] == 184324 and (good["width"], good["height"]) == (640, 425)
    _, ref = golden_case("yolact_resnet50", 184324)
    assert [(i["category_id"], i["bbox"]) for i in good["instances"]] == [
        (d["category_id"], d["bbox"]) for d in ref["bbox_detections"]
    ]
    assert bad["status"] == "error" and "truncated JPEG" in bad["error"] and bad["instances"] == []
    assert good["model"]["digest"].startswith("sha256:")


def test_predict_fails_fast_with_one_message(tmp_path, model_path, capsys):
    with pytest.raises(SystemExit, match="no such file"):
        main(["predict", "--model", str(model_path), str(tmp_path / "missing")])
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert main(["predict", "--model", str(tmp_path / "nope.onnx"), str(tmp_path / "a.jpg")]) == 2
    assert "nope.onnx: no such file" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("yolact-batch") or str((__import__("pathlib").Path(sys.executable).parent / "yolact-batch"))
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "predict" in result.stdout and "export" in result.stdout

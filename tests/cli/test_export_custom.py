"""Acceptance: a custom-trained checkpoint (its own classes, category ids not 1..N) from the command
line: `export` with no --config and --class-names instances.json, then `segment` (real local Ray),
`evaluate` against that JSON, `export-coco` and `overlays`; the JSON's ids and names are used all the way."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import GOLDEN_IDS, golden_image_bytes
from tests.custom_checkpoint import KEPT, keep_classes

torch = pytest.importorskip("torch")
pytest.importorskip("ray")
BIN = Path(sys.executable).parent


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "yolact-batch"), *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def custom_data(golden_checkpoint, coco_subset, tmp_path_factory):
    """(folder, checkpoint, instances.json): a 3-class checkpoint and its COCO dataset, ids 5, 17, 99."""
    from yolact_batch.core.coco import COCO_CATEGORY_IDS

    folder = tmp_path_factory.mktemp("custom")
    state = torch.load(golden_checkpoint("yolact_resnet50"), map_location="cpu", weights_only=True)
    checkpoint = folder / "yolact_resnet50_mydata_12_3000.pth"
    torch.save(keep_classes(state, [c for c, _, _ in KEPT], COCO_CATEGORY_IDS), checkpoint)

    coco = json.loads((coco_subset / "annotations" / "instances_val2017_subset.json").read_text())
    ids = set(GOLDEN_IDS["yolact_resnet50"])
    renumber = {coco_id: ours for coco_id, ours, _ in KEPT}
    images_dir = folder / "images"
    images_dir.mkdir()
    images = [im for im in coco["images"] if im["id"] in ids]
    for im in images:
        (images_dir / im["file_name"]).write_bytes(golden_image_bytes(im["id"]))
    annotations = [
        {**a, "category_id": renumber[a["category_id"]]}
        for a in coco["annotations"]
        if a["image_id"] in ids and a["category_id"] in renumber
    ]
    categories = [{"id": ours, "name": name, "supercategory": "thing"} for _, ours, name in reversed(KEPT)]
    instances = folder / "instances.json"
    instances.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return folder, checkpoint, instances


@pytest.fixture(scope="module")
def custom(custom_data):
    """(folder, instances.json, exported model, export stderr): exported once, no --config."""
    folder, checkpoint, instances = custom_data
    model = folder / "custom.onnx"
    result = _run("export", "--checkpoint", str(checkpoint), "-o", str(model), "--class-names", str(instances))
    return folder, instances, model, result.stderr


def test_export_prints_the_config_it_used(custom):
    _, instances, _, stderr = custom
    assert "backbone       ResNet-50 (6-block layer3)   [weights]" in stderr
    assert f"3 + background: walker, vehicle, mug (ids [5, 17, 99])   [{instances}]" in stderr
    assert "name           yolact_resnet50_mydata_12_3000" in stderr


def test_segment_evaluate_export_coco_use_the_json_ids(custom):
    folder, instances, model, _ = custom
    out = folder / "out"
    _run("segment", "--input", str(folder / "images"), "--model", str(model), "--output", str(out),
         "--batch-size", "2", "--commit-size", "2")  # fmt: skip
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "predictions").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    found = Counter((i["category_id"], i["category"]) for r in rows for i in r["instances"])
    assert set(found) == {(ours, name) for _, ours, name in KEPT}, found

    report = folder / "report"
    _run("evaluate", "--predictions", str(out), "--ground-truth", str(instances), "-o", str(report), "--no-plots")
    with open(report / "per_class_ap.csv") as f:
        per_class = {int(c["category_id"]): c for c in csv.DictReader(f)}
    assert set(per_class) == {5, 17, 99}
    for (category, name), count in found.items():  # a wrong id would count 0 detections here
        assert per_class[category]["category"] == name and int(per_class[category]["detections"]) == count

    results = folder / "results.json"
    _run("export-coco", "results", "--predictions", str(out), "-o", str(results))
    entries = json.loads(results.read_text())
    assert {e["category_id"] for e in entries} == {5, 17, 99}
    dataset = folder / "dataset.json"
    _run("export-coco", "dataset", "--predictions", str(out), "-o", str(dataset))
    cats = json.loads(dataset.read_text())["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(ours, name) for _, ours, name in KEPT]

    overlays = folder / "overlays"
    _run("overlays", "--predictions", str(out), "-o", str(overlays), "--count", "2", "--score-threshold", "0")
    assert len(list(overlays.glob("*.png"))) >= 2


def _maskrcnn_state() -> dict:
    """A few keys of each part of torchvision's maskrcnn_resnet50_fpn, written by hand (small shapes)."""
    keys = (
        "backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
        "rpn.head.conv.0.0.weight", "rpn.head.cls_logits.weight", "roi_heads.box_head.fc6.weight",
        "roi_heads.box_predictor.cls_score.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight",
    )  # fmt: skip
    return {k: torch.zeros(2, 2) for k in keys}


@pytest.mark.parametrize(
    ("options", "files", "message"),
    [
        ([], {}, "checkpoint predicts 3 classes (+ background) but default (yolact_resnet50) has 80: name the 3"),
        (["--class-names", "a,b"], {}, "--class-names names 2 classes but the checkpoint predicts 3 (+ background)"),
        (["--class-names", "a,b,c", "--config", "yolact_base"], {},
         "checkpoint has ResNet-50 (6-block layer3) but --config yolact_base is ResNet-101 (23-block layer3)"),
        (["--class-names", "missing.txt"], {}, "cannot read class names file missing.txt: no such file"),
        (["--class-names", "a,b,c", "--overrides", "o.json"], {"o.json": '{"max_size": "big"}'},
         "o.json: max_size must be an integer >= 32, got 'big'; e.g. max_size = 550"),
        (["--class-names", "a,b,c", "--overrides", "o.json"], {"o.json": '{"backbone": {"pred_scales": [[24, 30]]}}'},
         "has 1 levels but the network predicts on 5"),
        (["--class-names", "a,b,c", "--overrides", "o.toml"], {"o.toml": "[backbone]\npred_scale = [[24]]\n"},
         "o.toml: unknown config key(s) ['backbone.pred_scale']"),
        (["--class-names", "a,b,c", "--overrides", "o.json", "--input-size", "640"], {"o.json": '{"max_size": 512}'},
         "o.json sets input_size = 512 but --input-size sets 640: keep one"),
    ],
)  # fmt: skip
def test_export_errors_name_both_sides(custom_data, tmp_path, monkeypatch, capsys, options, files, message):
    from yolact_batch.cli.main import main

    checkpoint = custom_data[1]
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code = main(["export", "--checkpoint", str(checkpoint), "-o", "m.onnx", *options])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "m.onnx").exists()


def test_non_yolact_checkpoint_is_refused(tmp_path, capsys):
    from yolact_batch.cli.main import main

    path = tmp_path / "maskrcnn_resnet50_fpn.pth"
    torch.save(_maskrcnn_state(), path)
    assert main(["export", "--checkpoint", str(path), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: not a YOLACT checkpoint" in err and "Mask R-CNN" in err

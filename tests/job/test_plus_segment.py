"""Acceptance, YOLACT++ through the job: `yolact-batch segment` (real local Ray) on the 4 golden
images with the golden yolact_plus_resnet50 export reproduces the reference's bbox and segm JSON."""

from __future__ import annotations

import pytest

from tests.conftest import COCO_SUBSET, PLUS, PLUS_IDS, golden_json, require
from tests.job.conftest import read_rows, run_segment
from tests.matching import assert_same_detections, assert_same_mask_results

pytest.importorskip("torch")


def test_segment_reproduces_golden_bbox_and_segm_json(exported, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for image_id in PLUS_IDS:
        name = f"{image_id:012d}.jpg"
        (images / name).symlink_to(require(COCO_SUBSET / "val2017" / name))
    out = tmp_path / "out"
    # A 300 s timeout: a YOLACT++ forward takes ~1.5 s per image on 2 shared cores, plus Ray's start.
    run_segment("--input", images, "--model", exported(PLUS, "graph"), "--output", out, "--batch-size", "2",
                timeout=300)  # fmt: skip
    rows = read_rows(out)
    assert sorted(r["image_id"] for r in rows) == sorted(PLUS_IDS) and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        reference = golden_json(PLUS, row["image_id"])
        assert_same_detections(row["instances"], reference)
        assert_same_mask_results(row["instances"], reference)

"""The README's main command (jobs/demo.py): the shipped model through the real job, re-measured.

A bug in decoding, NMS, masks, RLE, category mapping or evaluation drops this AP from about
0.7 to near zero, so the thresholds below are a whole-product check.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "yolact_batch" / "models" / "yolact_shapes.onnx"


@pytest.mark.skipif(not MODEL.is_file(), reason=f"bundled model {MODEL} is missing")
def test_demo_segments_evaluates_and_draws(tmp_path):
    result = subprocess.run(
        [sys.executable, "jobs/demo.py", "--images", "32", "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())["metrics"]
    assert summary["bbox"]["AP"] >= 0.5 and summary["segm"]["AP"] >= 0.5, summary
    success = json.loads((tmp_path / "run" / "_SUCCESS").read_text())
    assert success["images"] == success["images_ok"] == 32
    assert (tmp_path / "overlays" / "contact_sheet.png").stat().st_size > 10_000
    assert "mask AP" in result.stderr and "report.md" in result.stderr

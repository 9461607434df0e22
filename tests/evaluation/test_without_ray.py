"""Evaluation, exports and overlays are plain Python over Parquet: no Ray, nothing heavy at import."""

import subprocess
import sys

from tests.test_core_imports import BLOCKER

MODULES = ["io.results_io", "evaluation", "io.coco_files", "evaluation.overlays", "cli.reports"]


def test_import_and_run_without_ray_or_runtimes(tmp_path):
    code = (
        BLOCKER
        + "".join(f"import yolact_batch.{m}\n" for m in MODULES)
        + f"""
heavy = {{'ray', 'onnxruntime', 'torch', 'matplotlib', 'pycocotools', 'faster_coco_eval', 'cv2'}}
assert not heavy & {{m.split('.')[0] for m in sys.modules}}, heavy & {{m.split('.')[0] for m in sys.modules}}
from yolact_batch.io.results_io import write_rows
from yolact_batch.evaluation import evaluate
gt = {{"images": [{{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}}], "annotations": [],
       "categories": [{{"id": 1, "name": "person"}}]}}
write_rows([], {str(tmp_path / "out")!r})
print(evaluate({str(tmp_path / "out")!r}, gt, {str(tmp_path / "report")!r}, plots=False).summary["counts"])
"""
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "'evaluated_images': 1" in result.stdout

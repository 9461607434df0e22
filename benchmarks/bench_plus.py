"""Model-only CPU throughput of YOLACT++ R50 against YOLACT R50 (the cost of the deformable convs).

Both golden checkpoints (``make_checkpoint.py`` / ``make_checkpoint_plus.py``: synthetic weights,
official layouts) are exported to the graph contract and run in ONNX Runtime on the CPU, batch 1,
on the golden 550x550 input of COCO image 184324; the images/s compared are the model call only
(network, Fast NMS, mask assembly, and for YOLACT++ the mask re-scoring net), no decode or RLE.
Timed in the same run, interleaved, medians:

* ``yolact_r50``: YOLACT R50, opset 17.
* ``plus_r50``: YOLACT++ R50, its 13 DCNv2 layers as ONNX ``DeformConv`` (opset 19), the default.
* ``plus_r50_decomposed``: the same, DCNs as standard ops (``--deform-conv decomposed``).

Prints one JSON line with the ratios. ``THREADS`` (default 2) sets ONNX Runtime's intra-op threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import interleaved_median_ms, require_shared

REPEATS = int(os.environ.get("REPEATS", "9"))
THREADS = int(os.environ.get("THREADS", "2"))


def _checkpoint(golden: Path, script: str, name: str, folder: Path) -> Path:
    path = folder / f"{name}.pth"
    subprocess.run([sys.executable, str(golden / script), name, str(path)], check=True, capture_output=True)
    return path


def main() -> None:
    import onnxruntime as ort

    from yolact_batch.torchnet.onnx_export import export_onnx

    golden = require_shared("golden")
    image = np.load(golden / "yolact_resnet50" / "184324.npz")["input"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        yolact = _checkpoint(golden, "make_checkpoint.py", "yolact_resnet50", folder)
        plus = _checkpoint(golden, "make_checkpoint_plus.py", "yolact_plus_resnet50", folder)
        models = {
            "yolact_r50": export_onnx(yolact, "yolact_resnet50", folder / "y.onnx"),
            "plus_r50": export_onnx(plus, "yolact_plus_resnet50", folder / "p.onnx"),
            "plus_r50_decomposed": export_onnx(
                plus, "yolact_plus_resnet50", folder / "d.onnx", deform_conv="decomposed"
            ),
        }
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        sessions = {
            k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in models.items()
        }
        runs = [lambda s=s: s.run(None, {"images": image}) for s in sessions.values()]
        ms = dict(zip(sessions, interleaved_median_ms(runs, REPEATS)))
    img_s = {k: round(1e3 / v, 3) for k, v in ms.items()}
    print(
        json.dumps(
            {
                "bench": "plus",
                "batch": 1,
                "input": 550,
                "threads": THREADS,
                "repeats": REPEATS,
                "onnxruntime": ort.__version__,
                "median_ms": {k: round(v, 1) for k, v in ms.items()},
                "img_per_s": img_s,
                "ratio_plus_over_yolact": round(img_s["plus_r50"] / img_s["yolact_r50"], 3),
                "ratio_decomposed_over_deformconv": round(img_s["plus_r50_decomposed"] / img_s["plus_r50"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()

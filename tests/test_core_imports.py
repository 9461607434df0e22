"""The numpy core must import with Ray and every inference runtime unavailable."""

import subprocess
import sys

CORE = ["boxes", "priors", "nms", "masks", "rle", "preprocess", "postprocess", "coco",
        "detections", "heads", "settings", "metadata", "configs", "schema", "model", "cli"]

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "onnxruntime", "tensorrt", "torch", "cuda", "pycuda"}:
            raise ImportError(f"blocked for this test: {name}")
sys.meta_path.insert(0, Block())
"""


def test_core_imports_without_ray_or_runtimes():
    code = BLOCKER + "".join(f"import yolact_batch.{m}\n" for m in CORE) + (
        "assert not any(m.split('.')[0] in {'ray', 'onnxruntime', 'tensorrt', 'torch'} for m in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_blocker_really_blocks():
    result = subprocess.run([sys.executable, "-c", BLOCKER + "import onnxruntime"], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked for this test" in result.stderr

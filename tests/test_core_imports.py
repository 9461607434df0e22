"""The numpy core, the I/O layer, the Python API, the job's driver side and the CLI must import
with Ray and every inference runtime unavailable: those are imported lazily, where used."""

import pkgutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "yolact_batch"
LIGHT = ["model", "backends.factory", "backends.contract", "job.config", "job.plan", "job.columns"] + [
    f"{layer}.{m.name}" for layer in ("core", "io", "cli") for m in pkgutil.iter_modules([str(PACKAGE / layer)])
]

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "onnxruntime", "tensorrt", "torch", "cuda", "pycuda"}:
            raise ImportError(f"blocked for this test: {name}")
sys.meta_path.insert(0, Block())
"""


def test_light_modules_import_without_ray_or_runtimes():
    assert "core.rle" in LIGHT and "io.sources" in LIGHT and "cli.main" in LIGHT
    modules = [m for m in LIGHT if m != "cli.__main__"]
    code = (
        BLOCKER
        + "".join(f"import yolact_batch.{m}\n" for m in modules)
        + ("assert not any(m.split('.')[0] in {'ray', 'onnxruntime', 'tensorrt', 'torch'} for m in sys.modules)\n")
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_blocker_really_blocks():
    result = subprocess.run([sys.executable, "-c", BLOCKER + "import onnxruntime"], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked for this test" in result.stderr

"""``benchmarks/gpu_check.sh`` (the one command for a lent GPU machine) dry-run on the CPU, so it
cannot rot: its steps run, its files appear, its one summary line parses and says what ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED, require

pytest.importorskip("torch")
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_bundle  # noqa: E402
import gpu_summary  # noqa: E402


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    require(SHARED / "golden")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--runtime", "cpu"], capture_output=True,
                            text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["gpu_check"] == "cpu" and summary["ok"] is True
    assert summary["env"]["torch"] and summary["env"]["cuda_available"] is False
    tests = summary["tests"]
    assert tests["rc"] == 0 and tests["failures"] == tests["errors"] == 0 and tests["skipped"] > 0
    assert any("needs a CUDA GPU" in reason for reason in tests["skip_reasons"])
    bench = summary["bench"]
    assert bench["runtime"] == "torch-cpu" and [r["batch"] for r in bench["results"]] == [1, 2]
    assert all(r["model_img_s"] > 0 and r["e2e_img_s"] > 0 for r in bench["results"])
    assert summary["parity"] == {"missing": "parity.json"}  # every parity test skipped: nothing measured


def test_summary_names_missing_and_broken_files(tmp_path):
    (tmp_path / "bench.json").write_text("not json\n")
    line = gpu_summary.summary(tmp_path, "cuda", tests_rc=1, bench_rc=3)
    assert line["ok"] is False and line["tests"] == {"rc": 1, "missing": "tests.xml"}
    assert line["bench"]["unreadable"] == "bench.json" and line["bench"]["results"] == []
    assert line["env"] == {"missing": "env.json"} and line["parity"] == {"missing": "parity.json"}


def test_bundle_fits_one_device_call():
    source = require(SHARED / "golden").parent
    files = gpu_bundle.plan(source, images=40)
    names = {str(f) for f in files}
    assert "golden/make_checkpoint.py" in names and "golden/yolact_resnet50/205401.json" in names
    assert sorted(n for n in names if n.endswith(".npz")) == sorted(
        f"golden/{c}/{n}" for c, n in gpu_bundle.NPZ_PER_CONFIG.items() if (source / "golden" / c / n).is_file()
    )
    assert "coco_val2017_subset/val2017/000000205401.jpg" in names
    assert sum((source / f).stat().st_size for f in files) < gpu_bundle.LIMIT_BYTES

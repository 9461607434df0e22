"""The one line ``gpu_check.sh`` prints: its steps' files in a folder, reduced to one JSON object.

    python benchmarks/gpu_summary.py --dir DIR --runtime cuda --tests-rc 0 --bench-rc 0

Reads ``env.json``, ``tests.xml`` (pytest's JUnit report), ``parity.json`` (the numbers the
gpu tests recorded) and ``bench.json`` (bench_gpu.py's line) from ``DIR``; a missing or broken
file is reported as such in the line, never skipped silently.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

BENCH_KEYS = ("model", "batch", "model_img_s", "model_img_s_cuda_graphs", "e2e_img_s", "e2e_over_model",
              "gpu_util_model_pct", "gpu_util_e2e_pct", "host_pre_ms_per_image", "host_post_ms_per_image", "error")  # fmt: skip


def read_json(path: Path) -> dict:
    if not path.is_file():
        return {"missing": path.name}
    try:
        return json.loads(path.read_text().strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        return {"unreadable": path.name, "why": str(exc)[:200]}


def test_counts(path: Path) -> dict:
    """passed / failed / errors / skipped from a JUnit XML file (pytest writes one ``testsuite``)."""
    if not path.is_file():
        return {"missing": path.name}
    try:
        suites = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"unreadable": path.name, "why": str(exc)[:200]}
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]  # fmt: skip
    reasons = sorted({s.get("message", "")[:160] for s in suite.iter("skipped")})
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"passed": passed, **{k: counts[k] for k in ("failures", "errors", "skipped")}, "failed": failed,
            "skip_reasons": reasons}  # fmt: skip


def summary(folder: Path, runtime: str, tests_rc: int, bench_rc: int) -> dict:
    bench = read_json(folder / "bench.json")
    rows = [{k: r.get(k) for k in BENCH_KEYS if k in r} for r in bench.get("results", [])]
    bench_head = {k: bench[k] for k in ("device", "runtime", "detail", "precision", "workers", "seconds", "skipped",
                                         "missing", "unreadable") if k in bench}  # fmt: skip
    return {
        "gpu_check": runtime,
        "ok": tests_rc == 0 and bench_rc == 0 and bool(rows) and not any("error" in r for r in rows),
        "env": read_json(folder / "env.json"),
        "tests": {"rc": tests_rc, **test_counts(folder / "tests.xml")},
        "parity": read_json(folder / "parity.json"),
        "bench": {"rc": bench_rc, **bench_head, "results": rows},
        "files": str(folder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--tests-rc", type=int, required=True)
    parser.add_argument("--bench-rc", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(summary(args.dir, args.runtime, args.tests_rc, args.bench_rc)))


if __name__ == "__main__":
    main()

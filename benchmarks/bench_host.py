"""Host work per image, stage by stage: today's code (a git revision) against this tree, same run.

Stages (one core: OMP/OpenBLAS/OpenCV threads = 1), at reference evaluation settings:

* ``decode``: ``decode_image`` of the JPEG bytes (cv2 with the reference's ``imread`` semantics);
* ``preprocess``: ``preprocess`` to the network input ``float32[3, 550, 550]``;
* ``detect``: box decode + Fast NMS on raw heads (the raw contract; graph models do it on the device);
* ``masks_rle``: mask assembly, crop, upsample, threshold and COCO RLE to ``Detections``
  (``Postprocessor`` minus ``detect``);
* ``rows``: the image's result row as Arrow; ``parquet``: its share of writing a 64-row Parquet file.

Inputs: the golden yolact_resnet50 raw heads of COCO image 184324 (100 detections) with its
image; and the 206-image COCO subset, each image decoded and preprocessed for real and its
masks made from the same golden heads at that image's size (the subset has no heads of its
own; the cost of masks follows the image size and the 100 detections).

Each worker first keeps freed memory for reuse when its package can (``core.allocator``, as the
CLI and the job's CPU stages do; the baseline predates it); ``--no-retain`` measures without it,
to tell its share from the kernels'.

"before" is the package at ``--baseline`` (default: the base commit), extracted with
``git archive`` into a temporary folder; "after" is this tree. Each runs in its own worker
process (one package per interpreter); the driver alternates the two call by call (which
goes first alternates too), so a slow spell of a shared machine hits both alike. Every
figure is a median; ``cpu`` figures (process CPU time) are less disturbed by other processes
than ``wall`` ones, and the ratios are taken from them.

Prints one JSON line. Usage: ``python benchmarks/bench_host.py [--baseline REV] [--images N]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN_ID = 184324
# The commit the host work was measured against in issue #15 (the #11 restructure's base).
BASELINE = "f2fc12b92af263edf68bedbe283e2d4f345fb932"
STAGES = ("decode", "preprocess", "detect", "masks_rle", "rows", "parquet")
PARQUET_ROWS = 64


# ---- worker: one package, stage functions timed on request ------------------------------------


class Worker:
    """The stage functions of the imported ``yolact_batch`` on the shared inputs."""

    def __init__(self, retain: bool = True) -> None:
        import cv2
        import numpy as np

        cv2.setNumThreads(1)
        try:
            from yolact_batch.core.allocator import retain_freed_memory
        except ImportError:  # a package from before it
            self.retained = False
        else:
            self.retained = retain and retain_freed_memory()
        from yolact_batch.core.configs import get_config
        from yolact_batch.core.heads import RawHeads
        from yolact_batch.core.postprocess import Postprocessor, detect
        from yolact_batch.core.preprocess import decode_image, preprocess
        from yolact_batch.core.priors import make_priors
        from yolact_batch.io import schema

        self.np, self.schema = np, schema
        self.decode_image, self.preprocess, self.detect = decode_image, preprocess, detect
        golden = np.load(SHARED / "golden" / "yolact_resnet50" / f"{GOLDEN_ID}.npz")
        self.config = get_config("yolact_resnet50")
        self.priors = make_priors(self.config.priors)
        self.heads = RawHeads(golden["loc"], golden["conf"], golden["mask"], golden["proto"])
        self.post = Postprocessor(self.config, "raw")
        self.model = schema.ModelRef("yolact_resnet50", "0" * 64)
        self.bytes: dict[str, bytes] = {}
        self.images: dict[str, object] = {}
        self.dets: dict[tuple, object] = {}
        self.tables: dict[tuple, object] = {}

    def _image(self, path: str):
        if path not in self.images:
            self.bytes[path] = Path(path).read_bytes()
            self.images[path] = self.decode_image(self.bytes[path])
        return self.images[path]

    def _dets(self, size: tuple[int, int]):
        if size not in self.dets:
            self.dets[size] = self.post(self.heads, [size])[0]
        return self.dets[size]

    def _table(self, dets, rows: int):
        uris, ids = ["file:///x.jpg"] * rows, [GOLDEN_ID] * rows
        if hasattr(self.schema, "results_table"):
            return self.schema.results_table(uris, ids, [dets] * rows, self.model)
        return self.schema.rows_to_table(
            [self.schema.ok_row(dets, image_uri=u, image_id=i, model=self.model) for u, i in zip(uris, ids)]
        )

    def call(self, stage: str, path: str) -> object:
        """The work of ``stage`` for the image at ``path`` (its decoded image and detections cached)."""
        image = self._image(path)
        size = tuple(image.shape[:2])
        if stage == "decode":
            return self.decode_image(self.bytes[path])
        if stage == "preprocess":
            return self.preprocess(image, self.config)
        if stage == "detect":
            return self.detect(self.heads.loc[0], self.heads.conf[0], self.priors)
        if stage == "post":  # detect + masks_rle
            return self.post(self.heads, [size])
        if stage == "rows":
            return self._table(self._dets(size), 1)
        if stage == "parquet":  # the writing only (the rows are the stage before)
            import pyarrow.parquet as pq

            if size not in self.tables:
                self.tables[size] = self._table(self._dets(size), PARQUET_ROWS)
            pq.write_table(self.tables[size], io.BytesIO())
            return None
        raise ValueError(stage)

    def time(self, stage: str, path: str) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        self.call(stage, path)
        return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def count(stage: str, path: str, times: int) -> None:
    """Run ``stage`` ``times`` times after the set-up and one warm-up call (for callgrind)."""
    worker = Worker()
    worker.call(stage, path)
    for _ in range(times):
        worker.call(stage, path)


def serve(retain: bool) -> None:
    worker = Worker(retain)
    package = __import__("yolact_batch").__file__
    print(json.dumps({"ready": True, "package": package, "retained": worker.retained}), flush=True)
    for line in sys.stdin:
        stage, path = json.loads(line)
        print(json.dumps(worker.time(stage, path)), flush=True)


# ---- driver ------------------------------------------------------------------------------------


class Remote:
    def __init__(self, pythonpath: Path, retain: bool) -> None:
        env = dict(os.environ, PYTHONPATH=str(pythonpath))
        command = [sys.executable, __file__, "--worker"] + ([] if retain else ["--no-retain"])
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = json.loads(self.proc.stdout.readline())
        self.package, self.retained = ready["package"], ready["retained"]

    def time(self, stage: str, path: str) -> tuple[float, float]:
        self.proc.stdin.write(json.dumps([stage, path]) + "\n")
        self.proc.stdin.flush()
        return tuple(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def instructions(pythonpath: Path, stage: str, path: str, times: int, folder: Path) -> int:
    """Instructions callgrind counts for the whole worker doing ``stage`` ``times`` times."""
    out = folder / f"callgrind.{os.getpid()}.{stage}.{times}"
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
         "--count", stage, path, str(times)],
        env=dict(os.environ, PYTHONPATH=str(pythonpath)), capture_output=True, text=True, check=True,
    )  # fmt: skip
    out.unlink(missing_ok=True)
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))


def instruction_table(pythonpath: Path, path: str, times: int, folder: Path) -> dict:
    """Millions of instructions per call of each stage: (count(times) - count(0)) / times, both
    counts of that stage (its set-up and warm-up call, a JIT compile included, cancel out)."""
    per = {s: (instructions(pythonpath, s, path, times, folder) - instructions(pythonpath, s, path, 0, folder))
           / times / 1e6 for s in ("decode", "preprocess", "detect", "post", "rows", "parquet")}  # fmt: skip
    table = {"decode": per["decode"], "preprocess": per["preprocess"], "detect": per["detect"],
             "masks_rle": per["post"] - per["detect"], "rows": per["rows"], "parquet": per["parquet"] / PARQUET_ROWS}  # fmt: skip
    table["total"] = sum(table.values())
    return {k: round(v, 2) for k, v in table.items()}


def extract(revision: str, into: Path) -> Path:
    """The ``yolact_batch`` package at ``revision``, written under ``into`` (``git archive``)."""
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "yolact_batch"], check=True, capture_output=True
    )
    with tarfile.open(fileobj=io.BytesIO(blob.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(workers: dict, plan: list[tuple[str, str]], rounds: int) -> dict:
    """``{name: {(stage, path): (median wall ms, median cpu ms)}}``, calls interleaved."""
    samples = {name: {key: [] for key in plan} for name in workers}
    names = list(workers)
    for key in plan:  # warm-up: caches, first-call costs
        for name in names:
            workers[name].time(*key)
    for r in range(rounds):
        for n, key in enumerate(plan):
            order = names if (r + n) % 2 == 0 else names[::-1]
            for name in order:
                samples[name][key].append(workers[name].time(*key))
    return {
        name: {key: tuple(statistics.median(s[i] for s in spent) for i in (0, 1)) for key, spent in per.items()}
        for name, per in samples.items()
    }


def stage_table(result: dict, paths: list[str], clock: int) -> dict:
    """Mean over images of each stage's median (ms); masks_rle = post - detect; total."""

    def mean(stage):
        return statistics.fmean(result[(stage, p)][clock] for p in paths)

    detect = mean("detect")
    table = {
        "decode": mean("decode"),
        "preprocess": mean("preprocess"),
        "detect": detect,
        "masks_rle": mean("post") - detect,
        "rows": mean("rows"),
        "parquet": mean("parquet") / PARQUET_ROWS,
    }
    table["total"] = sum(table.values())
    return {k: round(v, 2) for k, v in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of 'before' (default: the #15 base)")
    parser.add_argument("--images", type=int, default=206, help="images of the COCO subset (206 = all, 0 = none)")
    parser.add_argument("--repeats", type=int, default=31, help="golden-image rounds")
    parser.add_argument("--rounds", type=int, default=3, help="subset rounds")
    parser.add_argument("--callgrind", type=int, default=0, metavar="N",
                        help="also count instructions (valgrind callgrind, N calls per stage; slow): noise-free")  # fmt: skip
    parser.add_argument("--no-retain", action="store_true", help="do not keep freed memory (core.allocator)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return serve(not args.no_retain)
    if args.count:
        return count(args.count[0], args.count[1], int(args.count[2]))
    subset = SHARED / "coco_val2017_subset" / "val2017"
    if not subset.exists():
        print(json.dumps({"skipped": f"shared data not found at {subset}"}))
        return
    golden = str(subset / f"{GOLDEN_ID:012d}.jpg")
    paths = [str(p) for p in sorted(subset.glob("*.jpg"))[: args.images]]
    stages = ("decode", "preprocess", "detect", "post", "rows", "parquet")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = extract(args.baseline, Path(tmp))
        counted = None
        if args.callgrind:
            counted = {name: instruction_table(where, golden, args.callgrind, Path(tmp))
                       for name, where in (("before", baseline), ("after", REPO))}  # fmt: skip
        workers = {name: Remote(where, not args.no_retain) for name, where in (("before", baseline), ("after", REPO))}
        try:
            golden_result = measure(workers, [(s, golden) for s in stages], args.repeats)
            # Subset: detect does not depend on the image (same heads): timed on the golden image only.
            subset_plan = [(s, p) for p in paths for s in stages if s not in ("detect", "parquet")]
            subset_result = measure(workers, subset_plan, args.rounds) if paths else None
        finally:
            for w in workers.values():
                w.close()
    out = {"bench": "host", "baseline": args.baseline, "threads": 1, "golden_image": GOLDEN_ID, "detections": 100}
    out["packages"] = {name: str(Path(w.package).parent.parent) for name, w in workers.items()}
    out["freed_memory_retained"] = {name: w.retained for name, w in workers.items()}
    for clock, label in ((1, "cpu"), (0, "wall")):
        before = stage_table(golden_result["before"], [golden], clock)
        after = stage_table(golden_result["after"], [golden], clock)
        out[f"golden_{label}_ms"] = {"before": before, "after": after}
        if subset_result:
            for name, result in subset_result.items():
                for p in paths:  # stages timed on the golden image only
                    for s in ("detect", "parquet"):
                        result[(s, p)] = golden_result[name][(s, golden)]
            out[f"subset_{label}_ms"] = {
                name: stage_table(subset_result[name], paths, clock) for name in ("before", "after")
            }
    g = out["golden_cpu_ms"]
    out["golden_ratio"] = round(g["before"]["total"] / g["after"]["total"], 2)
    if subset_result:
        s = out["subset_cpu_ms"]
        out["subset_images"] = len(paths)
        out["subset_ratio"] = round(s["before"]["total"] / s["after"]["total"], 2)
    if counted:
        out["golden_instructions_M"] = counted
        out["golden_instructions_ratio"] = round(counted["before"]["total"] / counted["after"]["total"], 2)
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

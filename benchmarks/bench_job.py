"""Job throughput on this CPU: model-only img/s vs the end-to-end `segment` job, same model.

* model: the golden yolact_resnet50 checkpoint (rebuilt with ``../shared/golden/make_checkpoint.py``)
  exported by our exporter (graph contract), cached under ``benchmarks/.cache``.
* ``model_only_img_s``: the same ONNX Runtime backend and batch size as a model actor, in a plain
  loop over pre-decoded, pre-processed inputs (no Ray, no decode, no post-processing).
* ``job_img_s``: ``yolact_batch.job.plan`` on the embedded default (local Ray, local files, ONNX Runtime
  CPU) over the whole COCO subset: listing, read, decode, preprocess, model, masks + RLE, Parquet
  commits and ``_SUCCESS``. Ray's start-up is timed separately (``ray_start_s``) and excluded.
* ``ratio`` = job / model-only (target >= 0.90).
* Where the rest goes, from the job's own account (Ray Data's stats, in ``_SUCCESS``):
  ``model_busy_s``, the time the model actor spent on batches; ``model_in_job_img_s`` = images /
  busy time, against model-only it shows what running beside the CPU stages and Ray costs the
  model (``in_job_ratio``); ``idle_s`` = wall - busy, the time the model waited (start-up:
  listing, actor start, model load, warm-up, the first block's read and decode; the end).

Prints one JSON line. Usage: ``python benchmarks/bench_job.py [--images N] [--batch-size 8]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SHARED, require_shared

CACHE = REPO / "benchmarks" / ".cache"


def golden_model() -> Path:
    """The exported golden yolact_resnet50 graph model (built once, then cached)."""
    model = CACHE / "yolact_resnet50_golden_graph.onnx"
    if not model.exists():
        from yolact_batch.torchnet import export_onnx

        CACHE.mkdir(parents=True, exist_ok=True)
        checkpoint = CACHE / "yolact_resnet50_golden.pth"
        subprocess.run(
            [sys.executable, str(SHARED / "golden" / "make_checkpoint.py"), "yolact_resnet50", str(checkpoint)],
            check=True,
            capture_output=True,
        )
        export_onnx(checkpoint, "yolact_resnet50", model, contract="graph")
    return model


def model_only(model: Path, images: list[Path], batch_size: int) -> float:
    import numpy as np

    from yolact_batch.backends.onnxruntime import OnnxRuntimeBackend
    from yolact_batch.core.preprocess import decode_image, preprocess

    backend = OnnxRuntimeBackend(model.read_bytes(), origin=str(model))
    config = backend.metadata.config
    inputs = np.stack([preprocess(decode_image(p.read_bytes()), config) for p in images])
    backend(inputs[:batch_size])  # warm-up, as the actor does
    start = time.perf_counter()
    for first in range(0, len(inputs), batch_size):
        backend(inputs[first : first + batch_size])
    return len(inputs) / (time.perf_counter() - start)


def job(model: Path, images: Path, limit: int, batch_size: int) -> tuple[float, float, dict]:
    import ray

    from yolact_batch.backends.factory import BackendOptions
    from yolact_batch.job.config import JobConfig, Resources
    from yolact_batch.job.pipeline import execute, local_cpus
    from yolact_batch.job.plan import finish, prepare

    resources = Resources(backend=BackendOptions(batch_size=batch_size))
    with tempfile.TemporaryDirectory() as out:
        config = JobConfig(input=str(images), output=out, model=str(model), resources=resources, limit=limit)
        start = time.perf_counter()
        ray.init(address="local", num_cpus=local_cpus(resources), include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            start = time.perf_counter()
            plan = prepare(config.absolute())
            executed = execute(plan, lambda message: None)
            summary = finish(plan, executed.committed, time.perf_counter() - start, executed.model_busy_s)
        finally:
            ray.shutdown()
    counts = {
        "images": summary.images,
        "errors": summary.images_error,
        "wall_s": summary.wall_s,
        "processed": summary.processed,
        "model_busy_s": summary.model_busy_s,
    }
    return summary.processed / summary.wall_s, ray_start, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=206, help="images of the COCO subset (206 = all)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    images_dir = require_shared("coco_val2017_subset/val2017")
    images = sorted(images_dir.glob("*.jpg"))[: args.images]
    model = golden_model()
    model_img_s = model_only(model, images, args.batch_size)
    job_img_s, ray_start_s, counts = job(model, images_dir, len(images), args.batch_size)
    busy = counts["model_busy_s"] or float("nan")
    in_job = counts["processed"] / busy
    print(
        json.dumps(
            {
                "bench": "job_throughput",
                "model": "yolact_resnet50 (golden weights, graph contract)",
                "device": "cpu",
                "images": counts["images"],
                "error_rows": counts["errors"],
                "batch_size": args.batch_size,
                "model_only_img_s": round(model_img_s, 3),
                "job_img_s": round(job_img_s, 3),
                "ratio": round(job_img_s / model_img_s, 3),
                "ray_start_s": round(ray_start_s, 1),
                "target_ratio": 0.9,
                "wall_s": round(counts["wall_s"], 1),
                "model_busy_s": round(busy, 1),
                "idle_s": round(counts["wall_s"] - busy, 1),
                "model_in_job_img_s": round(in_job, 3),
                "in_job_ratio": round(in_job / model_img_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

"""GPU throughput per device: model-only and end-to-end img/s, their ratio, GPU utilisation.

For each model (yolact_resnet50, yolact_base) and batch size (1, 8, 32), graph contract,
reference evaluation settings, the synthetic golden weights (100 detections per image: the
worst case for host post-processing):

* ``model_img_s``: preprocessed batches already in host memory through the runtime, copies
  included (TensorRT keeps two batches in flight).
* ``e2e_img_s``: ``--workers`` processes share the GPU, each reading COCO JPEG bytes, decoding,
  preprocessing, running the model, post-processing and RLE-encoding into rows: the work of
  the Ray job's CPU tasks and GPU actor for one GPU, with no transport between them.
* ``e2e_over_model`` and the GPU utilisation (mean of 100 ms samples from NVML when
  ``pynvml`` imports, else ``nvidia-smi -lms 100``) during each phase; host ms per image and
  the CPU cores that host work needs to keep up with ``model_img_s``.

Runtime (``--runtime auto``): TensorRT when tensorrt + cuda-python import, else ONNX Runtime's
CUDA provider (IO binding), else the PyTorch CUDA twin of the exported network as a proxy
(network in ``--precision``, graph head in FP32). Without a CUDA GPU or any such runtime it
prints one JSON line saying it was skipped and why, and exits 0. ``--runtime ort-cpu`` runs the
same plumbing on the CPU to check the script; its numbers say nothing about GPUs.

    python benchmarks/bench_gpu.py [--models yolact_resnet50,yolact_base] [--batches 1,8,32]
        [--precision fp16] [--workers 12] [--seconds 10] [--engine-cache DIR] [--score-threshold 0]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np  # noqa: E402
from _common import SHARED, require_shared  # noqa: E402  (puts the repository on sys.path)

RUNTIMES = ("tensorrt", "ort-cuda", "torch-cuda", "ort-cpu")
TARGETS = {"e2e_img_s_per_gpu_yolact_base": 1500, "gpu_util_pct": 85}


def skip(reason: str) -> None:
    print(json.dumps({"bench": "gpu", "skipped": reason}))
    sys.exit(0)


# --- what this machine has ---------------------------------------------------------------------


def gpu_index() -> int:
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpu_index())],
        capture_output=True, text=True,
    )  # fmt: skip
    name = result.stdout.strip().splitlines()
    return name[0] if result.returncode == 0 and name else None


def runtime_problem(runtime: str) -> str | None:
    """Why ``runtime`` can't run here (None when it can)."""
    try:
        if runtime == "tensorrt":
            from yolact_batch.backends.tensorrt import import_cudart, import_tensorrt

            import_tensorrt()
            import_cudart()
        elif runtime in ("ort-cuda", "ort-cpu"):
            import onnxruntime as ort

            if runtime == "ort-cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
                return f"onnxruntime has no CUDAExecutionProvider (has {ort.get_available_providers()})"
        elif runtime == "torch-cuda":
            import torch

            if not torch.cuda.is_available():
                return "torch has no CUDA device"
    except ImportError as exc:
        return str(exc).split(";")[0]
    return None


def pick_runtime(requested: str) -> str:
    if requested != "auto":
        problem = runtime_problem(requested)
        if problem:
            skip(f"runtime {requested} unavailable: {problem}")
        return requested
    problems = {}
    for runtime in RUNTIMES[:3]:
        problems[runtime] = runtime_problem(runtime)
        if problems[runtime] is None:
            return runtime
    skip("no GPU runtime: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))


# --- models ------------------------------------------------------------------------------------


def prepare(names: list[str], runtime: str, folder: Path) -> dict[str, dict[str, Path]]:
    """Golden checkpoints (and graph ONNX exports unless the runtime is torch) for ``names``."""
    golden = require_shared("golden")
    paths = {}
    for name in names:
        checkpoint = folder / f"{name}_golden.pth"
        subprocess.run([sys.executable, str(golden / "make_checkpoint.py"), name, str(checkpoint)], check=True,
                       capture_output=True)  # fmt: skip
        paths[name] = {"checkpoint": checkpoint}
        if runtime != "torch-cuda":
            try:
                from yolact_batch.torchnet import export_onnx
            except ImportError as exc:
                skip(f"exporting the benchmark models needs the 'export' extra (torch, onnx): {exc}")
            paths[name]["onnx"] = export_onnx(checkpoint, name, folder / f"{name}_graph.onnx", contract="graph")
    return paths


class Runner:
    """``run(images) -> GraphHeads`` and ``run_many(batches)`` for one runtime, built in the process using it."""

    def __init__(self, runtime: str, name: str, paths: dict, precision: str, max_batch: int, engine_cache: str,
                 slots: int) -> None:  # fmt: skip
        from yolact_batch.core.configs import get_config
        from yolact_batch.core.heads import GRAPH_OUTPUTS, GraphHeads

        self.close = lambda: None
        self.run_many = self._one_by_one
        if runtime == "tensorrt":
            from yolact_batch.backends.tensorrt import EngineSpec, TensorRTBackend

            spec = EngineSpec(precision=precision, min_batch=1, opt_batch=min(16, max_batch), max_batch=max_batch)
            backend = TensorRTBackend(paths["onnx"].read_bytes(), origin=str(paths["onnx"]), spec=spec,
                                      cache=engine_cache, slots=slots)  # fmt: skip
            self.run, self.run_many, self.close = backend, backend.stream, backend.close
            self.detail = f"tensorrt {__import__('tensorrt').__version__}, engine {backend.engine_source}"
        elif runtime in ("ort-cuda", "ort-cpu"):
            from yolact_batch.backends.onnxruntime import OnnxRuntimeBackend
            from yolact_batch.backends.ort_gpu import OrtIoBinding

            device = "cuda" if runtime == "ort-cuda" else "cpu"
            backend = OnnxRuntimeBackend(paths["onnx"].read_bytes(), origin=str(paths["onnx"]), providers=(device,))
            binding = OrtIoBinding(backend.session, device=device)
            self.run = lambda images: GraphHeads(*binding(images, GRAPH_OUTPUTS))
            self.detail = f"onnxruntime {__import__('onnxruntime').__version__} {backend.providers[0]}, IO binding"
        else:
            self.run = TorchGraph(get_config(name), paths["checkpoint"], precision, max_batch)
            self.detail = f"torch {__import__('torch').__version__} CUDA twin (proxy for TensorRT)"

    def _one_by_one(self, batches):
        for images in batches:
            yield self.run(images)


class TorchGraph:
    """The exported network's torch twin on CUDA: network in ``precision``, graph head in FP32."""

    def __init__(self, config, checkpoint: Path, precision: str, max_batch: int) -> None:
        import torch

        from yolact_batch.torchnet import load_checkpoint
        from yolact_batch.torchnet.graph import GraphHead

        torch.backends.cudnn.benchmark = True
        self.torch, self.device = torch, torch.device("cuda")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.net = load_checkpoint(checkpoint, config).to(self.device, self.dtype).eval()
        self.net = self.net.to(memory_format=torch.channels_last)
        self.head = GraphHead(config).to(self.device).eval()
        side = config.input_size
        self.pinned = torch.empty((max_batch, 3, side, side), dtype=torch.float32).pin_memory()

    def __call__(self, images: np.ndarray):
        from yolact_batch.core.heads import GraphHeads

        torch, n = self.torch, len(images)
        with torch.no_grad():
            self.pinned[:n].copy_(torch.from_numpy(images))
            x = self.pinned[:n].to(self.device, non_blocking=True).to(self.dtype)
            heads = self.net(x.contiguous(memory_format=torch.channels_last))
            outputs = self.head(*(h.float() for h in heads))
            return GraphHeads(*(o.cpu().numpy() for o in outputs))


# --- GPU utilisation ---------------------------------------------------------------------------


class GpuUtilisation:
    """Mean ``utilization.gpu`` (%) over a with-block, sampled every 100 ms; None without a GPU tool."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.samples = enabled, []

    def __enter__(self) -> "GpuUtilisation":
        self.samples, self._stop = [], threading.Event()
        self._proc = self._thread = None
        if not self.enabled:
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index())

            def poll():
                while not self._stop.wait(0.1):
                    self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

            self.source = "nvml"
        except Exception:  # no pynvml, or NVML refused: fall back to nvidia-smi
            if shutil.which("nvidia-smi") is None:
                self.source = None
                return self
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100",
                 "-i", str(gpu_index())],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip

            def poll():
                for line in self._proc.stdout:
                    if line.strip().isdigit():
                        self.samples.append(int(line.strip()))

            self.source = "nvidia-smi"
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


# --- the two measurements ----------------------------------------------------------------------


def jpeg_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted((SHARED / "coco_val2017_subset" / "val2017").glob("*.jpg"))]


def measure_model(runner: Runner, images: np.ndarray, seconds: float, sample_gpu: bool) -> tuple[float, float | None]:
    """img/s of ``runner`` on one preprocessed batch, repeated, and the GPU utilisation meanwhile."""
    for _ in range(3):
        runner.run(images)
    done = 0
    with GpuUtilisation(sample_gpu) as util, contextlib.closing(runner.run_many(itertools.repeat(images))) as results:
        start = time.perf_counter()
        for heads in results:
            done += len(heads)
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
    return done / elapsed, util.mean


def e2e_worker(worker: int, args: dict, barrier, queue) -> None:
    """One CPU task + GPU actor pair: JPEG bytes -> rows, timed for ``args['seconds']`` after the barrier."""
    try:
        from yolact_batch.core.coco import instances
        from yolact_batch.core.configs import get_config
        from yolact_batch.core.postprocess import Postprocessor
        from yolact_batch.core.preprocess import decode_image, preprocess
        from yolact_batch.core.settings import InferenceSettings, OutputSettings

        config = get_config(args["name"])
        settings = InferenceSettings(output=OutputSettings(score_threshold=args["score_threshold"]))
        post = Postprocessor(config, "graph", settings)
        runner = Runner(args["runtime"], args["name"], args["paths"], args["precision"], args["max_batch"],
                        args["engine_cache"], slots=1)  # fmt: skip
        jpegs, batch = jpeg_bytes(), args["batch"]
        order = itertools.cycle(range(worker * 37 % len(jpegs), worker * 37 % len(jpegs) + len(jpegs)))
        totals = dict(images=0, detections=0, pre_s=0.0, model_s=0.0, post_s=0.0)

        def step(count: bool) -> None:
            t0 = time.perf_counter()
            bgr = [decode_image(jpegs[next(order) % len(jpegs)]) for _ in range(batch)]
            images = np.stack([preprocess(im, config) for im in bgr])
            t1 = time.perf_counter()
            heads = runner.run(images)
            t2 = time.perf_counter()
            rows = [instances(d) for d in post(heads, [im.shape[:2] for im in bgr])]
            t3 = time.perf_counter()
            if count:
                totals["images"] += batch
                totals["detections"] += sum(len(r) for r in rows)
                totals["pre_s"] += t1 - t0
                totals["model_s"] += t2 - t1
                totals["post_s"] += t3 - t2

        step(False)
        barrier.wait(timeout=1800)
        start = time.perf_counter()
        while time.perf_counter() - start < args["seconds"]:
            step(True)
        queue.put({**totals, "elapsed_s": time.perf_counter() - start})
        runner.close()
    except BaseException as exc:  # report, and release the parent from the barrier
        barrier.abort()
        queue.put({"error": f"worker {worker}: {type(exc).__name__}: {exc}"})


def measure_e2e(args: dict, workers: int, sample_gpu: bool) -> dict:
    ctx = mp.get_context("spawn")  # CUDA is initialised in the parent: children must not fork it
    barrier, queue = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=e2e_worker, args=(w, args, barrier, queue), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=1800)
    except threading.BrokenBarrierError:
        pass
    with GpuUtilisation(sample_gpu) as util:
        reports = [queue.get(timeout=args["seconds"] + 1800) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    images = sum(r["images"] for r in reports)
    return {
        "e2e_img_s": round(sum(r["images"] / r["elapsed_s"] for r in reports), 1),
        "gpu_util_e2e_pct": util.mean,
        "mean_detections": round(sum(r["detections"] for r in reports) / max(images, 1), 1),
        "host_pre_ms_per_image": round(1e3 * sum(r["pre_s"] for r in reports) / max(images, 1), 2),
        "host_post_ms_per_image": round(1e3 * sum(r["post_s"] for r in reports) / max(images, 1), 2),
        "model_call_ms_per_image_under_load": round(1e3 * sum(r["model_s"] for r in reports) / max(images, 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="yolact_resnet50,yolact_base")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "fp32"))
    parser.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES))
    parser.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="e2e processes sharing the GPU (each holds its own model/engine context in GPU memory)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--engine-cache", default=None, help="TensorRT engine cache (default: a temp folder)")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="0: reference eval; 0.3: pre-labeling")
    args = parser.parse_args()

    device = gpu_name()
    if args.runtime != "ort-cpu" and device is None:
        skip("no CUDA GPU (nvidia-smi not found or lists no device)")
    runtime = pick_runtime(args.runtime)
    require_shared("coco_val2017_subset/val2017")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    max_batch = max(batches)
    gpu = runtime != "ort-cpu"
    results, detail = [], None
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        engine_cache = args.engine_cache or str(Path(tmp) / "engines")
        paths = prepare(names, runtime, Path(tmp))
        from yolact_batch.core.configs import get_config
        from yolact_batch.core.preprocess import decode_image, preprocess

        jpegs = jpeg_bytes()
        for name in names:
            runner = Runner(runtime, name, paths[name], args.precision, max_batch, engine_cache, slots=2)
            detail = runner.detail
            config = get_config(name)
            pool = np.stack([preprocess(decode_image(j), config) for j in jpegs[:max_batch]])
            for batch in batches:
                model_img_s, util = measure_model(runner, pool[:batch], args.seconds, gpu)
                e2e = measure_e2e(
                    dict(runtime=runtime, name=name, paths=paths[name], precision=args.precision, max_batch=max_batch,
                         engine_cache=engine_cache, batch=batch, seconds=args.seconds,
                         score_threshold=args.score_threshold),
                    args.workers, gpu,
                )  # fmt: skip
                host_ms = e2e["host_pre_ms_per_image"] + e2e["host_post_ms_per_image"]
                results.append({
                    "model": name, "batch": batch, "model_img_s": round(model_img_s, 1), "gpu_util_model_pct": util,
                    **e2e, "e2e_over_model": round(e2e["e2e_img_s"] / model_img_s, 3),
                    "cpu_cores_to_keep_up_with_model": round(model_img_s * host_ms / 1e3, 1),
                })  # fmt: skip
            runner.close()
    print(json.dumps({
        "bench": "gpu", "device": device or "cpu (plumbing check only)", "runtime": runtime, "detail": detail,
        "precision": args.precision, "workers": args.workers, "seconds": args.seconds,
        "score_threshold": args.score_threshold, "cpu_count": os.cpu_count(), "results": results, "targets": TARGETS,
    }))  # fmt: skip


if __name__ == "__main__":
    main()

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

* ``model_img_s_cuda_graphs`` (torch runtimes, ``--compare-compile``): the model-only figure
  again with ``compile="cuda-graphs"``, measured right after the eager one, to decide that default.

Runtime (``--runtime auto``): TensorRT when tensorrt + cuda-python import, else ONNX Runtime's
CUDA provider (IO binding), else the torch backend on CUDA (``yolact_batch.backends.torch``:
network in ``--precision``, graph head in FP32), the backend the job runs with ``--backend
torch``. Without a CUDA GPU or any such runtime it prints one JSON line saying it was skipped and
why, and exits 0. ``--runtime ort-cpu`` / ``torch-cpu`` run the same plumbing on the CPU to check
the script (``gpu_check.sh --runtime cpu`` uses ``torch-cpu`` with the small ``yolact_shapes``
layout and random weights); their numbers say nothing about GPUs.

The e2e workers start once per model and run every batch size in turn (a barrier starts each
timed phase), so a model's e2e figures cost one start-up, not one per batch size.

    python benchmarks/bench_gpu.py [--models yolact_resnet50,yolact_base] [--batches 1,8,32]
        [--precision fp16] [--workers 12] [--seconds 10] [--engine-cache DIR] [--score-threshold 0]
        [--checkpoints DIR] [--compare-compile]

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

RUNTIMES = ("tensorrt", "ort-cuda", "torch-cuda", "ort-cpu", "torch-cpu")
GOLDEN_RECIPES = {"yolact_plus_resnet50": "make_checkpoint_plus.py"}  # others: make_checkpoint.py
SMALL_MODELS = ("yolact_shapes",)  # random weights, for plumbing checks on a CPU
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
        elif runtime in ("torch-cuda", "torch-cpu"):
            import torch

            if runtime == "torch-cuda" and not torch.cuda.is_available():
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


def config_for(name: str):
    """An official config, or the small shapes layout (``SMALL_MODELS``)."""
    if name == "yolact_shapes":
        from yolact_batch.training.shapes import SHAPES_CONFIG

        return SHAPES_CONFIG
    from yolact_batch.core.configs import get_config

    return get_config(name)


def make_checkpoint(name: str, folder: Path) -> Path:
    """``folder/<name>_golden.pth`` from the golden recipe (kept when already there), or, for a
    small model, our model file with seeded random weights."""
    if name in SMALL_MODELS:
        import torch

        from yolact_batch.core.metadata import ModelMetadata
        from yolact_batch.torchnet.model_file import save_model
        from yolact_batch.torchnet.network import build_network

        path = folder / f"{name}_random.pt"
        if not path.is_file():
            torch.manual_seed(0)
            config = config_for(name)
            save_model(path, build_network(config), ModelMetadata(config=config, source="bench_gpu random weights"))
        return path
    path = folder / f"{name}_golden.pth"
    if not path.is_file():
        recipe = require_shared("golden") / GOLDEN_RECIPES.get(name, "make_checkpoint.py")
        subprocess.run([sys.executable, str(recipe), name, str(path)], check=True, capture_output=True)
    return path


def prepare(names: list[str], runtime: str, folder: Path) -> dict[str, dict[str, Path]]:
    """Checkpoints (and graph ONNX exports unless the runtime is torch) for ``names``."""
    paths = {}
    for name in names:
        checkpoint = make_checkpoint(name, folder)
        paths[name] = {"checkpoint": checkpoint}
        if not runtime.startswith("torch"):
            try:
                from yolact_batch.torchnet import export_onnx
            except ImportError as exc:
                skip(f"exporting the benchmark models needs the 'export' extra (torch, onnx): {exc}")
            paths[name]["onnx"] = export_onnx(checkpoint, name, folder / f"{name}_graph.onnx", contract="graph")
    return paths


class Runner:
    """``run(images) -> GraphHeads`` and ``run_many(batches)`` for one runtime, built in the process using it."""

    def __init__(self, runtime: str, name: str, paths: dict, precision: str, max_batch: int, engine_cache: str,
                 slots: int, compile: str = "off") -> None:  # fmt: skip
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
            from yolact_batch.backends.torch import TorchBackend, TorchOptions

            device = "cuda" if runtime == "torch-cuda" else "cpu"
            options = TorchOptions(device=device, precision=precision, compile=compile)
            config = config_for(name) if paths["checkpoint"].suffix == ".pth" else None  # our .pt carries its own
            backend = TorchBackend(paths["checkpoint"].read_bytes(), origin=str(paths["checkpoint"]), config=config,
                                   options=options)  # fmt: skip
            self.run, self.run_many, self.close = backend, backend.stream, backend.close
            self.detail = f"torch {__import__('torch').__version__} backend on {backend.device}, compile={compile}"

    def _one_by_one(self, batches):
        for images in batches:
            yield self.run(images)


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
    """One CPU task + GPU actor pair: JPEG bytes -> rows, for each of ``args['batches']`` in turn,
    timed for ``args['seconds']`` after the barrier that starts that batch size's phase."""
    try:
        from yolact_batch.core.coco import instances
        from yolact_batch.core.postprocess import Postprocessor
        from yolact_batch.core.preprocess import decode_image, preprocess
        from yolact_batch.core.settings import InferenceSettings, OutputSettings

        config = config_for(args["name"])
        settings = InferenceSettings(output=OutputSettings(score_threshold=args["score_threshold"]))
        post = Postprocessor(config, "graph", settings)
        runner = Runner(args["runtime"], args["name"], args["paths"], args["precision"], args["max_batch"],
                        args["engine_cache"], slots=1)  # fmt: skip
        jpegs = jpeg_bytes()
        order = itertools.cycle(range(worker * 37 % len(jpegs), worker * 37 % len(jpegs) + len(jpegs)))

        def step(batch: int, totals: dict | None) -> None:
            t0 = time.perf_counter()
            bgr = [decode_image(jpegs[next(order) % len(jpegs)]) for _ in range(batch)]
            images = np.stack([preprocess(im, config) for im in bgr])
            t1 = time.perf_counter()
            heads = runner.run(images)
            t2 = time.perf_counter()
            rows = [instances(d) for d in post(heads, [im.shape[:2] for im in bgr])]
            t3 = time.perf_counter()
            if totals is not None:
                totals["images"] += batch
                totals["detections"] += sum(len(r) for r in rows)
                totals["pre_s"] += t1 - t0
                totals["model_s"] += t2 - t1
                totals["post_s"] += t3 - t2

        for batch in args["batches"]:
            step(batch, None)  # this batch size's first call (shapes, autotuning) is not timed
            barrier.wait(timeout=1800)
            totals = dict(batch=batch, images=0, detections=0, pre_s=0.0, model_s=0.0, post_s=0.0)
            start = time.perf_counter()
            while time.perf_counter() - start < args["seconds"]:
                step(batch, totals)
            queue.put({**totals, "elapsed_s": time.perf_counter() - start})
        runner.close()
    except BaseException as exc:  # report, and release the parent from the barrier
        barrier.abort()
        queue.put({"error": f"worker {worker}: {type(exc).__name__}: {exc}"})


def measure_e2e(args: dict, workers: int, sample_gpu: bool) -> dict[int, dict]:
    """e2e figures for each of ``args['batches']``: ``workers`` processes started once, phase by phase."""
    ctx = mp.get_context("spawn")  # CUDA is initialised in the parent: children must not fork it
    barrier, queue = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=e2e_worker, args=(w, args, barrier, queue), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    figures = {}
    try:
        for batch in args["batches"]:
            try:
                barrier.wait(timeout=1800)
            except threading.BrokenBarrierError:
                pass  # a worker failed: its report says why
            with GpuUtilisation(sample_gpu) as util:
                reports = [queue.get(timeout=args["seconds"] + 1800) for _ in procs]
            errors = [r["error"] for r in reports if "error" in r]
            if errors:
                raise RuntimeError("; ".join(errors))
            figures[batch] = _e2e_figures(reports, util.mean)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    return figures


def _e2e_figures(reports: list[dict], util: float | None) -> dict:
    images = max(sum(r["images"] for r in reports), 1)
    return {
        "e2e_img_s": round(sum(r["images"] / r["elapsed_s"] for r in reports), 1),
        "gpu_util_e2e_pct": util,
        "mean_detections": round(sum(r["detections"] for r in reports) / images, 1),
        "host_pre_ms_per_image": round(1e3 * sum(r["pre_s"] for r in reports) / images, 2),
        "host_post_ms_per_image": round(1e3 * sum(r["post_s"] for r in reports) / images, 2),
        "model_call_ms_per_image_under_load": round(1e3 * sum(r["model_s"] for r in reports) / images, 2),
    }


def measure_one(common: dict, pool: np.ndarray, batches: list[int], args, gpu: bool, graphs: bool):
    """Result rows of one model at every batch size, and the runtime's description."""
    slots = dict(slots=2, engine_cache=common["engine_cache"])
    model = {}
    runner = Runner(
        common["runtime"], common["name"], common["paths"], common["precision"], common["max_batch"], **slots
    )
    detail = runner.detail
    for batch in batches:
        model[batch] = measure_model(runner, pool[:batch], args.seconds, gpu)
    runner.close()
    if graphs:
        runner = Runner(common["runtime"], common["name"], common["paths"], common["precision"], common["max_batch"],
                        compile="cuda-graphs", **slots)  # fmt: skip
        for batch in batches:
            model[batch] += (measure_model(runner, pool[:batch], args.seconds, gpu)[0],)
        runner.close()
    e2e = measure_e2e(
        dict(**common, batches=batches, seconds=args.seconds, score_threshold=args.score_threshold), args.workers, gpu
    )
    rows = []
    for batch in batches:
        model_img_s, util = model[batch][:2]
        host_ms = e2e[batch]["host_pre_ms_per_image"] + e2e[batch]["host_post_ms_per_image"]
        row = {
            "model": common["name"],
            "batch": batch,
            "model_img_s": round(model_img_s, 1),
            "gpu_util_model_pct": util,
        }
        if graphs:
            row["model_img_s_cuda_graphs"] = round(model[batch][2], 1)
        rows.append({
            **row, **e2e[batch], "e2e_over_model": round(e2e[batch]["e2e_img_s"] / model_img_s, 3),
            "cpu_cores_to_keep_up_with_model": round(model_img_s * host_ms / 1e3, 1),
        })  # fmt: skip
    return rows, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="yolact_resnet50,yolact_base")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES))
    parser.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="e2e processes sharing the GPU (each holds its own model/engine context in GPU memory)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--engine-cache", default=None, help="TensorRT engine cache (default: a temp folder)")
    parser.add_argument("--checkpoints", type=Path, help="folder of built checkpoints, reused (default: a temp folder)")
    parser.add_argument(
        "--compare-compile", action="store_true", help="torch runtimes: also measure model-only img/s with CUDA graphs"
    )
    parser.add_argument("--score-threshold", type=float, default=0.0, help="0: reference eval; 0.3: pre-labeling")
    args = parser.parse_args()

    device = gpu_name()
    cpu_runtime = args.runtime in ("ort-cpu", "torch-cpu")
    if not cpu_runtime and device is None:
        skip("no CUDA GPU (nvidia-smi not found or lists no device)")
    runtime = pick_runtime(args.runtime)
    if runtime == "tensorrt" and args.precision == "bf16":
        skip("the TensorRT path builds fp16 or fp32 engines; bf16 is a torch precision")
    require_shared("coco_val2017_subset/val2017")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    max_batch = max(batches)
    gpu = not cpu_runtime
    graphs = args.compare_compile and runtime == "torch-cuda"
    results, detail = [], None
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        engine_cache = args.engine_cache or str(Path(tmp) / "engines")
        folder = args.checkpoints or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        from yolact_batch.core.preprocess import decode_image, preprocess

        jpegs = jpeg_bytes()
        for name in names:
            # One model failing (a config the network cannot build yet, say) is reported, not fatal.
            try:
                paths = prepare([name], runtime, folder)[name]
                config = config_for(name)
                decoded = [preprocess(decode_image(j), config) for j in jpegs[:max_batch]]
                pool = np.stack([decoded[i % len(decoded)] for i in range(max_batch)])  # few JPEGs: repeat
                common = dict(runtime=runtime, name=name, paths=paths, precision=args.precision, max_batch=max_batch,
                              engine_cache=engine_cache)  # fmt: skip
                rows, detail = measure_one(common, pool, batches, args, gpu, graphs)
                results += rows
            except Exception as exc:
                results.append({"model": name, "error": f"{type(exc).__name__}: {str(exc)[:400]}"})
    print(json.dumps({
        "bench": "gpu", "device": device if gpu else "cpu (plumbing check only)", "runtime": runtime,
        "detail": detail, "precision": args.precision, "workers": args.workers, "seconds": args.seconds,
        "score_threshold": args.score_threshold, "cpu_count": os.cpu_count(), "results": results, "targets": TARGETS,
    }))  # fmt: skip


if __name__ == "__main__":
    main()

"""The Ray Data pipeline of the ``segment`` job: the only module that imports Ray.

    work items -> read bytes (I/O tasks) -> decode + preprocess (CPU tasks)
               -> model (actor pool, GPUs) -> masks + RLE (CPU tasks) -> commit Parquet (I/O tasks)

``build_pipeline`` shows every stage and its resources. Stage functions are plain
functions of a batch; ``ModelActor`` is a plain class (``__init__`` loads the model once
per actor, ``__call__(batch) -> batch``). The columns between stages are declared in
``job.columns``. A failed image travels as a row whose ``error`` is set: every stage
passes it through untouched, and it is committed as an error row.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import pyarrow as pa
import ray

from yolact_batch.core.allocator import retain_freed_memory
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.heads import RAW_OUTPUTS, GraphHeads, PackedDetections, RawHeads, output_names
from yolact_batch.core.postprocess import Postprocessor
from yolact_batch.core.preprocess import ImageDecodeError, decode_image, decode_peak_bytes, preprocess
from yolact_batch.io.commit import OutputStore, Superseded
from yolact_batch.io.reads import fetch
from yolact_batch.io.schema import ModelRef, failure_text, results_table
from yolact_batch.io.storage import StorageOptions, StorageUnavailable
from yolact_batch.job.columns import (
    DATA,
    ERROR,
    HEIGHT,
    IMAGE_ID,
    IMAGE_URI,
    INPUT,
    META,
    WIDTH,
    decode_image_id,
    encode_image_id,
    pack_columns,
    raw_columns,
    unpack_columns,
)  # fmt: skip
from yolact_batch.job.config import Executed, ModelSpec, Plan, Resources

LISTING_ROWS = 4096


def build_pipeline(plan: Plan) -> ray.data.Dataset:
    """The whole topology: a dataset of commit results (one row per committed Parquet file)."""
    r, cfg, items = plan.config.resources, plan.config, plan.todo
    block = read_block_size(items.num_rows, r)
    pool = ray.data.ActorPoolStrategy(min_size=r.actors[0], max_size=r.actors[1])
    # Work items: a few large Arrow blocks put by the driver, split as they stream into blocks of
    # `block` rows, one per read task (per-block driver state costs far more: see benchmarks/bench_job.py).
    listing = [items.slice(start, LISTING_ROWS) for start in range(0, items.num_rows, LISTING_ROWS)]
    ds = ray.data.from_blocks(listing).repartition(target_num_rows_per_block=block)
    # I/O: the bytes of each image (threads inside the task); a failed read becomes an error row.
    ds = ds.map_batches(read_stage, fn_kwargs=dict(storage=cfg.storage), batch_format="pyarrow", num_cpus=r.io_cpus)
    # CPU: decode + preprocess to float32[3, S, S].
    ds = ds.map_batches(
        decode_stage,
        fn_kwargs=dict(config=plan.model_config, max_pixels=cfg.inference.max_pixels),
        batch_format="pyarrow",
        num_cpus=r.decode_cpus,
        memory=decode_memory(block, plan.model_config, cfg.inference.max_pixels),
    )
    # GPU (or CPU): the network, in an actor pool that loads the model once per actor.
    ds = ds.map_batches(
        ModelActor,
        fn_constructor_kwargs=dict(spec=plan.model, post=plan.postprocessor),
        compute=pool,
        batch_size=r.batch_size,
        batch_format="numpy",
        num_gpus=r.gpus_per_actor,
        num_cpus=r.cpus_per_actor,
        **_actor_memory(r),
    )
    # CPU: NMS (raw heads), mask upsample + threshold, COCO RLE -> rows of schema.ROW_SCHEMA.
    ds = ds.map_batches(
        postprocess_stage,
        fn_kwargs=dict(post=plan.postprocessor, model=plan.ref),
        batch_format="numpy",
        num_cpus=r.decode_cpus,
    )
    # I/O: one atomic Parquet file per commit_size rows.
    return ds.map_batches(
        commit_stage,
        fn_kwargs=dict(output=plan.output, run_id=plan.run_id),
        batch_size=r.commit_size,
        batch_format="pyarrow",
        num_cpus=r.io_cpus,
    )


def read_block_size(images: int, r: Resources) -> int:
    """Images per read task: ``read_block``, or fewer in a small job so that each model actor
    gets at least 4 blocks (a read block reaches the model stage as one bundle)."""
    return max(1, min(r.read_block, math.ceil(images / (4 * r.actors[1]))))


def decode_memory(images: int, config: ModelConfig, max_pixels: int) -> int:
    """Bytes a decode task of ``images`` images holds at its peak: a worker process (~200 MiB
    with OpenCV), the block's float32 inputs twice (built, then handed to Arrow), and the
    decode of the largest image it accepts (``preprocess.decode_peak_bytes``: 16 B/pixel, 2.9
    GB at the default 179 Mpx limit; lower ``--max-pixels`` to declare less).

    Declaring it also keeps decoding in its own CPU tasks: Ray Data fuses a task stage
    into the next (actor) stage only when their resource requests are equal.
    """
    return 200 * 2**20 + images * 2 * 3 * config.input_size**2 * 4 + decode_peak_bytes(max_pixels)


def _actor_memory(r: Resources) -> dict:
    return {} if r.actor_memory_gb is None else {"memory": int(r.actor_memory_gb * 2**30)}


def read_stage(items: pa.Table, *, storage: StorageOptions) -> pa.Table:
    """Work items -> ``data`` (bytes) or ``error`` per image."""
    data, errors = fetch(items, storage)
    return pa.table({
        IMAGE_URI: items[IMAGE_URI], IMAGE_ID: items[IMAGE_ID],
        DATA: pa.array(data, pa.large_binary()), ERROR: pa.array(errors, pa.string()),
    })  # fmt: skip


def decode_stage(batch: pa.Table, *, config: ModelConfig, max_pixels: int) -> dict[str, np.ndarray]:
    """Bytes -> network input ``float32[3, S, S]`` and image size; failures name their cause."""
    retain_freed_memory()  # once per worker process: each image's arrays reuse freed memory
    n, size = batch.num_rows, config.input_size
    inputs = np.zeros((n, 3, size, size), np.float32)
    heights, widths = np.zeros(n, np.int32), np.zeros(n, np.int32)
    errors = [e or "" for e in batch[ERROR].to_pylist()]
    for i, blob in enumerate(batch[DATA].to_pylist()):
        if errors[i]:
            continue
        try:
            image = decode_image(blob, max_pixels=max_pixels)
            preprocess(image, config, out=inputs[i])
            heights[i], widths[i] = image.shape[:2]
        except ImageDecodeError as exc:
            errors[i] = f"decode failed: {exc}"
        except Exception as exc:  # OpenCV/PIL internals: still one image, never the job
            errors[i] = failure_text("decode", exc)
    ids = [encode_image_id(v) for v in batch[IMAGE_ID].to_pylist()]
    return {
        IMAGE_URI: np.array(batch[IMAGE_URI].to_pylist(), dtype=object), IMAGE_ID: np.array(ids, dtype=object),
        ERROR: np.array(errors, dtype=object), HEIGHT: heights, WIDTH: widths, INPUT: inputs,
    }  # fmt: skip


class ModelActor:
    """Model stage: loads the model once per actor; ``__call__`` runs one batch of inputs.

    Raw heads leave as dense columns (zeros for rows with an ``error``, which skip the
    network); graph heads leave packed (``post.pack``; nothing for error rows).
    """

    def __init__(self, spec: ModelSpec, post: Postprocessor) -> None:
        self.backend = spec.load()
        self.post = post
        warm = self.backend(np.zeros((1, 3, spec.input_size, spec.input_size), np.float32))  # shapes; GPU warm-up
        self.raw = (
            {name: (getattr(warm, name).shape[1:], getattr(warm, name).dtype) for name in RAW_OUTPUTS}
            if isinstance(warm, RawHeads)
            else None
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, ok = len(batch[ERROR]), np.flatnonzero(batch[ERROR] == "")
        heads = self.backend(batch[INPUT][ok]) if len(ok) else None
        out = {name: batch[name] for name in META}
        if self.raw is not None:
            for name, (shape, dtype) in self.raw.items():
                out[name] = np.zeros((n, *shape), dtype)
                if heads is not None:
                    out[name][ok] = getattr(heads, name)
            return out
        packed = self._pack(heads, ok.tolist(), out) if heads is not None else {}
        return {**out, **pack_columns(packed, n, mask_scores=self.post.config.mask_rescoring)}

    def _pack(self, heads: GraphHeads, rows: list[int], out: dict[str, np.ndarray]) -> dict[int, PackedDetections]:
        """Packed detections by row; a row whose packing fails becomes an error row, alone."""
        try:
            return dict(zip(rows, self.post.pack(heads)))
        except Exception:
            packed, out[ERROR] = {}, out[ERROR].copy()
            for j, i in enumerate(rows):
                names = output_names("graph", heads.mask_scores is not None)
                one = GraphHeads(**{name: getattr(heads, name)[j : j + 1] for name in names})
                try:
                    [packed[i]] = self.post.pack(one)
                except Exception as exc:
                    out[ERROR][i] = failure_text("postprocess", exc)
            return packed


def postprocess_stage(batch: dict[str, np.ndarray], *, post: Postprocessor, model: ModelRef) -> pa.Table:
    """Heads -> rows in ``schema.ROW_SCHEMA`` (mask upsample, threshold, COCO RLE)."""
    retain_freed_memory()
    n = len(batch[ERROR])
    errors = list(batch[ERROR])
    ok = [i for i in range(n) if not errors[i]]
    results = dict(zip(ok, _detections(batch, ok, post)))
    uris = [str(uri) for uri in batch[IMAGE_URI]]
    ids = [decode_image_id(v) for v in batch[IMAGE_ID]]
    return results_table(uris, ids, [results.get(i, errors[i]) for i in range(n)], model)


def _detections(batch: dict[str, np.ndarray], ok: list[int], post: Postprocessor) -> list:
    """Detections per ok row; a row whose post-processing fails gets its error text instead."""

    def run(rows: list[int]) -> list:
        heads = raw_columns(batch, rows) if post.contract == "raw" else unpack_columns(batch, rows)
        return post(heads, [(int(batch[HEIGHT][i]), int(batch[WIDTH][i])) for i in rows])

    if not ok:
        return []
    try:
        return run(ok)
    except Exception:  # isolate the image that fails
        results = []
        for i in ok:
            try:
                results.extend(run([i]))
            except Exception as exc:
                results.append(failure_text("postprocess", exc))
        return results


def commit_stage(rows: pa.Table, *, output: OutputStore, run_id: str) -> pa.Table:
    """Commit one batch of rows as one Parquet file; returns its name and counts."""
    return pa.Table.from_pylist([output.commit(rows, run_id)])


def model_busy_s(ds: ray.data.Dataset) -> float | None:
    """Seconds the model actors spent on batches, summed over actors (Ray Data's stats of an
    executed dataset); None when Ray Data does not report them."""

    def stages(summary):  # each stage's summary holds the stages before it as parents
        yield from summary.operators_stats
        for parent in summary.parents:
            yield from stages(parent)

    try:
        busy = [s.wall_time.sum for s in stages(ds.get_stats_summary()) if "ModelActor" in s.operator_name]
    except Exception:  # a developer API of Ray Data: a metric is not worth failing the job
        return None
    return float(sum(busy)) if busy else None


def local_cpus(r: Resources) -> int:
    """Logical CPUs of the embedded Ray: the cores plus the model actors' share, so a
    pool that reserves whole CPUs never starves the read/decode tasks that feed it."""
    return (os.cpu_count() or 1) + math.ceil(r.actors[1] * r.cpus_per_actor)


def check_capacity(
    r: Resources, cluster: dict[str, float], decode_bytes: int = 0, largest_node_memory: float | None = None
) -> None:
    """Refuse a pool the cluster cannot hold while still running the CPU stages, and a decode
    task (``decode_bytes`` declared) no node has the memory for."""
    if largest_node_memory is not None and decode_bytes > largest_node_memory:
        raise RuntimeError(
            f"a decode task declares {decode_bytes / 2**30:.1f} GiB (images up to --max-pixels) and the largest node "
            f"has {largest_node_memory / 2**30:.1f} GiB for tasks: lower --max-pixels or --read-block, or add memory"
        )
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    need = r.actors[1] * r.cpus_per_actor + r.decode_cpus + r.io_cpus
    if need > cpus:
        raise RuntimeError(
            f"the cluster has {cpus:g} CPUs; {r.actors[1]} model actors x {r.cpus_per_actor:g} CPU plus one decode "
            f"({r.decode_cpus:g}) and one read task ({r.io_cpus:g}) need {need:g} and would stall: lower --actors or "
            "--cpus-per-actor"
        )
    memory = cluster.get("memory", 0.0) / 2**30
    if r.actor_memory_gb is not None and r.actors[0] * r.actor_memory_gb > memory:
        raise RuntimeError(
            f"the cluster has {memory:.1f} GiB of memory for tasks and actors; {r.actors[0]} model actors x "
            f"{r.actor_memory_gb:g} GiB do not fit: lower --actor-memory or --actors, or add nodes"
        )
    if r.gpus_per_actor and r.actors[0] * r.gpus_per_actor > gpus:
        raise RuntimeError(
            f"the cluster has {gpus:g} GPUs; {r.actors[0]} model actors x {r.gpus_per_actor:g} GPU do not fit: "
            "lower --actors or --gpus-per-actor, or use --gpus-per-actor 0 for CPU inference"
        )


def _known_cause(exc: BaseException) -> BaseException | None:
    """Our own error inside a Ray task error (``RayTaskError.cause``, ``__cause__`` chains)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, (StorageUnavailable, Superseded)) and not isinstance(exc, ray.exceptions.RayError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def execute(plan: Plan, log: Callable[[str], None]) -> Executed:
    """Run the pipeline on a cluster (joined, or a local one started here)."""
    r = plan.config.resources
    address = plan.config.address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, log_to_driver=True)
    elif started:
        ray.init(address="local", num_cpus=local_cpus(r), include_dashboard=False)
    try:
        block = read_block_size(plan.todo.num_rows, r)
        nodes = [n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")]
        check_capacity(
            r,
            ray.cluster_resources(),
            decode_memory(block, plan.model_config, plan.config.inference.max_pixels),
            max(nodes) if nodes else None,
        )
        ctx = ray.data.DataContext.get_current()
        ctx.execution_no_progress_timeout_s = r.stall_timeout_s
        ctx.enable_progress_bars = True
        ctx.max_errored_blocks = 0
        ctx.raise_original_map_exception = True  # our StorageUnavailable/Superseded, not UserCodeException
        committed = files = 0
        ds = build_pipeline(plan)
        try:
            for result in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                committed += sum(result["rows"].to_pylist())
                files += result.num_rows
        except Exception as exc:
            known = _known_cause(exc)
            if known is None:
                raise
            # One line naming the fix: not Ray's traceback, nor the retry advice it appends to the message.
            raise type(known)(str(known).split("\n")[0]) from None
        log(f"segment: committed {committed} images in {files} files")
        return Executed(committed, model_busy_s(ds))
    finally:
        if started:
            ray.shutdown()

"""The ``segment`` batch job without Ray: configuration, fail-fast checks, resume, the summary.

    config = JobConfig(input="s3://b/images/", output="s3://b/out/", model="s3://b/m.onnx")
    summary = run(config)          # lists, validates, runs yolact_batch.pipeline, writes _SUCCESS

Output layout::

    OUTPUT/_job.json                  what produced the predictions (model, settings, input) + run id
    OUTPUT/predictions/part-<h>.parquet   committed rows (``schema.ROW_SCHEMA``), one file per commit
    OUTPUT/_SUCCESS                   written last, only by a run that completed (JSON counts)

Exactly once: see ``yolact_batch.commit``. A run starts by reading the ``image_uri``
column of every committed file and lists only the rest, so a rerun after a crash or a
kill skips committed images, finishes the others, and never writes an image twice.

A different model (sha256), different settings, a different input or source options
into an existing output are refused unless ``overwrite``, which deletes the committed
predictions and starts over. ``limit`` may change between runs (a larger one extends).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from yolact_batch.commit import OutputStore
from yolact_batch.configs import ModelConfig
from yolact_batch.postprocess import Postprocessor
from yolact_batch.preprocess import DEFAULT_MAX_PIXELS
from yolact_batch.schema import ModelRef
from yolact_batch.sources import SourceOptions, list_inputs
from yolact_batch.storage import StorageOptions, read_bytes

BACKENDS = ("onnx", "tensorrt")
FORMAT_VERSION = 1


class JobConflict(ValueError):
    """The output holds predictions of another model, settings or input."""


@dataclass(frozen=True)
class InferenceOptions:
    """Model settings: the ``YolactModel`` keyword arguments that change the results."""

    sidecar: str | None = None
    score_threshold: float = 0.0
    classes: tuple[str, ...] | None = None
    mask_threshold: float = 0.5
    max_detections: int | None = None
    top_k: int | None = None
    conf_threshold: float | None = None
    iou_threshold: float | None = None
    cross_class_nms: bool | None = None
    nms: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Resources:
    """How the stages use the cluster (see README "How stage sizes were chosen").

    Attributes:
        backend: ``"onnx"`` (ONNX Runtime) or ``"tensorrt"`` (an engine built once per GPU model).
        providers: ONNX Runtime execution providers of the model actors.
        engine_cache: TensorRT: folder or URL of built engines (default ``OUTPUT/_engines``).
        batch_size: images per model call.
        actors: (min, max) model actors; equal values give a fixed pool.
        gpus_per_actor: GPUs per model actor (0: CPU inference; fractions share a GPU).
        cpus_per_actor: logical CPUs reserved per model actor.
        actor_memory_gb: memory reserved per model actor, GiB (None: none). Ray schedules by
            it, so a node only takes the actors it can hold; Ray Data's warning names the
            measured need (yolact_resnet50, batch 8, ONNX Runtime on CPU: about 2.5 GiB).
        intra_op_threads: ONNX Runtime threads per actor (None: ONNX Runtime's default).
        read_block: work items per read task (the I/O unit).
        decode_cpus: CPUs per decode+preprocess task and per mask+RLE task.
        io_cpus: CPUs per read task and per commit task (I/O bound: fractions).
        commit_size: rows per committed Parquet file (the resume unit).
        stall_timeout_s: fail when no stage makes progress for this long.
    """

    backend: str = "onnx"
    providers: tuple[str, ...] = ("cpu",)
    engine_cache: str | None = None
    batch_size: int = 8
    actors: tuple[int, int] = (1, 1)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    actor_memory_gb: float | None = None
    intra_op_threads: int | None = None
    read_block: int = 16
    decode_cpus: float = 1.0
    io_cpus: float = 0.25
    commit_size: int = 256
    stall_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {list(BACKENDS)}")
        low, high = self.actors
        if not 1 <= low <= high:
            raise ValueError(f"actors must be N or MIN-MAX with 1 <= MIN <= MAX, got {low}-{high}")
        for name in ("batch_size", "read_block", "commit_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_actor", "cpus_per_actor", "decode_cpus", "io_cpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.actor_memory_gb is not None and not self.actor_memory_gb > 0:
            raise ValueError(f"actor-memory must be > 0 GiB, got {self.actor_memory_gb}")
        if self.gpus_per_actor == 0 and self.cpus_per_actor == 0:
            raise ValueError("a model actor needs a CPU or GPU share: cpus-per-actor or gpus-per-actor > 0")


@dataclass(frozen=True)
class JobConfig:
    """Everything one ``segment`` run needs; built by the CLI, picklable.

    Attributes:
        input: URL of the images (directory/prefix, glob, manifest, tar shards, Parquet, COCO json).
        output: URL of the output directory/prefix.
        model: URL of the ONNX model.
        source: how to read ``input``.
        storage: object-storage options for every URL (credentials come from the environment).
        inference: model settings.
        resources: stage sizes.
        limit: process only the first ``limit`` images of the sorted listing.
        overwrite: replace predictions made with another model, settings or input.
        address: Ray cluster address (None: ``RAY_ADDRESS``, else a local Ray).
    """

    input: str
    output: str
    model: str
    source: SourceOptions = SourceOptions()
    storage: StorageOptions = StorageOptions()
    inference: InferenceOptions = InferenceOptions()
    resources: Resources = Resources()
    limit: int | None = None
    overwrite: bool = False
    address: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def absolute(self) -> "JobConfig":
        """Local paths made absolute: Ray workers run in other directories than the driver."""
        source = replace(self.source, image_root=_absolute(self.source.image_root))
        inference = replace(self.inference, sidecar=_absolute(self.inference.sidecar))
        return replace(self, input=_absolute(self.input), output=_absolute(self.output), model=_absolute(self.model),
                       source=source, inference=inference)


def _absolute(url: str | None) -> str | None:
    return url if url is None or "://" in url else os.path.abspath(url)


@dataclass(frozen=True)
class ModelSpec:
    """What a model actor needs to load the model itself (read once per actor, from any URL)."""

    url: str
    digest: str
    storage: StorageOptions
    sidecar: str | None
    backend: str
    providers: tuple[str, ...]
    intra_op_threads: int | None
    contract: str
    input_size: int
    batch_size: int = 8
    engine_cache: str | None = None

    def load(self):
        """Read the model, check it is the file the driver validated, build the backend."""
        from yolact_batch.metadata import load_sidecar

        blob = read_bytes(self.url, self.storage)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        if digest != self.digest:
            raise ValueError(f"{self.url}: the model changed since the job started ({self.digest} -> {digest})")
        side = load_sidecar(read_bytes(self.sidecar, self.storage).decode(), origin=self.sidecar) if self.sidecar else None
        if self.backend == "tensorrt":
            from yolact_batch.backends.tensorrt import EngineSpec, TensorRTBackend

            spec = EngineSpec(opt_batch=self.batch_size, max_batch=self.batch_size)
            return TensorRTBackend(blob, origin=self.url, metadata=side, spec=spec, cache=self.engine_cache,
                                   storage=self.storage)
        from yolact_batch.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(blob, origin=self.url, providers=self.providers, metadata=side,
                                  intra_op_threads=self.intra_op_threads)


@dataclass(frozen=True)
class Plan:
    """A validated job, ready for the pipeline: what to run and where to commit it."""

    config: JobConfig
    model: ModelSpec
    model_config: ModelConfig
    postprocessor: Postprocessor
    ref: ModelRef
    todo: pa.Table = field(repr=False)
    listed: int
    skipped: int
    output: OutputStore
    run_id: str


@dataclass(frozen=True)
class Summary:
    """Counts of the whole output after a completed run, and of this run.

    ``model_busy_s``: seconds the model actors spent on batches (summed over actors; None
    when not measured): against ``wall_s`` it says how busy the GPUs were kept.
    """

    images: int
    images_ok: int
    images_error: int
    instances: int
    files: int
    processed: int
    skipped: int
    wall_s: float
    model_busy_s: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def line(self, output: str) -> str:
        busy = f", model busy {self.model_busy_s:.1f}s" if self.model_busy_s is not None else ""
        return (
            f"segment: {self.images} images ({self.images_ok} ok, {self.images_error} errors), "
            f"{self.instances} instances in {self.files} files; this run processed {self.processed}, "
            f"skipped {self.skipped} already committed, in {self.wall_s:.1f}s ({self.images_per_s:.2f} img/s{busy}) "
            f"-> {output}"
        )


class Executed(NamedTuple):
    """What running the pipeline reports: rows committed, and the model actors' busy seconds."""

    committed: int
    model_busy_s: float | None = None


def prepare(config: JobConfig, log: Callable[[str], None] = lambda m: None) -> Plan:
    """Every check that can fail, before any cluster work: model, input, output ownership.

    Raises:
        FileNotFoundError, ValueError (``InputError``, ``JobConflict``): with one clear message.
    """
    from yolact_batch.model import YolactModel

    config = config.absolute()
    inf, res = config.inference, config.resources
    # The driver may have no GPU: it validates the model with the CPU provider.
    model = YolactModel(
        config.model, providers=("cpu",), sidecar=inf.sidecar, storage=config.storage, batch_size=res.batch_size,
        intra_op_threads=1, score_threshold=inf.score_threshold, classes=inf.classes,
        mask_threshold=inf.mask_threshold, max_detections=inf.max_detections, top_k=inf.top_k,
        conf_threshold=inf.conf_threshold, iou_threshold=inf.iou_threshold, cross_class_nms=inf.cross_class_nms,
        nms=inf.nms, max_pixels=inf.max_pixels,
    )
    _check_providers(res.providers)
    items = list_inputs(config.input, config.source, config.storage, limit=config.limit)
    log(f"segment: {items.num_rows} images listed from {config.input}")
    output = OutputStore(config.output, config.storage)
    identity = {
        "input": config.input, "source": asdict(config.source), "model": model.ref.to_dict(),
        "settings": asdict(model.settings), "max_pixels": inf.max_pixels,
    }
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as read back
    try:
        run_id = _claim(output, identity, config.overwrite)
    except OSError as exc:
        raise RuntimeError(f"output {config.output}: cannot be written ({type(exc).__name__}: {exc})") from None
    removed = output.remove_temporaries()
    if removed:
        log(f"segment: removed {removed} temporary files of an interrupted run")
    committed = output.committed()
    duplicates = output.remove_duplicates(committed, run_id)
    if duplicates:
        log(f"segment: removed {duplicates} rows committed twice by an interrupted run")
        committed = output.committed()
    done = pc.is_in(items["image_uri"], value_set=committed["image_uri"])
    todo = items.filter(pc.invert(done))
    spec = ModelSpec(
        url=config.model, digest=model.ref.digest, storage=config.storage, sidecar=inf.sidecar,
        backend=res.backend, providers=res.providers, intra_op_threads=res.intra_op_threads,
        contract=model.metadata.contract, input_size=model.config.input_size, batch_size=res.batch_size,
        engine_cache=_absolute(res.engine_cache) or config.output.rstrip("/") + "/_engines",
    )
    return Plan(config, spec, model.config, model.postprocessor, model.ref, todo, items.num_rows,
                items.num_rows - todo.num_rows, output, run_id)


def _check_providers(providers: tuple[str, ...]) -> None:
    from yolact_batch.backends.onnxruntime import PROVIDERS

    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown or not providers:
        raise ValueError(f"unknown execution provider(s) {unknown}; expected some of {sorted(PROVIDERS)}")


def _claim(output: OutputStore, identity: dict, overwrite: bool) -> str:
    """Refuse another job's output (unless overwrite), then make this run the current one."""
    previous = output.read_manifest()
    if previous is not None and not overwrite:
        old = {k: previous.get(k) for k in identity}
        if old != identity:
            changed = ", ".join(f"{k} {_short(a)} -> {_short(b)}" for k, a, b in _differences(old, identity))
            raise JobConflict(
                f"{output.url} holds predictions of another job ({changed}). Use another --output, "
                "or --overwrite to delete those predictions and start over."
            )
    if overwrite:
        output.clear_predictions()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    output.remove("_SUCCESS")
    output.write_json("_job.json", {"format_version": FORMAT_VERSION, **identity, "run_id": run_id,
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return run_id


def _differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old, new) for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) < 200 else text[:197] + "..."


def finish(plan: Plan, processed: int, wall_s: float, model_busy_s: float | None = None) -> Summary:
    """Check every listed image is committed exactly once, then write ``_SUCCESS``."""
    committed = plan.output.committed()
    uris = committed["image_uri"]
    distinct = pc.count_distinct(uris).as_py()
    if distinct != committed.num_rows:
        raise RuntimeError(f"{plan.output.url}: {committed.num_rows - distinct} images are committed twice")
    missing = plan.todo.num_rows - int(pc.sum(pc.is_in(plan.todo["image_uri"], value_set=uris)).as_py() or 0)
    if missing:
        raise RuntimeError(f"{plan.output.url}: {missing} images were not committed; rerun the same command")
    ok = int(pc.sum(pc.equal(committed["status"], "ok")).as_py() or 0)
    meta = committed.schema.metadata
    summary = Summary(
        images=committed.num_rows, images_ok=ok, images_error=committed.num_rows - ok,
        instances=int(meta[b"instances"]), files=int(meta[b"files"]), processed=processed,
        skipped=plan.skipped, wall_s=wall_s, model_busy_s=model_busy_s,
    )
    plan.output.write_json("_SUCCESS", {
        **asdict(summary), "images_per_s": round(summary.images_per_s, 3), "run_id": plan.run_id,
        "model": plan.ref.to_dict(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return summary


def run(config: JobConfig, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> Summary:
    """Run the job to completion: validate, process what is not committed yet, write ``_SUCCESS``."""
    start = time.perf_counter()
    plan = prepare(config, log)
    executed = Executed(0)
    if plan.todo.num_rows:
        log(f"segment: {plan.skipped} of {plan.listed} images already committed; processing {plan.todo.num_rows}")
        from yolact_batch.pipeline import execute

        executed = execute(plan, log)
    else:
        log(f"segment: all {plan.listed} images already committed; nothing to run")
    summary = finish(plan, executed.committed, time.perf_counter() - start, executed.model_busy_s)
    log(summary.line(config.output))
    return summary

"""The ``segment`` batch job without Ray: fail-fast checks, resume, the summary.

    summary = run(JobConfig(input="s3://b/images/", output="s3://b/out/", model="s3://b/m.onnx"))
    # lists, validates, runs yolact_batch.job.pipeline, writes _SUCCESS

The output layout is ``io.commit.OutputStore``'s.

Exactly once: see ``yolact_batch.io.commit``. A run starts by reading the ``image_uri``
column of every committed file and lists only the rest, so a rerun after a crash or a
kill skips committed images, finishes the others, and never writes an image twice.

A different model (sha256), different settings, a different input or source options
into an existing output are refused unless ``overwrite``, which deletes the committed
predictions and starts over. ``limit`` may change between runs (a larger one extends).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Callable

import pyarrow.compute as pc

from yolact_batch.io.commit import OutputStore
from yolact_batch.io.sources import list_inputs
from yolact_batch.job.config import Executed, JobConfig, ModelSpec, Plan, absolute_url

FORMAT_VERSION = 1


class JobConflict(ValueError):
    """The output holds predictions of another model, settings or input."""


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


def prepare(config: JobConfig, log: Callable[[str], None] = lambda m: None) -> Plan:
    """Every check that can fail, before any cluster work: model, input, output ownership.

    Raises:
        FileNotFoundError, ValueError (``InputError``, ``JobConflict``): with one clear message.
    """
    from yolact_batch.model import YolactModel

    config = config.absolute()
    res = config.resources
    # The driver may have no GPU: it validates the model on the CPU (ONNX Runtime, or torch in fp32).
    model = YolactModel(
        config.model, request=config.inference, sidecar=config.sidecar, storage=config.storage,
        backend=res.backend.on_cpu(),
    )  # fmt: skip
    items = list_inputs(config.input, config.source, config.storage, limit=config.limit)
    log(f"segment: {items.num_rows} images listed from {config.input}")
    output = OutputStore(config.output, config.storage)
    identity = {
        "input": config.input, "source": asdict(config.source), "model": model.ref.to_dict(),
        "settings": asdict(model.settings), "max_pixels": config.inference.max_pixels,
    }  # fmt: skip
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
    engine_cache = absolute_url(res.backend.engine_cache) or config.output.rstrip("/") + "/_engines"
    spec = ModelSpec(
        url=config.model, digest=model.ref.digest, storage=config.storage, sidecar=config.sidecar,
        backend=replace(res.backend, engine_cache=engine_cache), input_size=model.config.input_size,
        request=config.inference,
    )  # fmt: skip
    return Plan(config, spec, model.config, model.postprocessor, model.ref, todo, items.num_rows,
                items.num_rows - todo.num_rows, output, run_id)  # fmt: skip


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
    output.clear_success()
    output.write_manifest(
        {
            "format_version": FORMAT_VERSION,
            **identity,
            "run_id": run_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
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
        images=committed.num_rows,
        images_ok=ok,
        images_error=committed.num_rows - ok,
        instances=int(meta[b"instances"]),
        files=int(meta[b"files"]),
        processed=processed,
        skipped=plan.skipped,
        wall_s=wall_s,
        model_busy_s=model_busy_s,
    )
    plan.output.write_success(
        {
            **asdict(summary),
            "images_per_s": round(summary.images_per_s, 3),
            "run_id": plan.run_id,
            "model": plan.ref.to_dict(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    return summary


def run(config: JobConfig, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> Summary:
    """Run the job to completion: validate, process what is not committed yet, write ``_SUCCESS``."""
    start = time.perf_counter()
    plan = prepare(config, log)
    executed = Executed(0)
    if plan.todo.num_rows:
        log(f"segment: {plan.skipped} of {plan.listed} images already committed; processing {plan.todo.num_rows}")
        from yolact_batch.job.pipeline import execute

        executed = execute(plan, log)
    else:
        log(f"segment: all {plan.listed} images already committed; nothing to run")
    summary = finish(plan, executed.committed, time.perf_counter() - start, executed.model_busy_s)
    log(summary.line(config.output))
    return summary

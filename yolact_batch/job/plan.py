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
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import pyarrow.compute as pc

from yolact_batch.io.commit import OutputStore
from yolact_batch.io.sources import list_inputs
from yolact_batch.io.storage import filesystem
from yolact_batch.job.config import Executed, JobConfig, ModelSpec, Plan, absolute_url

FORMAT_VERSION = 1


class JobConflict(ValueError):
    """The output holds predictions of another model, settings or input."""


@dataclass(frozen=True)
class Summary:
    """Counts of the whole output after a completed run, and of this run.

    ``model_busy_s``: seconds the model actors spent on batches (summed over actors; None
    when not measured): against ``wall_s`` it says how busy the GPUs were kept.
    ``not_read``: entries of the input that are not images to read, by reason:
    ``{reason: {"count": n, "examples": [names]}}`` (``io.inventory.Skipped.to_dict``).
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
    not_read: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def line(self, output: str) -> str:
        busy = f", model busy {self.model_busy_s:.1f}s" if self.model_busy_s is not None else ""
        return (
            f"segment: {self.images} images ({self.images_ok} ok, {self.images_error} errors), "
            f"{self.instances} instances in {self.files} files; this run processed {self.processed}, "
            f"skipped {self.skipped} already committed, in {self.wall_s:.1f}s ({self.images_per_s:.2f} img/s{busy}) "
            f"-> {output}" + (f"; input entries not read: {_not_read_line(self.not_read)}" if self.not_read else "")
        )


def _not_read_line(not_read: dict) -> str:
    return ", ".join(f"{v['count']} {reason} ({', '.join(v['examples'])})" for reason, v in sorted(not_read.items()))


def prepare(config: JobConfig, log: Callable[[str], None] = lambda m: None) -> Plan:
    """Every check that can fail, before any cluster work: model, input, output ownership.

    Raises:
        FileNotFoundError, ValueError (``InputError``, ``JobConflict``, ``OutputBusy``, ``CorruptOutput``, a model
        that is a folder, an output that is a file, an input inside the output), ``StorageUnavailable``: each with
        one line naming the file and the fix.
    """
    from yolact_batch.model import YolactModel

    config = config.absolute()
    _check_places(config)
    res = config.resources
    # The driver may have no GPU: it validates the model on the CPU (ONNX Runtime, or torch in fp32).
    model = YolactModel(
        config.model, request=config.inference, sidecar=config.sidecar, storage=config.storage,
        backend=res.backend.on_cpu(),
    )  # fmt: skip
    listing = list_inputs(config.input, config.source, config.storage, limit=config.limit, exclude=(config.output,))
    items = listing.items
    log(f"segment: {items.num_rows} images listed from {config.input}")
    if listing.skipped.total:
        log(f"segment: {listing.skipped.total} input entries not read: {listing.skipped.line()}")
    if listing.ids_dropped:
        log(f"segment: {listing.ids_dropped} images get no image_id: their file names give an id another image has")
    output = OutputStore(config.output, config.storage)
    output.check_not_busy()
    identity = {
        "input": config.input, "source": asdict(config.source), "model": model.ref.to_dict(),
        "settings": asdict(model.settings), "max_pixels": config.inference.max_pixels,
    }  # fmt: skip
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as read back
    try:
        run_id = _claim(output, identity, config.overwrite)
    except OSError as exc:
        raise RuntimeError(f"output {config.output}: cannot be written ({type(exc).__name__}: {exc})") from None
    lease = output.hold_lease(run_id)
    try:
        return _plan(config, model, items, listing.skipped, output, run_id, lease, log)
    except BaseException:
        lease.release()
        raise


def _plan(config, model, items, not_read, output, run_id, lease, log) -> Plan:
    """The rest of ``prepare``, once this run owns the output: repair, resume, the model spec."""
    res = config.resources
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
                items.num_rows - todo.num_rows, output, run_id, not_read, lease)  # fmt: skip


def _check_places(config: JobConfig) -> None:
    """The model is a file, the output is not, and the input is not inside the output."""
    fs, path = filesystem(config.model, config.storage)
    if fs.isdir(path):
        raise ValueError(f"model {config.model} is a directory; --model takes the .onnx file")
    fs, path = filesystem(config.output, config.storage)
    if fs.isfile(path):
        raise ValueError(
            f"output {config.output} is a file; --output takes a folder or prefix (it will hold "
            "predictions/, _job.json and _SUCCESS)"
        )
    if (config.input.rstrip("/") + "/").startswith(config.output.rstrip("/") + "/"):
        raise ValueError(
            f"input {config.input} is inside the output {config.output}; the job would read its own "
            "files: choose an --output outside the input"
        )


def _claim(output: OutputStore, identity: dict, overwrite: bool) -> str:
    """Refuse another job's output (unless overwrite), then make this run the current one."""
    previous = output.read_manifest()
    if previous is not None and not overwrite:
        old = {k: previous.get(k) for k in identity}
        if _differences(old, identity):  # a setting added since, at its default (None), is no difference
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
        not_read=plan.not_read.to_dict(),
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
    try:
        executed = Executed(0)
        if plan.todo.num_rows:
            log(f"segment: {plan.skipped} of {plan.listed} images already committed; processing {plan.todo.num_rows}")
            from yolact_batch.job.pipeline import execute

            executed = execute(plan, log)
        else:
            log(f"segment: all {plan.listed} images already committed; nothing to run")
        summary = finish(plan, executed.committed, time.perf_counter() - start, executed.model_busy_s)
    finally:
        plan.lease.release()
    log(summary.line(config.output))
    return summary

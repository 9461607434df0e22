"""The ``segment`` job's types: its configuration (frozen, picklable, built by the CLI or by
hand), the validated ``Plan`` the pipeline runs, and what running it reports.

    config = JobConfig(input="s3://b/images/", output="s3://b/out/", model="s3://b/m.onnx")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import pyarrow as pa

from yolact_batch.backends.factory import Backend, BackendOptions, open_backend
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.metadata import load_sidecar
from yolact_batch.core.postprocess import Postprocessor
from yolact_batch.core.settings import InferenceRequest
from yolact_batch.io.commit import OutputStore
from yolact_batch.io.inventory import Skipped
from yolact_batch.io.schema import ModelRef
from yolact_batch.io.sources import SourceOptions
from yolact_batch.io.storage import StorageOptions, model_digest, read_bytes


@dataclass(frozen=True)
class Resources:
    """How the stages use the cluster (see README "How stage sizes were chosen").

    Attributes:
        backend: how the model actors run the model (runtime, providers, threads, images
            per call; a TensorRT ``engine_cache`` of None means ``OUTPUT/_engines``).
        actors: (min, max) model actors; equal values give a fixed pool.
        gpus_per_actor: GPUs per model actor (0: CPU inference; fractions share a GPU).
        cpus_per_actor: logical CPUs reserved per model actor.
        actor_memory_gb: memory reserved per model actor, GiB (None: none). Ray schedules by
            it, so a node only takes the actors it can hold; Ray Data's warning names the
            measured need (yolact_resnet50, batch 8, ONNX Runtime on CPU: about 2.5 GiB).
        read_block: work items per read task (the I/O unit).
        decode_cpus: CPUs per decode+preprocess task and per mask+RLE task.
        io_cpus: CPUs per read task and per commit task (I/O bound: fractions).
        commit_size: rows per committed Parquet file (the resume unit).
        stall_timeout_s: fail when no stage makes progress for this long.
    """

    backend: BackendOptions = BackendOptions()
    actors: tuple[int, int] = (1, 1)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    actor_memory_gb: float | None = None
    read_block: int = 16
    decode_cpus: float = 1.0
    io_cpus: float = 0.25
    commit_size: int = 256
    stall_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        low, high = self.actors
        if not 1 <= low <= high:
            raise ValueError(f"actors must be N or MIN-MAX with 1 <= MIN <= MAX, got {low}-{high}")
        for name in ("read_block", "commit_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_actor", "cpus_per_actor", "decode_cpus", "io_cpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.actor_memory_gb is not None and not self.actor_memory_gb > 0:
            raise ValueError(f"actor-memory must be > 0 GiB, got {self.actor_memory_gb}")
        if self.gpus_per_actor == 0 and self.cpus_per_actor == 0:
            raise ValueError("a model actor needs a CPU or GPU share: cpus-per-actor or gpus-per-actor > 0")
        if self.backend.backend == "torch":
            # Ray shows an actor only the GPUs it reserved: the device follows --gpus-per-actor.
            device = self.backend.device
            if device == "auto":
                device = "cuda" if self.gpus_per_actor > 0 else "cpu"
                object.__setattr__(self, "backend", replace(self.backend, device=device))
            elif device.startswith("cuda") and self.gpus_per_actor == 0:
                raise ValueError(f"--device {device} needs --gpus-per-actor > 0: Ray gives an actor no GPU otherwise")

    @property
    def batch_size(self) -> int:
        return self.backend.batch_size


@dataclass(frozen=True)
class JobConfig:
    """Everything one ``segment`` run needs; built by the CLI, picklable.

    Attributes:
        input: URL of the images (directory/prefix, glob, manifest, tar shards, Parquet, COCO json).
        output: URL of the output directory/prefix.
        model: URL of the model file.
        sidecar: URL of a JSON/TOML description for an ONNX without yolact_batch metadata.
        source: how to read ``input``.
        storage: object-storage options for every URL (credentials come from the environment).
        inference: the detection settings.
        resources: stage sizes.
        limit: process only the first ``limit`` images of the sorted listing.
        overwrite: replace predictions made with another model, settings or input.
        address: Ray cluster address (None: ``RAY_ADDRESS``, else a local Ray).
    """

    input: str
    output: str
    model: str
    sidecar: str | None = None
    source: SourceOptions = SourceOptions()
    storage: StorageOptions = StorageOptions()
    inference: InferenceRequest = InferenceRequest()
    resources: Resources = Resources()
    limit: int | None = None
    overwrite: bool = False
    address: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def absolute(self) -> "JobConfig":
        """Local paths made absolute: Ray workers run in other directories than the driver."""
        source = replace(self.source, image_root=absolute_url(self.source.image_root))
        return replace(
            self, input=absolute_url(self.input), output=absolute_url(self.output), model=absolute_url(self.model),
            sidecar=absolute_url(self.sidecar), source=source,
        )  # fmt: skip


def absolute_url(url: str | None) -> str | None:
    return url if url is None or "://" in url else os.path.abspath(url)


@dataclass(frozen=True)
class ModelSpec:
    """What a model actor needs to load the model itself (read once per actor, from any URL)."""

    url: str
    digest: str
    storage: StorageOptions
    sidecar: str | None
    backend: BackendOptions
    input_size: int
    request: InferenceRequest = InferenceRequest()

    def load(self) -> Backend:
        """Read the model, check it is the file the driver validated, open the backend."""
        blob = read_bytes(self.url, self.storage)
        digest = model_digest(blob)
        if digest != self.digest:
            raise ValueError(f"{self.url}: the model changed since the job started ({self.digest} -> {digest})")
        side = (
            load_sidecar(read_bytes(self.sidecar, self.storage).decode(), origin=self.sidecar) if self.sidecar else None
        )
        return open_backend(
            blob, origin=self.url, options=self.backend, metadata=side, storage=self.storage, request=self.request
        )


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
    not_read: Skipped = field(default_factory=Skipped)  # entries of the input not read, by reason
    lease: object = field(default=None, repr=False, compare=False)  # io.commit.Lease of this driver; run() releases it


class Executed(NamedTuple):
    """What running the pipeline reports: rows committed, and the model actors' busy seconds."""

    committed: int
    model_busy_s: float | None = None

"""The one way to open a model: ``open_backend`` picks the runtime by name and imports it lazily.

Both the Python API (``YolactModel``) and the job's model actors call it, so a backend is
added here once (its module beside this one, one entry in ``BACKENDS``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence

import numpy as np

from yolact_batch.backends.onnxruntime import PROVIDERS
from yolact_batch.core.heads import GraphHeads, RawHeads
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.settings import InferenceRequest
from yolact_batch.io.storage import StorageOptions

BACKENDS = ("onnx", "tensorrt", "torch")


class Backend(Protocol):
    """What every backend offers: its model's metadata, and heads for a batch of inputs."""

    metadata: ModelMetadata

    def __call__(self, images: np.ndarray) -> RawHeads | GraphHeads: ...


@dataclass(frozen=True)
class BackendOptions:
    """How to run a model.

    Attributes:
        backend: ``"onnx"`` (ONNX Runtime), ``"tensorrt"`` (an engine built once per GPU model)
            or ``"torch"`` (PyTorch, from a ``.pth`` checkpoint or our ``.pt`` model file).
        providers: ONNX Runtime execution providers by short name, in priority order.
        intra_op_threads: ONNX Runtime threads, or torch's CPU threads (None: the runtime's default).
        batch_size: images per call the runtime should be ready for (TensorRT profiles).
        engine_cache: folder or fsspec URL of built TensorRT engines (None: build every time);
            the ONNX Runtime TensorRT provider keeps a URL's engines in a local folder instead.
        config: torch: the config name of an official ``.pth`` (None: inferred from the weights;
            our ``.pt`` model files carry their own).
        device: torch: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: torch: the network's ``"fp32"``, ``"fp16"`` or ``"bf16"`` (head in fp32).
        compile: torch: ``"off"``, ``"cuda-graphs"`` or ``"compile"`` (see ``TorchOptions``).
    """

    backend: str = "onnx"
    providers: tuple[str, ...] = ("cpu",)
    intra_op_threads: int | None = None
    batch_size: int = 8
    engine_cache: str | None = None
    config: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    compile: str = "off"

    def __post_init__(self) -> None:
        object.__setattr__(self, "providers", tuple(self.providers))
        check_backend(self.backend, self.providers)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.torch_options()  # refuses a bad device, precision or compile mode now, not in an actor

    def torch_options(self):
        """The ``TorchOptions`` these options describe (the torch backend's own type)."""
        from yolact_batch.backends.torch import TorchOptions

        return TorchOptions(device=self.device, precision=self.precision, compile=self.compile,
                            threads=self.intra_op_threads)  # fmt: skip

    def on_cpu(self) -> "BackendOptions":
        """These options for a check on a machine that may have no GPU (the job's driver): the
        torch backend on the CPU in fp32, any other through ONNX Runtime's CPU provider."""
        if self.backend == "torch":
            return replace(self, device="cpu", precision="fp32", compile="off", intra_op_threads=1)
        return BackendOptions(intra_op_threads=1, batch_size=self.batch_size)


def check_backend(backend: str, providers: Sequence[str]) -> None:
    """Refuse an unknown backend or provider name, listing the valid ones."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown or not providers:
        raise ValueError(
            f"unknown execution provider {', '.join(map(repr, unknown)) or '(none given)'}; expected some of {sorted(PROVIDERS)}"
        )


def open_backend(
    model: bytes,
    *,
    origin: str,
    options: BackendOptions = BackendOptions(),
    metadata: ModelMetadata | None = None,
    storage: StorageOptions = StorageOptions(),
    request: InferenceRequest = InferenceRequest(),
) -> Backend:
    """Load ``model`` (the file's bytes) into the runtime ``options.backend`` names.

    Args:
        model: the model file's bytes.
        origin: where the bytes came from, named in every error.
        options: which runtime and how to run it.
        metadata: a sidecar's description, for a file without yolact_batch metadata.
        storage: object-storage options for ``options.engine_cache``.
        request: the detection settings asked for; the torch backend builds its graph head
            with them (the exported models have theirs built in and ignore it).
    """
    if options.backend == "torch":
        from yolact_batch.backends.torch import open_torch

        return open_torch(
            model,
            origin=origin,
            config=options.config,
            options=options.torch_options(),
            request=request,
            metadata=metadata,
        )
    if options.backend == "tensorrt":
        from yolact_batch.backends.tensorrt import EngineSpec, TensorRTBackend

        spec = EngineSpec(opt_batch=options.batch_size, max_batch=options.batch_size)
        return TensorRTBackend(
            model, origin=origin, metadata=metadata, spec=spec, cache=options.engine_cache, storage=storage
        )
    from yolact_batch.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        model, origin=origin, providers=options.providers, metadata=metadata,
        intra_op_threads=options.intra_op_threads, batch_size=options.batch_size,
        trt_cache_dir=_local_folder(options.engine_cache) if "tensorrt" in options.providers else None,
    )  # fmt: skip


def _local_folder(cache: str | None) -> str | None:
    """ONNX Runtime's TensorRT provider caches in a local folder only: a URL cache becomes a
    folder of this machine (each node builds its engines once)."""
    if cache is None or "://" not in cache or cache.startswith("file://"):
        return cache.removeprefix("file://") if cache else None
    import hashlib
    import os
    import tempfile

    return os.path.join(tempfile.gettempdir(), "yolact_batch_ort_trt", hashlib.sha256(cache.encode()).hexdigest()[:16])

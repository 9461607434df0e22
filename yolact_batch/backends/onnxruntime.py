"""ONNX Runtime backend: CPU, CUDA or TensorRT execution providers, chosen by name."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from yolact_batch.backends.contract import check_model_io, inspect_onnx, unloadable
from yolact_batch.backends.engine_plan import EngineSpec
from yolact_batch.backends.ort_gpu import OrtIoBinding, tensorrt_provider_options, uses_device
from yolact_batch.core.heads import GraphHeads, RawHeads, output_names
from yolact_batch.core.metadata import ModelMetadata

# ONNX ``DeformConv`` (YOLACT++'s deformable convs) has CPU and CUDA kernels from this release on
# (microsoft/onnxruntime#27393); older releases fail at session creation with NOT_IMPLEMENTED.
DEFORM_CONV_MIN_VERSION = (1, 30)

# Execution providers by short name, the ``providers`` of ``BackendOptions``.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def provider_options(
    name: str,
    model: bytes = b"",
    *,
    origin: str = "model",
    metadata: ModelMetadata | None = None,
    batch_size: int = 8,
    trt_cache_dir: str | None = None,
) -> tuple[str, dict]:
    """ONNX Runtime provider name and options for one of ``PROVIDERS``' short names.

    The TensorRT provider gets one batch profile up to ``batch_size`` and its engine and timing
    caches in ``trt_cache_dir`` (a local folder: the provider writes it itself); it reads the
    model's input name and size from ``model`` first (with the ``onnx`` package).
    """
    if name not in PROVIDERS:
        raise ValueError(f"unknown execution provider {name!r}; expected one of {sorted(PROVIDERS)}")
    options: dict = {}
    if name == "cuda":
        # Exhaustive cuDNN search costs seconds per new shape; the heuristic is within a few %.
        options = {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True}
    elif name == "tensorrt":
        facts = inspect_onnx(model, origin=origin, metadata=metadata)
        spec = EngineSpec(opt_batch=batch_size, max_batch=batch_size)
        options = tensorrt_provider_options(
            facts.input_name, facts.metadata.config.input_size, spec, cache_dir=trt_cache_dir
        )
    return PROVIDERS[name], options


def check_deform_conv_support(model: bytes, version: str, *, origin: str) -> None:
    """Raise RuntimeError, naming the version needed, when ``model`` has ``DeformConv`` nodes and
    ONNX Runtime ``version`` cannot run them (op types are plain strings in the protobuf)."""
    parts = [int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit()]
    if tuple(parts) >= DEFORM_CONV_MIN_VERSION or b"DeformConv" not in model:
        return
    need = ".".join(map(str, DEFORM_CONV_MIN_VERSION))
    raise RuntimeError(
        f"{origin}: the model uses ONNX DeformConv (YOLACT++ deformable convs), which ONNX Runtime runs from "
        f"version {need} on; this is onnxruntime {version}: pip install 'onnxruntime>={need}' "
        f"(or 'onnxruntime-gpu>={need}'), or re-export it with `yolact-batch export --deform-conv decomposed`"
    )


class OnnxRuntimeBackend:
    """Runs an exported YOLACT ONNX model and returns the typed head contract.

    Args:
        model: the ONNX file's bytes.
        origin: where the bytes came from, used in every error message.
        providers: short provider names in priority order (``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        metadata: how to run the model when the file carries no yolact_batch metadata
            (a sidecar); ignored when it does.
        intra_op_threads: ONNX Runtime threads per session (None: ONNX Runtime's default).
        batch_size: the largest batch the TensorRT provider's profile covers.
        trt_cache_dir: local folder of the TensorRT provider's engine and timing caches
            (None: none, every session builds its engines again).
    """

    def __init__(
        self,
        model: bytes,
        *,
        origin: str,
        providers: Sequence[str] = ("cpu",),
        metadata: ModelMetadata | None = None,
        intra_op_threads: int | None = None,
        batch_size: int = 8,
        trt_cache_dir: str | None = None,
    ) -> None:
        import onnxruntime as ort

        check_deform_conv_support(model, ort.__version__, origin=origin)
        available = set(ort.get_available_providers())
        chosen = [
            provider_options(
                p, model, origin=origin, metadata=metadata, batch_size=batch_size, trt_cache_dir=trt_cache_dir
            )
            for p in providers
        ]
        missing = [name for name, _ in chosen if name not in available]
        if missing:
            raise RuntimeError(
                f"execution provider(s) {missing} are not available in this onnxruntime "
                f"(available: {sorted(available)}); for GPUs install the 'gpu' extra "
                "(onnxruntime-gpu) instead of 'cpu' (the two packages overwrite each other)"
            )
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise unloadable(origin, exc) from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = check_model_io(
            ModelMetadata.from_onnx_props(props, origin=origin), metadata,
            inputs=[i.name for i in self.session.get_inputs()], outputs=[o.name for o in self.session.get_outputs()],
            origin=origin,
        )  # fmt: skip
        self._outputs = output_names(self.metadata.contract, self.metadata.config.mask_rescoring)
        self._input = self.session.get_inputs()[0].name
        # On CUDA, bind inputs/outputs explicitly instead of letting run() copy through defaults.
        self._binding = OrtIoBinding(self.session) if uses_device(self.session.get_providers()) == "cuda" else None

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, images: np.ndarray) -> RawHeads | GraphHeads:
        """Run a batch ``float32[B, 3, S, S]`` and return its heads."""
        feed = np.ascontiguousarray(images, np.float32)
        if self._binding is not None:
            arrays = self._binding(feed, list(self._outputs))
        else:
            arrays = self.session.run(list(self._outputs), {self._input: feed})
        cls = GraphHeads if self.metadata.contract == "graph" else RawHeads
        return cls(*arrays)

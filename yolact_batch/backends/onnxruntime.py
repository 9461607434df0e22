"""ONNX Runtime backend: CPU, CUDA or TensorRT execution providers, chosen by name."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from yolact_batch.backends.ort_gpu import OrtIoBinding, uses_device
from yolact_batch.heads import GRAPH_OUTPUTS, INPUT_NAME, RAW_OUTPUTS, GraphHeads, RawHeads
from yolact_batch.metadata import ModelMetadata

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def provider_options(name: str, *, trt_cache_dir: str | None = None, fp16: bool = True) -> tuple[str, dict]:
    """ONNX Runtime provider name and options for one of ``PROVIDERS``' short names."""
    if name not in PROVIDERS:
        raise ValueError(f"unknown execution provider {name!r}; expected one of {sorted(PROVIDERS)}")
    options: dict = {}
    if name == "cuda":
        # Exhaustive cuDNN search costs seconds per new shape; the heuristic is within a few %.
        options = {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True}
    elif name == "tensorrt":
        options = {"trt_fp16_enable": fp16, "trt_engine_cache_enable": trt_cache_dir is not None}
        if trt_cache_dir:
            options["trt_engine_cache_path"] = trt_cache_dir
    return PROVIDERS[name], options


class OnnxRuntimeBackend:
    """Runs an exported YOLACT ONNX model and returns the typed head contract.

    Args:
        model: the ONNX file's bytes.
        origin: where the bytes came from, used in every error message.
        providers: short provider names in priority order (``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        metadata: how to run the model when the file carries no yolact_batch metadata
            (a sidecar); ignored when it does.
        intra_op_threads: ONNX Runtime threads per session (None: ONNX Runtime's default).
    """

    def __init__(
        self,
        model: bytes,
        *,
        origin: str,
        providers: Sequence[str] = ("cpu",),
        metadata: ModelMetadata | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        chosen = [provider_options(p) for p in providers]
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
            raise ValueError(
                f"{origin}: not a loadable ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]}). "
                "Is the file complete? Re-download or re-export it with `yolact-batch export`."
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_onnx_props(props, origin=origin) or metadata
        if self.metadata is None:
            raise ValueError(
                f"{origin}: the model has no yolact_batch metadata. Pass a sidecar file describing it, "
                'e.g. {"config": "yolact_base", "contract": "raw"} (JSON or TOML).'
            )
        self._outputs = GRAPH_OUTPUTS if self.metadata.contract == "graph" else RAW_OUTPUTS
        names = [o.name for o in self.session.get_outputs()]
        inputs = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(self._outputs) or len(inputs) != 1:
            raise ValueError(
                f"{origin}: outputs {names} / inputs {inputs} do not match the {self.metadata.contract!r} "
                f"contract (expected outputs {list(self._outputs)} and one input)"
            )
        self._input = inputs[0]
        if self._input != INPUT_NAME and self.metadata.contract == "graph":
            raise ValueError(f"{origin}: graph-contract models take input {INPUT_NAME!r}, found {self._input!r}")
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

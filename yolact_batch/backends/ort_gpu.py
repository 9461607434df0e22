"""ONNX Runtime on GPUs: IO binding and the TensorRT execution provider's profile and caches.

``OrtIoBinding`` runs a session through an IO binding: the input is bound from host memory,
outputs are produced on the execution provider's device (no per-run host allocation inside
the graph) and copied back once. With ``device="cpu"`` it runs on any onnxruntime, which is
how it is tested here; ``device="cuda"`` needs onnxruntime-gpu.

``tensorrt_provider_options`` gives the TensorRT execution provider one optimisation profile
over the batch axis (so every batch size reuses one engine instead of rebuilding per shape),
its engine and timing caches, and FP16.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from yolact_batch.backends.engine_plan import EngineSpec

DEVICES = ("cpu", "cuda")


class OrtIoBinding:
    """Runs ``session`` (one input) through a reusable IO binding and returns host arrays.

    Args:
        session: an ``onnxruntime.InferenceSession``.
        device: where outputs are produced: ``"cuda"`` for the CUDA/TensorRT providers,
            ``"cpu"`` for the CPU provider.
        device_id: CUDA device index.
    """

    def __init__(self, session, *, device: str = "cuda", device_id: int = 0) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        inputs = [i.name for i in session.get_inputs()]
        if len(inputs) != 1:
            raise ValueError(f"OrtIoBinding runs single-input models, this one takes {inputs}")
        self.session = session
        self.device, self.device_id = device, device_id
        self.input_name = inputs[0]
        self.output_names = tuple(o.name for o in session.get_outputs())
        self._binding = session.io_binding()

    def __call__(self, images: np.ndarray, output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Outputs ``output_names`` (default: all, in model order) for ``images``, as numpy arrays."""
        names = tuple(output_names) if output_names is not None else self.output_names
        unknown = set(names) - set(self.output_names)
        if unknown:
            raise ValueError(f"unknown output(s) {sorted(unknown)}; the model has {list(self.output_names)}")
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(images, np.float32))
        for name in names:
            binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


def uses_device(providers: Sequence[str]) -> str:
    """Where a session's outputs live: ``"cuda"`` when its first provider is CUDA or TensorRT."""
    first = providers[0] if providers else "CPUExecutionProvider"
    return "cuda" if first in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"


def tensorrt_provider_options(
    input_name: str, input_size: int, spec: EngineSpec = EngineSpec(), *, cache_dir: str | None = None
) -> dict[str, object]:
    """TensorRT execution provider options: one batch profile from ``spec``, caches in ``cache_dir``.

    ``cache_dir`` is a local folder (the provider writes it itself; it is not an fsspec URL).
    """
    shapes = [f"{input_name}:{b}x3x{input_size}x{input_size}" for b in spec.profile]
    options: dict[str, object] = {
        "trt_fp16_enable": spec.precision == "fp16",
        "trt_max_workspace_size": spec.workspace_bytes,
        "trt_profile_min_shapes": shapes[0],
        "trt_profile_opt_shapes": shapes[1],
        "trt_profile_max_shapes": shapes[2],
        "trt_engine_cache_enable": cache_dir is not None,
        "trt_timing_cache_enable": cache_dir is not None,
    }
    if cache_dir is not None:
        options["trt_engine_cache_path"] = cache_dir
        options["trt_timing_cache_path"] = cache_dir
    return options

"""PyTorch backend: our network and the graph-contract head in torch, on the CPU or a CUDA GPU.

    backend = TorchBackend(Path("yolact_base.pth").read_bytes(), origin="yolact_base.pth",
                           config=get_config("yolact_base"), options=TorchOptions(device="cuda", precision="fp16"))
    heads = backend(images)            # float32[B, 3, S, S] -> GraphHeads (RawHeads for greedy NMS)

Weights are an official dbolya/yolact ``.pth`` (config passed, or inferred from the tensors)
or our model file (``torchnet.model_file``, which carries its config). The network runs in
``precision`` (fp32, fp16 or bf16); the softmax and the graph head (decode, Fast NMS, masks,
crop) always run in float32, so low precision moves the heads, never the NMS arithmetic. The
results are the graph contract the ONNX graph exports return, so everything after the model
is shared. Greedy NMS has no graph form: with ``nms="greedy"`` the backend returns raw
heads and the host runs NMS, as for a raw ONNX export.

On the CPU a batch is one forward under ``torch.inference_mode``. On CUDA
(``backends.torch_cuda``, imported only then) uploads use pinned host memory and
non-blocking copies on a side stream, so that in ``stream()`` the next batch's upload
overlaps this batch's compute; CUDA graphs or ``torch.compile`` per batch size are options,
off by default until measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import numpy as np

from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.heads import GraphHeads, RawHeads
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.settings import DetectSettings, InferenceRequest

DEVICES = ("auto", "cpu", "cuda")  # "cuda:N" names one GPU
PRECISIONS = ("fp32", "fp16", "bf16")
COMPILE_MODES = ("off", "cuda-graphs", "compile")
INSTALL_HINT = (
    "install PyTorch (https://pytorch.org/get-started/locally/; the 'torch' extra: pip install 'yolact-batch[torch]')"
)


@dataclass(frozen=True)
class TorchOptions:
    """How the torch backend runs (none of these change what is detected beyond precision).

    Attributes:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` (CUDA when torch sees a GPU,
            else the CPU; a Ray actor given a GPU sees exactly that one).
        precision: dtype of the network's weights and activations: ``"fp32"`` (matches the
            golden reference), ``"fp16"`` or ``"bf16"`` (for GPUs; on the CPU they run, slowly,
            which is how their tolerances are checked without one). The head is float32 always.
        channels_last: NHWC memory layout for the convolutions; None: on CUDA only (on the
            CPU the default layout reproduces the reference bit for bit).
        compile: ``"off"`` (eager), ``"cuda-graphs"`` (one captured graph per batch size,
            CUDA only) or ``"compile"`` (``torch.compile``, one specialisation per batch size).
        threads: CPU intra-op threads (None: torch's default). Sets the process-wide value.
    """

    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool | None = None
    compile: str = "off"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not (self.device.startswith("cuda:") and self.device[5:].isdigit()):
            raise ValueError(f"torch device must be one of {list(DEVICES)} or 'cuda:N', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"torch precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"torch compile must be one of {list(COMPILE_MODES)}, got {self.compile!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def import_torch():
    """The ``torch`` module, or ImportError naming the package and the fix."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"the torch backend needs PyTorch ({exc}); {INSTALL_HINT}") from exc
    return torch


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` or ``"cpu"``; a CUDA device torch cannot use is an error saying why."""
    torch = import_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"this torch {torch.__version__} has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise RuntimeError(f"torch device {device!r} requested but {build}; use --device cpu (or auto)")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"torch device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


class TorchBackend:
    """Runs YOLACT in PyTorch and returns the typed head contract.

    Args:
        model: the checkpoint's bytes (official ``.pth`` or our model file).
        origin: where the bytes came from, used in every error message.
        config: the model config for an official ``.pth`` (None: inferred from the weights);
            must agree with our model file's own config when given for one.
        request: the detection settings asked for: its NMS settings (``request.detect_overrides()``)
            replace the defaults (the model file's, else the reference's) in the graph head.
        contract: ``"graph"`` (detections out) or ``"raw"`` (heads out, NMS on the host);
            None: graph, unless the NMS asked for is ``"greedy"``, which has no graph form.
        options: device, precision and execution options.
    """

    def __init__(
        self,
        model: bytes,
        *,
        origin: str,
        config: ModelConfig | None = None,
        request: InferenceRequest = InferenceRequest(),
        contract: str | None = None,
        options: TorchOptions = TorchOptions(),
    ) -> None:
        torch = import_torch()
        from yolact_batch.torchnet.inference import InferenceProgram
        from yolact_batch.torchnet.model_file import load_network, read_weights, resolve_config

        self.device = resolve_device(options.device)
        on_cuda = self.device.startswith("cuda")
        if options.compile == "cuda-graphs" and not on_cuda:
            raise ValueError("compile='cuda-graphs' needs a CUDA device; on the CPU use 'off' or 'compile'")
        if options.threads:
            torch.set_num_threads(options.threads)
        weights = read_weights(model, origin=origin)
        config = resolve_config(weights, config)
        defaults = weights.metadata.detect if weights.metadata is not None else DetectSettings()
        detect = replace(defaults, **request.detect_overrides())
        if contract is None:
            contract = "raw" if detect.nms == "greedy" else "graph"
        elif contract == "graph" and detect.nms != "fast":
            raise ValueError(f"the graph contract runs Fast NMS only, got nms={detect.nms!r}; use contract='raw'")
        if contract == "raw" and getattr(config, "mask_rescoring", False):
            raise ValueError(
                f"{origin}: config {config.name!r} re-scores masks, which the torch backend does in its graph head "
                "only: use Fast NMS (the default), or export the raw contract to ONNX"
            )
        self.metadata = ModelMetadata(config=config, contract=contract, detect=detect, source=origin)
        self.options = options
        program = InferenceProgram(
            load_network(weights, config),
            detect if contract == "graph" else None,
            dtype=getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[options.precision]),
            channels_last=on_cuda if options.channels_last is None else options.channels_last,
        )
        if on_cuda:
            from yolact_batch.backends.torch_cuda import CudaRunner

            self._runner = CudaRunner(program, self.device, compile=options.compile)
        else:
            self._runner = CpuRunner(program, compile=options.compile)
        self._empty_outputs: list[np.ndarray] | None = None

    @property
    def input_size(self) -> int:
        return self.metadata.config.input_size

    def __call__(self, images: np.ndarray) -> RawHeads | GraphHeads:
        """Run a batch ``float32[B, 3, S, S]`` and return its heads."""
        return next(self.stream([images]))

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[RawHeads | GraphHeads]:
        """Heads for each batch in order; on CUDA the next batch uploads while this one computes."""
        cls = GraphHeads if self.metadata.contract == "graph" else RawHeads
        for arrays in self._runner.stream(self._check(b) for b in batches):
            yield cls(*(self._empty() if arrays is None else arrays))

    def _empty(self) -> list[np.ndarray]:
        """Outputs for no images: shapes from one zero image, run once (convolutions refuse batch 0)."""
        if self._empty_outputs is None:
            side = self.input_size
            [one] = self._runner.stream([np.zeros((1, 3, side, side), np.float32)])
            self._empty_outputs = [np.zeros((0, *a.shape[1:]), a.dtype) for a in one]
        return self._empty_outputs

    def _check(self, images: np.ndarray) -> np.ndarray:
        side = self.input_size
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (3, side, side):
            raise ValueError(f"images: expected shape (*, 3, {side}, {side}), got {tuple(images.shape)}")
        return np.require(images, np.float32, ("C", "W"))  # torch.from_numpy needs writable memory

    def close(self) -> None:
        """Release the network and device memory (the object is unusable afterwards)."""
        runner, self._runner = getattr(self, "_runner", None), None
        if runner is not None:
            runner.close()

    def __enter__(self) -> "TorchBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_torch(
    model: bytes,
    *,
    origin: str,
    config: str | None,
    options: TorchOptions,
    request: InferenceRequest,
    metadata: ModelMetadata | None,
) -> TorchBackend:
    """``open_backend``'s torch branch: the config by name, else a sidecar's (``metadata``), else
    from the weights."""
    from yolact_batch.core.configs import get_config

    chosen = get_config(config) if config else (metadata.config if metadata is not None else None)
    return TorchBackend(model, origin=origin, config=chosen, request=request, options=options)


class CpuRunner:
    """Batches through ``program`` on the CPU: one forward each under ``torch.inference_mode``."""

    def __init__(self, program, *, compile: str = "off") -> None:
        import torch

        self._torch = torch
        self._program = torch.compile(program, dynamic=False) if compile == "compile" else program

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[list[np.ndarray]]:
        torch = self._torch
        for images in batches:
            if not len(images):
                yield None  # TorchBackend fills in the empty outputs
                continue
            with torch.inference_mode():
                outputs = self._program(torch.from_numpy(images))
            yield [o.numpy() for o in outputs]

    def close(self) -> None:
        self._program = None

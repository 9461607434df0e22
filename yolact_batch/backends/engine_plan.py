"""Pure-Python planning for GPU engines: specs, batch chunks, buffer sizes, precision.

Nothing here imports TensorRT or CUDA, so every decision the TensorRT backend takes (how a
batch is cut to the profile, how many bytes each pinned and device buffer needs, which
layers stay FP32) is tested on CPU machines; ``engine_cache`` does the same for the cache.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np

from yolact_batch.core.heads import INPUT_NAME, MASK_SCORES, RAW_OUTPUTS, output_names
from yolact_batch.core.metadata import ModelMetadata

PRECISIONS = ("fp16", "fp32")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class EngineSpec:
    """How to build a TensorRT engine: precision and the one optimisation profile over the batch axis.

    Attributes:
        precision: ``"fp16"`` (FP16 kernels allowed; the graph contract's decode/NMS/mask head
            stays FP32) or ``"fp32"`` (FP32 everywhere, TF32 off, for parity checks).
        min_batch: smallest batch the engine accepts; smaller chunks are zero-padded up to it.
        opt_batch: the batch TensorRT tunes its kernels for.
        max_batch: largest batch the engine accepts; device and pinned buffers are sized for it.
        workspace_bytes: TensorRT builder workspace limit.
    """

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 32
    workspace_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"EngineSpec.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                "EngineSpec needs 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        if self.workspace_bytes < 1:
            raise ValueError(f"EngineSpec.workspace_bytes must be positive, got {self.workspace_bytes}")

    @property
    def profile(self) -> tuple[int, int, int]:
        """``(min, opt, max)`` batch sizes."""
        return self.min_batch, self.opt_batch, self.max_batch

    def input_shapes(self, input_size: int) -> tuple[tuple[int, ...], ...]:
        """``(min, opt, max)`` shapes of the ``images`` input for ``IOptimizationProfile.set_shape``."""
        return tuple((b, 3, input_size, input_size) for b in self.profile)


# ---------------------------------------------------------------------------------------------
# Batches


class Chunk(NamedTuple):
    """Images ``[start, stop)`` of a call, run as a batch of ``run_batch`` (>= stop - start: zero-padded)."""

    start: int
    stop: int
    run_batch: int


def split_batches(n: int, max_batch: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``n`` images, each at most ``max_batch`` long (full ones first)."""
    if n < 0:
        raise ValueError(f"number of images must be >= 0, got {n}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [(start, min(start + max_batch, n)) for start in range(0, n, max_batch)]


def plan_batches(n: int, spec: EngineSpec) -> list[Chunk]:
    """Cut ``n`` images into chunks the engine's profile accepts, padding short ones up to ``min_batch``."""
    return [Chunk(a, b, max(b - a, spec.min_batch)) for a, b in split_batches(n, spec.max_batch)]


def pipelined(
    items: Iterable[T], submit: Callable[[T, int], object], finish: Callable[[object], R], depth: int
) -> Iterator[R]:
    """Results of ``finish(submit(item, slot))`` in order, with up to ``depth`` items in flight.

    ``submit`` enqueues work on slot ``i % depth`` and returns at once; ``finish`` waits for it.
    A slot is only reused after the item that last used it has been finished, so with two slots
    the copies and compute of one chunk overlap the host work of the previous one.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    in_flight: deque = deque()
    try:
        for i, item in enumerate(items):
            if len(in_flight) == depth:
                yield finish(in_flight.popleft())
            in_flight.append(submit(item, i % depth))
        while in_flight:
            yield finish(in_flight.popleft())
    finally:  # closed early or failed: wait for the work still queued before its slots are reused
        while in_flight:
            finish(in_flight.popleft())


# ---------------------------------------------------------------------------------------------
# Tensors and buffers


class TensorSpec(NamedTuple):
    """One engine I/O tensor: shape without the batch axis, numpy dtype, and whether it is an input."""

    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool


def contract_tensors(metadata: ModelMetadata, input_name: str = INPUT_NAME) -> dict[str, TensorSpec]:
    """The I/O tensors a model of this metadata has (input first, outputs in contract order).

    ``input_name`` differs from ``images`` only for third-party raw-head models.
    """
    config = metadata.config
    side, m, s = config.proto_size, config.num_prototypes, config.input_size
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    tensors = {input_name: TensorSpec((3, s, s), f32, True)}
    if metadata.contract == "raw":
        p = config.priors.num_priors
        shapes = {"loc": (p, 4), "conf": (p, config.num_classes), "mask": (p, m), "proto": (side, side, m)}
        tensors.update({name: TensorSpec(shapes[name], f32, False) for name in RAW_OUTPUTS})
    else:
        k = metadata.detect.max_detections
        kinds = {
            "boxes": ((k, 4), f32), "scores": ((k,), f32), "classes": ((k,), i64),
            "masks": ((k, side, side), f32), "num_detections": ((), i64), MASK_SCORES: ((k,), f32),
        }  # fmt: skip
        names = output_names("graph", config.mask_rescoring)
        tensors.update({name: TensorSpec(*kinds[name], False) for name in names})
    return tensors


def plan_buffers(
    io_shapes: Mapping[str, Sequence[int | None]], dtypes: Mapping[str, np.dtype | type], max_batch: int
) -> dict[str, int]:
    """Bytes each tensor's buffer needs at ``max_batch``.

    Args:
        io_shapes: full shapes as an engine reports them, batch axis first and dynamic
            (``-1`` or ``None``; a fixed batch axis must equal ``max_batch``).
        dtypes: numpy dtype of each tensor.
        max_batch: the profile's largest batch.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = {}
    for name, shape in io_shapes.items():
        if name not in dtypes:
            raise ValueError(f"no dtype given for tensor {name!r}")
        shape = tuple(shape)
        if not shape:
            raise ValueError(f"tensor {name!r} has no batch axis (shape ())")
        batch, rest = shape[0], shape[1:]
        if any(d is None or d < 0 for d in rest):
            raise ValueError(
                f"tensor {name!r} has dynamic non-batch dimensions {shape}; only the batch axis may be dynamic"
            )
        if batch not in (None, -1) and batch != max_batch:
            raise ValueError(f"tensor {name!r} has a fixed batch of {batch}, cannot hold max_batch {max_batch}")
        sizes[name] = max_batch * math.prod(rest) * np.dtype(dtypes[name]).itemsize
    return sizes


def check_engine_io(
    found: Mapping[str, tuple[bool, Sequence[int]]], expected: Mapping[str, TensorSpec], origin: str
) -> None:
    """Raise ValueError unless the engine's I/O (name -> (is_input, shape)) matches the contract."""
    if set(found) != set(expected):
        raise ValueError(
            f"{origin}: engine I/O tensors {sorted(found)} do not match the contract's {sorted(expected)}; "
            "was the engine built from a different model?"
        )
    for name, spec in expected.items():
        is_input, shape = found[name]
        if is_input != spec.is_input or tuple(shape)[1:] != spec.shape:
            kind = "input" if spec.is_input else "output"
            raise ValueError(
                f"{origin}: engine tensor {name!r} is {'an input' if is_input else 'an output'} of shape "
                f"{tuple(shape)}; the contract expects an {kind} of shape (batch, {', '.join(map(str, spec.shape))})"
            )


def mask_copy_ranges(num_detections: Sequence[int], k: int, mask_bytes: int) -> list[tuple[int, int]]:
    """``(byte offset, byte count)`` copies that bring only each image's valid masks across PCIe.

    The graph contract's ``masks`` is ``[B, K, Hp, Wp]`` with the first ``num_detections[b]``
    rows of image ``b`` valid (the rest are zeros). Adjacent ranges are merged into one copy.
    """
    ranges: list[tuple[int, int]] = []
    for b, n in enumerate(num_detections):
        n = int(n)
        if not 0 <= n <= k:
            raise ValueError(f"num_detections[{b}] = {n} is outside [0, {k}]")
        if n == 0:
            continue
        offset, size = b * k * mask_bytes, n * mask_bytes
        if ranges and ranges[-1][0] + ranges[-1][1] == offset:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + size)
        else:
            ranges.append((offset, size))
    return ranges


# ---------------------------------------------------------------------------------------------
# Precision


class PrecisionPlan(NamedTuple):
    """Builder flags to set and clear, and whether to pin the graph head's layers to FP32."""

    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]
    pin_head_fp32: bool


def precision_plan(precision: str, contract: str, *, has_fp16_flag: bool, model_has_fp16: bool) -> PrecisionPlan:
    """How to reach ``precision`` with this TensorRT.

    TensorRT 10 has ``BuilderFlag.FP16`` (weak typing): set it, keep the graph contract's head
    (decode, NMS, mask assembly) in FP32 with precision constraints. TensorRT 11 removed it:
    networks are strongly typed, so FP16 comes only from an ONNX that already holds FP16 tensors.
    TF32 is cleared in both cases so the FP32 layers are true FP32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32" or (model_has_fp16 and not has_fp16_flag):
        return PrecisionPlan((), ("TF32",), False)
    if not has_fp16_flag:
        raise ValueError(
            "this TensorRT has no BuilderFlag.FP16 (TensorRT 11 builds strongly typed networks only), "
            "so an FP16 engine needs a mixed-precision ONNX: convert the model with ModelOpt AutoCast "
            "(python -m modelopt.onnx.autocast --onnx_path model.onnx --low_precision_type fp16 --keep_io_types "
            "--nodes_to_exclude '/head/.*'), or build with precision 'fp32'"
        )
    return PrecisionPlan(("FP16", "PREFER_PRECISION_CONSTRAINTS"), ("TF32",), contract == "graph")


def pinned_to_fp32(layer_name: str) -> bool:
    """Whether a layer of a graph-contract network stays FP32 in an FP16 engine.

    Our exporter names the network's nodes ``/network/...`` and the detection head's
    ``/head/...``; everything outside the network (head, priors and other constants) stays FP32,
    so box decode, score thresholds, IoU and the mask matmul see the same numbers as in FP32.
    """
    return not layer_name.startswith("/network/")

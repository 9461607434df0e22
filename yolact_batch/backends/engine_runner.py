"""Running a deserialized TensorRT engine: pinned host and device buffers, streams, slots.

Each of ``slots`` execution contexts owns a CUDA stream, pinned host buffers and device
buffers sized for the profile's max batch; chunks of a call alternate between slots so one
chunk's copies and compute overlap the host work of the previous one. For the graph contract
only the small detection tensors and each image's valid masks are copied back. Nothing here
imports TensorRT or CUDA: the engine and cuda-python's runtime module are passed in, so the
logic runs on CPU against stand-ins (``tests/backends/test_engine_runner.py``).
"""

from __future__ import annotations

import ctypes
import math
from typing import Iterable, Iterator

import numpy as np

from yolact_batch.backends.engine_plan import (
    Chunk,
    EngineSpec,
    check_engine_io,
    contract_tensors,
    mask_copy_ranges,
    pipelined,
    plan_batches,
    plan_buffers,
)
from yolact_batch.core.heads import GraphHeads, RawHeads, output_names
from yolact_batch.core.metadata import ModelMetadata


def cuda_check(result, what: str):
    """Unpack a cuda-python ``(error, *values)`` result; RuntimeError naming ``what`` unless success (0)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {getattr(err, 'name', err)} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def host_array(address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A writable numpy view of ``prod(shape)`` elements of ``dtype`` at host ``address`` (pinned memory)."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class _Slot:
    """One execution context with its stream, pinned host buffers and device buffers (max batch)."""

    def __init__(
        self, engine, cudart, shapes: dict[str, tuple[int, ...]], dtypes: dict, nbytes: dict[str, int]
    ) -> None:
        self.cudart = cudart
        self.host_ptrs: list[int] = []
        self.device_ptrs: list[int] = []
        self.stream = None
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        try:
            for name, size in nbytes.items():
                host = cuda_check(cudart.cudaMallocHost(size), f"cudaMallocHost({size} bytes for {name!r})")
                self.host_ptrs.append(host)
                self.host[name] = host_array(host, shapes[name], dtypes[name])
                device = cuda_check(cudart.cudaMalloc(size), f"cudaMalloc({size} bytes for {name!r})")
                self.device_ptrs.append(device)
                self.device[name] = device
                if not self.context.set_tensor_address(name, device):
                    raise RuntimeError(f"TensorRT refused the device address for tensor {name!r}")
        except Exception:
            self.free()
            raise

    def copy(self, dst: int, src: int, size: int, to_device: bool) -> None:
        kind = self.cudart.cudaMemcpyKind
        kind = kind.cudaMemcpyHostToDevice if to_device else kind.cudaMemcpyDeviceToHost
        cuda_check(self.cudart.cudaMemcpyAsync(dst, src, size, kind, self.stream), "cudaMemcpyAsync")

    def synchronize(self) -> None:
        cuda_check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def free(self) -> None:
        cudart = self.cudart
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)
        self.context = None
        for ptr in self.device_ptrs:
            cudart.cudaFree(ptr)
        self.host = {}
        for ptr in self.host_ptrs:
            cudart.cudaFreeHost(ptr)
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
        self.device_ptrs, self.host_ptrs, self.stream = [], [], None


class EngineRunner:
    """Runs a deserialized engine: ``slots`` contexts, each with a stream and buffers for ``spec.max_batch``.

    Args:
        engine: a TensorRT ``ICudaEngine`` (anything with ``create_execution_context()``).
        cudart: cuda-python's runtime module.
        io: each I/O tensor's ``(is_input, shape as the engine reports it, numpy dtype)``.
        metadata: the model's metadata (contract, input size).
        spec: the engine's batch profile (chunks are cut and padded to it).
        input_name: the engine's input tensor.
        origin: names the model in error messages.
        device: CUDA device index, made current on every call.
        slots: execution contexts used in turn.
    """

    def __init__(
        self, engine, cudart, io: dict[str, tuple[bool, tuple, np.dtype]], metadata: ModelMetadata, spec: EngineSpec,
        *, input_name: str, origin: str, device: int = 0, slots: int = 2,
    ) -> None:  # fmt: skip
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self._engine = engine  # outlives the contexts made from it
        self._cudart, self.metadata, self.spec, self.device = cudart, metadata, spec, device
        self._input = input_name
        self._tensors = contract_tensors(metadata, input_name=input_name)
        self._slots: list[_Slot] = []
        check_engine_io({n: (is_input, shape) for n, (is_input, shape, _) in io.items()}, self._tensors, origin)
        self._dtypes = {n: np.dtype(dtype) for n, (_, _, dtype) in io.items()}
        self._nbytes = plan_buffers({n: shape for n, (_, shape, _) in io.items()}, self._dtypes, spec.max_batch)
        full = {n: (spec.max_batch, *self._tensors[n].shape) for n in io}
        cuda_check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        try:
            for _ in range(slots):
                self._slots.append(_Slot(engine, cudart, full, self._dtypes, self._nbytes))
        except Exception:
            self.close()
            raise

    @property
    def outputs(self) -> tuple[str, ...]:
        return output_names(self.metadata.contract, self.metadata.config.mask_rescoring)

    def __call__(self, images: np.ndarray) -> RawHeads | GraphHeads:
        """Run a batch ``float32[B, 3, S, S]`` (any ``B``, cut to the profile) and return its heads."""
        images = self._check(images)
        cuda_check(self._cudart.cudaSetDevice(self.device), "cudaSetDevice")  # the calling thread's device
        chunks = plan_batches(len(images), self.spec)
        submit = lambda chunk, slot: self._submit(images, chunk, slot)  # noqa: E731
        parts = list(pipelined(chunks, submit, self._finish, len(self._slots)))
        return self._heads(parts)

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[RawHeads | GraphHeads]:
        """Heads for each batch in order, the next batch's copies and compute overlapping this one's return.

        Every batch must hold at most ``spec.max_batch`` images.
        """

        def submit(images: np.ndarray, slot: int):
            images = self._check(images)
            if len(images) > self.spec.max_batch:
                raise ValueError(f"stream() takes batches of at most {self.spec.max_batch} images, got {len(images)}")
            return self._submit(images, plan_batches(len(images), self.spec)[0], slot) if len(images) else None

        cuda_check(self._cudart.cudaSetDevice(self.device), "cudaSetDevice")
        finish = lambda job: [] if job is None else [self._finish(job)]  # noqa: E731
        for part in pipelined(batches, submit, finish, len(self._slots)):
            yield self._heads(part)

    def _check(self, images: np.ndarray) -> np.ndarray:
        side = self.metadata.config.input_size
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (3, side, side):
            raise ValueError(f"images: expected shape (*, 3, {side}, {side}), got {tuple(images.shape)}")
        return images

    def _submit(self, images: np.ndarray, chunk: Chunk, index: int):
        """Enqueue H2D copy, inference and the first D2H copies of one chunk on slot ``index``."""
        slot = self._slots[index]
        n, run = chunk.stop - chunk.start, chunk.run_batch
        staged = slot.host[self._input]
        np.copyto(staged[:n], images[chunk.start : chunk.stop], casting="same_kind")
        staged[n:run] = 0
        per_image = self._nbytes[self._input] // self.spec.max_batch
        slot.copy(slot.device[self._input], staged.ctypes.data, run * per_image, to_device=True)
        shape = (run, *self._tensors[self._input].shape)
        if not slot.context.set_input_shape(self._input, shape):
            raise RuntimeError(f"TensorRT rejected input shape {shape} (batch profile {self.spec.profile})")
        if not slot.context.execute_async_v3(int(slot.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; its log above says why")
        for name in self.outputs:
            if name != "masks":  # graph masks follow in _finish, once num_detections is known
                per_image = self._nbytes[name] // self.spec.max_batch
                slot.copy(slot.host[name].ctypes.data, slot.device[name], n * per_image, to_device=False)
        return slot, n

    def _finish(self, job) -> dict[str, np.ndarray]:
        """Wait for a chunk, copy back its valid masks (graph contract) and return host copies of its outputs."""
        slot, n = job
        slot.synchronize()
        out = {
            name: slot.host[name][:n].astype(self._tensors[name].dtype, copy=True)
            for name in self.outputs
            if name != "masks"
        }
        if self.metadata.contract == "graph":
            spec = self._tensors["masks"]
            mask_bytes = math.prod(spec.shape[1:]) * self._dtypes["masks"].itemsize
            counts = out["num_detections"]
            for offset, size in mask_copy_ranges(counts, spec.shape[0], mask_bytes):
                slot.copy(slot.host["masks"].ctypes.data + offset, slot.device["masks"] + offset, size, to_device=False)
            slot.synchronize()
            masks = np.zeros((n, *spec.shape), spec.dtype)  # calloc: rows past num_detections cost nothing
            for b, count in enumerate(counts):
                masks[b, :count] = slot.host["masks"][b, :count]
            out["masks"] = masks
        return out

    def _heads(self, parts: list[dict[str, np.ndarray]]) -> RawHeads | GraphHeads:
        arrays = []
        for name in self.outputs:
            spec = self._tensors[name]
            if not parts:
                arrays.append(np.zeros((0, *spec.shape), spec.dtype))
            else:
                arrays.append(parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts]))
        return (GraphHeads if self.metadata.contract == "graph" else RawHeads)(*arrays)

    def close(self) -> None:
        """Free the device and pinned buffers, streams and contexts."""
        for slot in self._slots:
            slot.free()
        self._slots = []

"""TensorRT backend: our ONNX built into a cached engine, run with pinned buffers and two streams.

    backend = TensorRTBackend(blob, origin="m.onnx", spec=EngineSpec(max_batch=32), cache="s3://bucket/engines")
    heads = backend(images)            # float32[B, 3, S, S], any B -> GraphHeads | RawHeads

The engine is built once per (ONNX digest, TensorRT version, GPU model, precision, profile)
and stored in ``cache`` (a folder or any fsspec URL), so a cluster builds it once. At run
time each of ``slots`` execution contexts owns a CUDA stream, pinned host buffers and device
buffers sized for ``spec.max_batch``; chunks of a call alternate between slots so one chunk's
copies and compute overlap the host work of the previous one. For the graph contract only
the small detection tensors and each image's valid masks (``num_detections[b]`` rows) are
copied back. No torch at inference.

Written against the documented TensorRT 10/11 Python API (tensor-name I/O,
``execute_async_v3``) and cuda-python's runtime bindings. The pure decisions (cache keys,
batch plans, buffer sizes, cache validity) live in ``engine_plan`` and are tested on CPU.
"""

from __future__ import annotations

import ctypes
import math
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from yolact_batch.backends.engine_cache import EngineCache, cache_fields, engine_cache_key, load_or_build, model_digest
from yolact_batch.backends.engine_plan import (
    Chunk,
    EngineSpec,
    check_engine_io,
    contract_tensors,
    mask_copy_ranges,
    pinned_to_fp32,
    pipelined,
    plan_batches,
    plan_buffers,
    precision_plan,
)
from yolact_batch.heads import GRAPH_OUTPUTS, INPUT_NAME, RAW_OUTPUTS, GraphHeads, RawHeads
from yolact_batch.metadata import ModelMetadata
from yolact_batch.storage import StorageOptions

__all__ = ["EngineRunner", "EngineSpec", "TensorRTBackend", "build_engine", "inspect_onnx"]

INSTALL_HINT = (
    "install the 'gpu' extra on a CUDA machine: pip install 'yolact-batch[gpu]' "
    "(or only the 'tensorrt' extra: tensorrt, cuda-python, onnx)"
)


def import_tensorrt():
    """The ``tensorrt`` module (>= 10), or ImportError naming the package and the fix."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ImportError(f"the TensorRT backend needs the 'tensorrt' package ({exc}); {INSTALL_HINT}") from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise ImportError(
            f"the TensorRT backend needs 'tensorrt' >= 10 (tensor-name I/O, execute_async_v3), "
            f"found {trt.__version__}; {INSTALL_HINT}"
        )
    return trt


def import_cudart():
    """cuda-python's CUDA runtime bindings, or ImportError naming ``cuda-python`` and the fix."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError as exc:
            raise ImportError(f"the TensorRT backend needs the 'cuda-python' package ({exc}); {INSTALL_HINT}") from exc
    return cudart


def cuda_check(result, what: str):
    """Unpack a cuda-python ``(error, *values)`` result; RuntimeError naming ``what`` unless success (0)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {getattr(err, 'name', err)} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


# ---------------------------------------------------------------------------------------------
# The ONNX side (needs only the onnx package)


class OnnxFacts(NamedTuple):
    """What the backend needs to know about an ONNX before building from it."""

    metadata: ModelMetadata
    input_name: str
    has_fp16: bool


def inspect_onnx(model: bytes, *, origin: str, metadata: ModelMetadata | None = None) -> OnnxFacts:
    """Metadata (the file's, else ``metadata``), input name and FP16 use of an ONNX, validated.

    Raises ValueError, naming ``origin``, for unparsable bytes, missing metadata, or I/O that
    does not match the contract (the same rules as the ONNX Runtime backend).
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            f"the TensorRT backend reads model metadata with the 'onnx' package ({exc}); {INSTALL_HINT}"
        ) from exc
    try:
        proto = onnx.load_model_from_string(model)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ValueError(
            f"{origin}: not a loadable ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]}). "
            "Is the file complete? Re-download or re-export it with `yolact-batch export`."
        ) from None
    props = {p.key: p.value for p in proto.metadata_props}
    found = ModelMetadata.from_onnx_props(props, origin=origin) or metadata
    if found is None:
        raise ValueError(
            f"{origin}: the model has no yolact_batch metadata. Pass a sidecar file describing it, "
            'e.g. {"config": "yolact_base", "contract": "raw"} (JSON or TOML).'
        )
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    outputs = [o.name for o in proto.graph.output]
    expected = GRAPH_OUTPUTS if found.contract == "graph" else RAW_OUTPUTS
    if sorted(outputs) != sorted(expected) or len(inputs) != 1:
        raise ValueError(
            f"{origin}: outputs {outputs} / inputs {inputs} do not match the {found.contract!r} "
            f"contract (expected outputs {list(expected)} and one input)"
        )
    if found.contract == "graph" and inputs[0] != INPUT_NAME:
        raise ValueError(f"{origin}: graph-contract models take input {INPUT_NAME!r}, found {inputs[0]!r}")
    has_fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    return OnnxFacts(found, inputs[0], has_fp16)


# ---------------------------------------------------------------------------------------------
# Building


def build_engine(
    model: bytes, spec: EngineSpec, *, contract: str, input_name: str, input_size: int, model_has_fp16: bool = False,
    trt=None, logger=None,
) -> bytes:  # fmt: skip
    """Serialized TensorRT engine for ``model`` with ``spec``'s precision and batch profile (minutes on a GPU)."""
    trt = trt or import_tensorrt()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    plan = precision_plan(
        spec.precision, contract, has_fp16_flag=hasattr(trt.BuilderFlag, "FP16"), model_has_fp16=model_has_fp16
    )
    for flag in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear_flags:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    if plan.pin_head_fp32:
        _pin_head_fp32(network, trt)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *spec.input_shapes(input_size))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine; its log above says why")
    return bytes(serialized)


def _pin_head_fp32(network, trt) -> None:
    """Ask for FP32 compute and outputs in every float layer outside ``/network/`` (the graph head)."""
    floats = (trt.float32, trt.float16)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not pinned_to_fp32(layer.name):
            continue
        float_outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if float_outputs:
            layer.precision = trt.float32
            for j in float_outputs:
                layer.set_output_type(j, trt.float32)


def gpu_name(cudart, device: int) -> str:
    """``"<model name> sm<major><minor>"`` of a CUDA device, the GPU part of the cache key."""
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0")[0].decode(errors="replace")
    return f"{str(name).strip()} sm{props.major}{props.minor}"


# ---------------------------------------------------------------------------------------------
# Running


def host_array(address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A writable numpy view of ``prod(shape)`` elements of ``dtype`` at host ``address`` (pinned memory)."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class _Slot:
    """One execution context with its stream, pinned host buffers and device buffers (max batch)."""

    def __init__(self, engine, cudart, shapes: dict[str, tuple[int, ...]], dtypes: dict, nbytes: dict[str, int]) -> None:
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
        return GRAPH_OUTPUTS if self.metadata.contract == "graph" else RAW_OUTPUTS

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


class TensorRTBackend:
    """Runs an exported YOLACT ONNX model as a TensorRT engine and returns the typed head contract.

    Construction fails in seconds when ``tensorrt`` or ``cuda-python`` is missing; building an
    engine that is not cached takes minutes. Not thread-safe: one backend per actor/thread.

    Args:
        model: the ONNX file's bytes.
        origin: where the bytes came from, used in every error message.
        metadata: how to run the model when the file carries no yolact_batch metadata.
        spec: precision and batch profile of the engine.
        cache: folder or fsspec URL holding built engines (None: build every time).
        storage: object-storage options for ``cache``.
        device: CUDA device index (0 under Ray, which sets ``CUDA_VISIBLE_DEVICES``).
        slots: execution contexts used in turn (2 overlaps one chunk's transfers with the next's).
        build_wait_s: how long to wait for another process already building the same engine.

    Attributes:
        metadata: the model's metadata.
        gpu: the GPU model in the cache key (``"NVIDIA H100 80GB HBM3 sm90"``).
        engine_file: the engine's cache file name (``engine_cache_key``).
        engine_source: ``"cache"``, ``"built"`` or ``"rebuilt"`` (the cached entry was unusable).
    """

    def __init__(
        self,
        model: bytes,
        *,
        origin: str,
        metadata: ModelMetadata | None = None,
        spec: EngineSpec = EngineSpec(),
        cache: str | None = None,
        storage: StorageOptions = StorageOptions(),
        device: int = 0,
        slots: int = 2,
        build_wait_s: float = 1800.0,
    ) -> None:
        self._runner: EngineRunner | None = None
        trt = import_tensorrt()
        cudart = import_cudart()
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        facts = inspect_onnx(model, origin=origin, metadata=metadata)
        self.metadata: ModelMetadata = facts.metadata
        self.spec, self.origin = spec, origin

        cuda_check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self.gpu = gpu_name(cudart, device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        digest = model_digest(model)
        self.engine_file = engine_cache_key(digest, trt.__version__, self.gpu, spec.precision, spec.profile)
        fields = cache_fields(digest, trt.__version__, self.gpu, spec.precision, spec.profile)

        def build() -> bytes:
            return build_engine(
                model, spec, contract=self.metadata.contract, input_name=facts.input_name,
                input_size=self.metadata.config.input_size, model_has_fp16=facts.has_fp16, trt=trt, logger=self._logger,
            )  # fmt: skip

        self._engine, self.engine_source = load_or_build(
            EngineCache(cache, storage) if cache else None, self.engine_file, fields, build, self._deserialize,
            wait_s=build_wait_s,
        )  # fmt: skip
        io = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            io[name] = (
                self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                tuple(self._engine.get_tensor_shape(name)),
                np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))),
            )
        self._runner = EngineRunner(
            self._engine, cudart, io, self.metadata, spec, input_name=facts.input_name, origin=origin, device=device,
            slots=slots,
        )  # fmt: skip

    def _deserialize(self, blob: bytes):
        try:
            return self._runtime.deserialize_cuda_engine(blob)
        except Exception:  # some versions raise instead of returning None for foreign bytes
            return None

    def __call__(self, images: np.ndarray) -> RawHeads | GraphHeads:
        """Run a batch ``float32[B, 3, S, S]`` (any ``B``, cut to the profile) and return its heads."""
        return self._runner(images)

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[RawHeads | GraphHeads]:
        """Heads for each batch in order (each at most ``spec.max_batch`` images), two in flight."""
        return self._runner.stream(batches)

    def close(self) -> None:
        """Free the device and pinned buffers, streams and contexts (also done on garbage collection)."""
        if getattr(self, "_runner", None) is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

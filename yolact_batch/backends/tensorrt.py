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
batch plans, buffer sizes, cache validity) live in ``engine_plan`` and ``engine_cache``, the
buffers and streams in ``engine_runner``; all are tested on CPU.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from yolact_batch.backends.contract import inspect_onnx
from yolact_batch.backends.engine_cache import EngineCache, cache_fields, engine_cache_key, load_or_build
from yolact_batch.backends.engine_plan import EngineSpec, pinned_to_fp32, precision_plan
from yolact_batch.backends.engine_runner import EngineRunner, cuda_check
from yolact_batch.core.heads import GraphHeads, RawHeads
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.io.storage import StorageOptions, model_digest

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

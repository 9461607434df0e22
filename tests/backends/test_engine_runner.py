"""The TensorRT backend's data path on CPU: chunks, padding, two slots, valid-prefix mask copies.

``EngineRunner`` takes a deserialized engine and cuda-python's runtime module. Here host memory
stands in for device memory (copies are ``memmove``) and a tiny engine writes per-image values
derived from its input, so every offset, pad and copy of the real code path runs; what a GPU,
TensorRT or CUDA would do differently is not covered (``test_gpu.py`` is).
"""

from __future__ import annotations

import ctypes
import enum

import numpy as np
import pytest

from yolact_batch.backends.engine_plan import EngineSpec, contract_tensors
from yolact_batch.backends.engine_runner import EngineRunner, host_array
from yolact_batch.core.configs import ModelConfig, PriorConfig, feature_map_sizes
from yolact_batch.core.heads import GraphHeads, RawHeads
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.settings import DetectSettings

TINY = ModelConfig(
    name="tiny", backbone="resnet50",
    priors=PriorConfig(input_size=64, conv_sizes=feature_map_sizes(64), scales=(8, 16, 32, 64, 128)),
)  # fmt: skip
GRAPH = ModelMetadata(TINY, contract="graph", detect=DetectSettings(max_detections=5))
RAW = ModelMetadata(TINY, contract="raw")
SPEC = EngineSpec(min_batch=2, opt_batch=2, max_batch=3)
GARBAGE = -7.0  # what the engine leaves in mask rows past num_detections


class Status(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


class FakeCudart:
    """cuda-python's runtime calls the runner makes, on host memory, copies done at once."""

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, fail_alloc_at: int | None = None):
        self.buffers: dict[int, ctypes.Array] = {}
        self.copies: list[tuple[str, int]] = []
        self.allocs, self.fail_alloc_at, self.streams = 0, fail_alloc_at, 0

    def _alloc(self, size):
        self.allocs += 1
        if self.allocs == self.fail_alloc_at:
            return (Status.cudaErrorMemoryAllocation, 0)
        buffer = ctypes.create_string_buffer(size)
        self.buffers[ctypes.addressof(buffer)] = buffer
        return (Status.cudaSuccess, ctypes.addressof(buffer))

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, ptr):
        del self.buffers[ptr]
        return (Status.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, size, kind, stream):
        ctypes.memmove(dst, src, size)
        self.copies.append((kind.name, size))
        return (Status.cudaSuccess,)

    def cudaSetDevice(self, device):
        return (Status.cudaSuccess,)

    def cudaStreamCreate(self):
        self.streams += 1
        return (Status.cudaSuccess, 1000 + self.streams)

    def cudaStreamSynchronize(self, stream):
        return (Status.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        self.streams -= 1
        return (Status.cudaSuccess,)


class TinyEngine:
    """An engine whose outputs for image ``b`` are filled with ``v = images[b, 0, 0, 0]``.

    Graph contract: ``num_detections = v``, valid mask rows ``v``, the rest ``GARBAGE``; classes
    come out as int32 (some parsers do) to exercise the host-side cast.
    """

    def __init__(self, metadata, *, accept_shapes=True, execute_ok=True):
        self.metadata, self.accept_shapes, self.execute_ok = metadata, accept_shapes, execute_ok
        tensors = contract_tensors(metadata)
        self.io = {n: (t.is_input, (-1, *t.shape), np.int32 if n == "classes" else t.dtype) for n, t in tensors.items()}

    def create_execution_context(self):
        return TinyContext(self)


class TinyContext:
    def __init__(self, engine):
        self.engine, self.addresses, self.batch = engine, {}, None

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return self.engine.accept_shapes

    def execute_async_v3(self, stream):
        assert isinstance(stream, int)
        view = {n: host_array(self.addresses[n], (self.batch, *shape[1:]), dtype)
                for n, (_, shape, dtype) in self.engine.io.items()}  # fmt: skip
        values = view["images"][:, 0, 0, 0]
        for name, array in view.items():
            if name == "images":
                continue
            if name == "masks":
                array[:] = GARBAGE
                for b, v in enumerate(values):
                    array[b, : int(v)] = v
            else:
                array[:] = values.reshape(-1, *[1] * (array.ndim - 1)).astype(array.dtype)
        return self.engine.execute_ok


def runner(metadata=GRAPH, spec=SPEC, cudart=None, slots=2, **engine_kwargs):
    engine = TinyEngine(metadata, **engine_kwargs)
    return EngineRunner(engine, cudart or FakeCudart(), engine.io, metadata, spec, input_name="images", origin="tiny.onnx",
                        slots=slots)  # fmt: skip


def images_with(values):
    images = np.zeros((len(values), 3, 64, 64), np.float32)
    images[:, 0, 0, 0] = values
    return images


def test_graph_chunks_padding_and_valid_prefix_copies():
    cudart = FakeCudart()
    run = runner(cudart=cudart)
    heads = run(images_with([3, 0, 5, 2]))  # chunks of 3 and 1 (padded to 2), on slots 0 and 1
    assert isinstance(heads, GraphHeads) and len(heads) == 4
    assert heads.num_detections.tolist() == [3, 0, 5, 2] and heads.num_detections.dtype == np.int64
    assert heads.classes.dtype == np.int64 and heads.classes[:, 0].tolist() == [3, 0, 5, 2]
    for b, v in enumerate([3, 0, 5, 2]):
        assert np.all(heads.masks[b, :v] == v) and np.all(heads.masks[b, v:] == 0)  # no garbage crossed over
    mask_bytes = 16 * 16 * 4
    d2h = sum(size for kind, size in cudart.copies if kind == "cudaMemcpyDeviceToHost")
    small = 4 * (5 * 4 * 4 + 5 * 4 + 5 * 4 + 8)  # boxes, scores, classes (int32), num_detections per image
    assert d2h - small == (3 + 0 + 5 + 2) * mask_bytes
    h2d = [size for kind, size in cudart.copies if kind == "cudaMemcpyHostToDevice"]
    assert h2d == [3 * 3 * 64 * 64 * 4, 2 * 3 * 64 * 64 * 4]  # the tail chunk is padded to min_batch


def test_stream_matches_call_and_keeps_order():
    run = runner()
    batches = [images_with([1, 2, 3]), images_with([4]), images_with([]), images_with([5, 0])]
    streamed = list(run.stream(batches))
    assert [len(h) for h in streamed] == [3, 1, 0, 2]
    assert np.concatenate([h.num_detections for h in streamed]).tolist() == [1, 2, 3, 4, 5, 0]
    whole = run(np.concatenate(batches))
    np.testing.assert_array_equal(np.concatenate([h.masks for h in streamed]), whole.masks)


def test_raw_contract_copies_only_real_rows():
    cudart = FakeCudart()
    heads = runner(RAW, cudart=cudart)(images_with([0.5]))
    assert isinstance(heads, RawHeads) and heads.loc.shape == (1, 258, 4) and heads.proto.shape == (1, 16, 16, 32)
    assert np.all(heads.conf == 0.5)
    per_image = 258 * (4 + 81 + 32) * 4 + 16 * 16 * 32 * 4
    assert sum(size for kind, size in cudart.copies if kind == "cudaMemcpyDeviceToHost") == per_image


def test_empty_input_gives_empty_heads():
    heads = runner()(images_with([]))
    assert len(heads) == 0 and heads.masks.shape == (0, 5, 16, 16)


def test_input_errors():
    run = runner()
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3, 64, 64\), got \(2, 3, 32, 32\)"):
        run(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="at most 3 images, got 4"):
        list(run.stream([images_with([1, 2, 3, 4])]))


def test_runtime_refusals_are_reported():
    with pytest.raises(RuntimeError, match=r"rejected input shape \(2, 3, 64, 64\) \(batch profile \(2, 2, 3\)\)"):
        runner(accept_shapes=False)(images_with([1]))
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        runner(execute_ok=False)(images_with([1]))


def test_engine_that_does_not_match_the_contract_is_refused():
    engine = TinyEngine(GRAPH)
    io = {**engine.io, "masks": (False, (-1, 5, 32, 32), np.float32)}
    with pytest.raises(ValueError, match="tiny.onnx: engine tensor 'masks'"):
        EngineRunner(engine, FakeCudart(), io, GRAPH, SPEC, input_name="images", origin="tiny.onnx")


def test_allocation_failure_frees_what_was_allocated():
    cudart = FakeCudart(fail_alloc_at=15)  # during the second slot (6 tensors x host + device per slot)
    with pytest.raises(
        RuntimeError, match=r"cudaMalloc(Host)?\(\d+ bytes for '\w+'\) failed: cudaErrorMemoryAllocation"
    ):
        runner(cudart=cudart)
    assert cudart.buffers == {} and cudart.streams == 0


def test_close_frees_everything():
    cudart = FakeCudart()
    run = runner(cudart=cudart)
    run(images_with([1, 2]))
    assert len(cudart.buffers) == 2 * 2 * 6 and cudart.streams == 2
    run.close()
    assert cudart.buffers == {} and cudart.streams == 0

"""The TensorRT backend without TensorRT: clear, early errors, and helpers that need no GPU."""

from __future__ import annotations

import ctypes
import enum
import subprocess
import sys
import types

import numpy as np
import pytest

from yolact_batch.backends import tensorrt as trt_backend
from yolact_batch.backends.contract import inspect_onnx
from yolact_batch.backends.engine_runner import cuda_check, host_array
from yolact_batch.backends.tensorrt import TensorRTBackend
from yolact_batch.core.configs import get_config
from yolact_batch.core.metadata import ModelMetadata

R50 = get_config("yolact_resnet50")


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """A ``tensorrt`` module that only has a version: enough for the import checks, nothing else."""
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.13.0.35"
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def no_cuda_python(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_tensorrt_names_the_package_and_the_gpu_extra(no_tensorrt):
    with pytest.raises(ImportError) as info:
        TensorRTBackend(b"not even onnx", origin="m.onnx")
    message = str(info.value)
    assert "'tensorrt' package" in message and "yolact-batch[gpu]" in message and "'tensorrt' extra" in message


def test_missing_tensorrt_fails_before_the_model_is_read(no_tensorrt):
    # Garbage bytes would give a ValueError from the ONNX check: the import check comes first.
    with pytest.raises(ImportError, match="tensorrt"):
        TensorRTBackend(b"\x00" * 10, origin="m.onnx")


def test_old_tensorrt_is_refused(fake_tensorrt):
    fake_tensorrt.__version__ = "8.6.1"
    with pytest.raises(ImportError, match=r"'tensorrt' >= 10 .* found 8.6.1; install the 'gpu' extra"):
        TensorRTBackend(b"", origin="m.onnx")


def test_missing_cuda_python_names_it(fake_tensorrt, no_cuda_python):
    with pytest.raises(ImportError) as info:
        TensorRTBackend(b"", origin="m.onnx")
    assert "'cuda-python' package" in str(info.value) and "yolact-batch[gpu]" in str(info.value)


def test_build_engine_without_tensorrt(no_tensorrt):
    with pytest.raises(ImportError, match="yolact-batch\\[gpu\\]"):
        trt_backend.build_engine(b"", trt_backend.EngineSpec(), contract="graph", input_name="images", input_size=550)


def test_module_imports_without_tensorrt_cuda_or_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'tensorrt', 'cuda', 'torch', 'onnxruntime', 'ray'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import yolact_batch.backends.tensorrt, yolact_batch.backends.engine_plan, yolact_batch.backends.ort_gpu\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- the ONNX checks (onnx package only) ------------------------------------------------------


def _model(tmp_path, metadata, names=None, input_size=550):
    pytest.importorskip("onnx")
    from tests.onnx_models import constant_heads_model

    rng = np.random.default_rng(0)
    heads = {"loc": rng.random((1, 5, 4), np.float32), "conf": rng.random((1, 5, 3), np.float32),
             "mask": rng.random((1, 5, 2), np.float32), "proto": rng.random((1, 4, 4, 2), np.float32)}  # fmt: skip
    kwargs = {"names": names} if names else {}
    return constant_heads_model(tmp_path / "m.onnx", heads, metadata, input_size=input_size, **kwargs).read_bytes()


def test_inspect_onnx_reads_metadata_and_input(tmp_path):
    facts = inspect_onnx(_model(tmp_path, ModelMetadata(R50, contract="raw")), origin="m.onnx")
    assert facts.metadata.contract == "raw" and facts.metadata.config == R50
    assert facts.input_name == "images" and facts.has_fp16 is False


def test_inspect_onnx_sidecar_only_when_the_file_has_none(tmp_path):
    sidecar = ModelMetadata(get_config("yolact_base"), contract="raw")
    assert inspect_onnx(_model(tmp_path, None), origin="m.onnx", metadata=sidecar).metadata == sidecar
    own = inspect_onnx(_model(tmp_path, ModelMetadata(R50, contract="raw")), origin="m.onnx", metadata=sidecar)
    assert own.metadata.config == R50
    with pytest.raises(ValueError, match="m.onnx: the model has no yolact_batch metadata. Pass a sidecar"):
        inspect_onnx(_model(tmp_path, None), origin="m.onnx")


def test_inspect_onnx_rejects_garbage_and_contract_mismatch(tmp_path):
    with pytest.raises(ValueError, match="s3://b/m.onnx: not a loadable ONNX model"):
        inspect_onnx(b"\x08\x01garbage", origin="s3://b/m.onnx")
    raw_model = _model(tmp_path, ModelMetadata(R50, contract="graph"))
    with pytest.raises(ValueError, match="do not match the 'graph' contract"):
        inspect_onnx(raw_model, origin="m.onnx")


# --- small helpers ----------------------------------------------------------------------------


class FakeError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


@pytest.mark.parametrize(
    ("result", "value"),
    [((FakeError.cudaSuccess,), None), ((FakeError.cudaSuccess, 1234), 1234), ((FakeError.cudaSuccess, 1, 2), (1, 2)),
     (FakeError.cudaSuccess, None)],
)  # fmt: skip
def test_cuda_check_unpacks_results(result, value):
    assert cuda_check(result, "cudaThing") == value


def test_cuda_check_names_the_call_and_the_error():
    with pytest.raises(RuntimeError, match=r"cudaMalloc\(8 bytes\) failed: cudaErrorMemoryAllocation \(2\)"):
        cuda_check((FakeError.cudaErrorMemoryAllocation, 0), "cudaMalloc(8 bytes)")


def test_host_array_is_a_writable_view_of_the_memory():
    buffer = ctypes.create_string_buffer(2 * 3 * 4)
    view = host_array(ctypes.addressof(buffer), (2, 3), np.float32)
    view[1, 2] = 1.5
    assert view.ctypes.data == ctypes.addressof(buffer)
    assert np.frombuffer(buffer.raw, np.float32)[5] == 1.5

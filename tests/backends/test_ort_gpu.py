"""ONNX Runtime GPU helpers: the IO-binding runner (run on the CPU provider) and TensorRT EP options."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from tests.onnx_models import constant_heads_model  # noqa: E402
from yolact_batch.backends.engine_plan import EngineSpec  # noqa: E402
from yolact_batch.backends.ort_gpu import OrtIoBinding, tensorrt_provider_options, uses_device  # noqa: E402
from yolact_batch.core.configs import get_config  # noqa: E402
from yolact_batch.core.metadata import ModelMetadata  # noqa: E402


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    rng = np.random.default_rng(1)
    heads = {"loc": rng.random((1, 6, 4), np.float32), "conf": rng.random((1, 6, 3), np.float32),
             "mask": rng.random((1, 6, 2), np.float32), "proto": rng.random((1, 4, 4, 2), np.float32)}  # fmt: skip
    metadata = ModelMetadata(get_config("yolact_resnet50"), contract="raw")
    path = constant_heads_model(tmp_path_factory.mktemp("ort") / "m.onnx", heads, metadata, input_size=8)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def runner(session):
    return OrtIoBinding(session, device="cpu")


@pytest.mark.parametrize("batch", [1, 3, 1])  # changing batch sizes reuse one binding
def test_io_binding_equals_session_run(session, runner, batch):
    images = np.random.default_rng(batch).random((batch, 3, 8, 8), np.float32)
    got = runner(images)
    want = session.run(None, {"images": images})
    assert [g.shape for g in got] == [w.shape for w in want] and got[0].shape[0] == batch
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_io_binding_selected_outputs_in_requested_order(session):
    runner = OrtIoBinding(session, device="cpu")
    proto, loc = runner(np.zeros((2, 3, 8, 8), np.float64), ["proto", "loc"])  # float64 input is converted
    assert proto.shape == (2, 4, 4, 2) and loc.shape == (2, 6, 4)
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['nope'\]"):
        runner(np.zeros((1, 3, 8, 8), np.float32), ["nope"])


def test_io_binding_rejects_unknown_device(session):
    with pytest.raises(ValueError, match="device must be one of"):
        OrtIoBinding(session, device="rocm")


@pytest.mark.parametrize(
    ("providers", "device"),
    [(["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"), (["TensorrtExecutionProvider"], "cuda"),
     (["CPUExecutionProvider"], "cpu"), ([], "cpu")],
)  # fmt: skip
def test_uses_device(providers, device):
    assert uses_device(providers) == device


def test_tensorrt_provider_options():
    options = tensorrt_provider_options(
        "images", 550, EngineSpec(min_batch=1, opt_batch=8, max_batch=32), cache_dir="/c"
    )
    assert options == {
        "trt_fp16_enable": True,
        "trt_max_workspace_size": 4 << 30,
        "trt_profile_min_shapes": "images:1x3x550x550",
        "trt_profile_opt_shapes": "images:8x3x550x550",
        "trt_profile_max_shapes": "images:32x3x550x550",
        "trt_engine_cache_enable": True,
        "trt_timing_cache_enable": True,
        "trt_engine_cache_path": "/c",
        "trt_timing_cache_path": "/c",
    }
    plain = tensorrt_provider_options("x", 400, EngineSpec(precision="fp32"))
    assert plain["trt_fp16_enable"] is False and plain["trt_engine_cache_enable"] is False
    assert "trt_engine_cache_path" not in plain and plain["trt_profile_max_shapes"] == "x:32x3x400x400"


def test_the_tensorrt_provider_gets_the_batch_profile_and_cache(tmp_path):
    """What OnnxRuntimeBackend hands ONNX Runtime for ``providers=("tensorrt", ...)``."""
    from yolact_batch.backends.factory import _local_folder
    from yolact_batch.backends.onnxruntime import provider_options

    heads = {"loc": np.zeros((1, 6, 4), np.float32), "conf": np.zeros((1, 6, 3), np.float32),
             "mask": np.zeros((1, 6, 2), np.float32), "proto": np.zeros((1, 4, 4, 2), np.float32)}  # fmt: skip
    metadata = ModelMetadata(get_config("yolact_resnet50"), contract="raw")
    blob = constant_heads_model(tmp_path / "m.onnx", heads, metadata, input_size=8).read_bytes()
    name, options = provider_options("tensorrt", blob, origin="m.onnx", batch_size=16, trt_cache_dir=str(tmp_path))
    assert name == "TensorrtExecutionProvider"
    assert options["trt_profile_max_shapes"].endswith(":16x3x550x550")
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == str(tmp_path)
    assert provider_options("cuda")[1]["cudnn_conv_algo_search"] == "HEURISTIC"
    # The provider writes a local folder itself: a URL cache becomes one folder per URL on this machine.
    assert (
        _local_folder("/engines") == "/engines" and _local_folder("file:///e") == "/e" and _local_folder(None) is None
    )
    assert _local_folder("s3://b/e") != _local_folder("s3://b/f") and "://" not in _local_folder("s3://b/e")

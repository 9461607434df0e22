"""An ONNX Runtime too old for ``DeformConv`` fails at model load, naming the version needed.

The installed ONNX Runtime is real; only the version it reports is changed (``monkeypatch``),
which is exactly what the check reads.
"""

from __future__ import annotations

import numpy as np
import pytest

from yolact_batch.backends.onnxruntime import DEFORM_CONV_MIN_VERSION, OnnxRuntimeBackend, check_deform_conv_support

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
NEED = ".".join(map(str, DEFORM_CONV_MIN_VERSION))


def _deform_conv_model() -> bytes:
    """One ``DeformConv`` node (opset 19); its inputs are graph inputs."""
    from onnx import TensorProto, helper

    node = helper.make_node("DeformConv", ["X", "W", "O", "B", "M"], ["Y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "W", "O", "B", "M")]
    graph = helper.make_graph([node], "dcn", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]).SerializeToString()


def test_installed_runtime_runs_deform_conv_on_cpu():
    session = ort.InferenceSession(_deform_conv_model(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"X": rng.standard_normal((1, 2, 5, 5)), "W": rng.standard_normal((3, 2, 3, 3)),
            "O": np.zeros((1, 18, 5, 5)), "B": np.zeros(3), "M": np.ones((1, 9, 5, 5))}  # fmt: skip
    (y,) = session.run(None, {k: v.astype(np.float32) for k, v in feed.items()})
    assert y.shape == (1, 3, 5, 5) and np.isfinite(y).all()


@pytest.mark.parametrize("version", ["1.29.1", "1.19.0", "1.29.0+cu124"])
def test_too_old_runtime_fails_at_model_load_with_the_version_needed(monkeypatch, version):
    monkeypatch.setattr(ort, "__version__", version)
    with pytest.raises(RuntimeError) as info:
        OnnxRuntimeBackend(_deform_conv_model(), origin="plus.onnx")
    message = str(info.value)
    assert "plus.onnx" in message and f"onnxruntime>={NEED}" in message and version in message
    assert "--deform-conv decomposed" in message


@pytest.mark.parametrize(("version", "has_dcn", "ok"), [
    ("1.30.0", True, True), ("1.32.0", True, True), ("2.0.0", True, True),
    ("1.29.9", True, False), ("1.29.9", False, True), ("1.18.0", False, True),
])  # fmt: skip
def test_version_table(version, has_dcn, ok):
    model = b"...DeformConv..." if has_dcn else b"...Conv..."
    if ok:
        check_deform_conv_support(model, version, origin="m.onnx")
    else:
        with pytest.raises(RuntimeError, match=f">={NEED}"):
            check_deform_conv_support(model, version, origin="m.onnx")

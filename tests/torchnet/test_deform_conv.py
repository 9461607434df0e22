"""DCNv2 in plain torch against a scalar transcription of the reference's CUDA kernel, and its ONNX export.

The oracle follows ``modulated_deformable_im2col_gpu_kernel`` / ``dmcn_im2col_bilinear``
(dbolya/yolact ``external/DCNv2``) one output value at a time, with Python floats.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from yolact_batch.torchnet.deform_conv import DCN, modulated_deform_conv2d, register_onnx_symbolic


def _bilinear(plane: np.ndarray, y: float, x: float) -> float:
    """``dmcn_im2col_bilinear``: corners outside the map read 0."""
    height, width = plane.shape
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    for yy, xx, weight in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                           (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):  # fmt: skip
        if 0 <= yy < height and 0 <= xx < width:
            total += weight * float(plane[yy, xx])
    return total


def reference_dcn(x, offset, mask, weight, bias, stride, padding, dilation) -> np.ndarray:
    """One output at a time: ``sum_c,k W[o,c,k] * mask_k * sample_c(p_k + offset_k) + bias[o]``."""
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    out = np.zeros((batch, out_channels, out_h, out_w))
    for b in range(batch):
        for ho in range(out_h):
            for wo in range(out_w):
                columns = np.zeros((channels, kh * kw))
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = ho * stride - padding + i * dilation + float(offset[b, 2 * k, ho, wo])
                        xs = wo * stride - padding + j * dilation + float(offset[b, 2 * k + 1, ho, wo])
                        if not (-1 < y < height and -1 < xs < width):  # the kernel's range rule
                            continue
                        for c in range(channels):
                            columns[c, k] = _bilinear(x[b, c], y, xs) * float(mask[b, k, ho, wo])
                out[b, :, ho, wo] = weight.reshape(out_channels, -1).astype(np.float64) @ columns.reshape(-1) + bias
    return out


def _case(seed, *, batch=1, channels=3, out_channels=4, size=(7, 6), stride=1, padding=1, dilation=1, scale=2.0):
    rng = np.random.default_rng(seed)
    height, width = size
    out_h = (height + 2 * padding - dilation * 2 - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * 2 - 1) // stride + 1
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    offset = (rng.standard_normal((batch, 18, out_h, out_w)) * scale).astype(np.float32)
    mask = rng.uniform(0, 1, (batch, 9, out_h, out_w)).astype(np.float32)
    weight = rng.standard_normal((out_channels, channels, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    return x, offset, mask, weight, bias


def _ours(x, offset, mask, weight, bias, stride, padding, dilation) -> np.ndarray:
    tensors = [torch.from_numpy(a) for a in (x, offset, mask, weight, bias)]
    return modulated_deform_conv2d(*tensors, stride, padding, dilation).numpy()


CASES = {
    "stride1": dict(),
    "stride2": dict(stride=2, size=(9, 8)),
    "dilation2_padding2": dict(dilation=2, padding=2, size=(8, 8)),
    "batch2": dict(batch=2),
    "big_offsets_mostly_outside": dict(scale=6.0),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_the_scalar_kernel_transcription(name):
    args = CASES[name]
    stride, padding, dilation = args.get("stride", 1), args.get("padding", 1), args.get("dilation", 1)
    x, offset, mask, weight, bias = _case(len(name), **args)
    expected = reference_dcn(x, offset, mask, weight, bias, stride, padding, dilation)
    np.testing.assert_allclose(_ours(x, offset, mask, weight, bias, stride, padding, dilation), expected, atol=2e-5)


@pytest.mark.parametrize("position", [-1.0, -0.999, -1e-4, 0.0, 3.5, 5.0, 6 - 1e-4, 6.0, 6.5, -2.0])
def test_samples_at_and_beyond_the_borders(position):
    """Every kernel point of every output pixel samples ``(position, position)`` of a 6x6 map."""
    x, _, _, weight, bias = _case(1, size=(6, 6), padding=0)
    offset = np.zeros((1, 18, 4, 4), np.float32)
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    for k in range(9):
        offset[0, 2 * k] = position - (rows + k // 3)
        offset[0, 2 * k + 1] = position - (cols + k % 3)
    mask = np.ones((1, 9, 4, 4), np.float32)
    expected = reference_dcn(x, offset, mask, weight, bias, 1, 0, 1)
    np.testing.assert_allclose(_ours(x, offset, mask, weight, bias, 1, 0, 1), expected, atol=2e-5)
    if position <= -1 or position >= 6:
        np.testing.assert_allclose(expected, np.broadcast_to(bias.reshape(1, -1, 1, 1), expected.shape), atol=1e-6)


def test_zero_offsets_and_unit_modulation_are_a_plain_conv():
    x, offset, mask, weight, bias = _case(3, stride=2, size=(9, 9))
    offset[:] = 0
    mask[:] = 1
    expected = torch.nn.functional.conv2d(*(torch.from_numpy(a) for a in (x, weight, bias)), stride=2, padding=1)
    np.testing.assert_allclose(_ours(x, offset, mask, weight, bias, 2, 1, 1), expected.numpy(), atol=1e-5)


def test_offsets_are_interleaved_dy_dx():
    """Moving one kernel point by +1 in dy (channel 2k) equals sampling the row below."""
    x, offset, mask, weight, bias = _case(4, size=(8, 8))
    offset[:] = 0
    mask[:] = 1
    weight[:] = 0
    weight[:, :, 1, 1] = 1  # only the centre point (k = 4) counts
    offset[:, 8] = 1.0  # dy of k = 4
    shifted = _ours(x, offset, mask, weight, np.zeros_like(bias), 1, 1, 1)
    below = x.sum(axis=1, keepdims=True)[:, :, 1:, :]
    np.testing.assert_allclose(shifted[:, :1, :-1, :], below, atol=1e-5)
    np.testing.assert_allclose(shifted[:, :1, -1, :], 0, atol=1e-6)  # the row below the last reads 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), stride=st.sampled_from([1, 2]), scale=st.floats(0.0, 4.0))
def test_property_matches_the_oracle(seed, stride, scale):
    x, offset, mask, weight, bias = _case(seed, stride=stride, size=(5, 6), channels=2, out_channels=2, scale=scale)
    expected = reference_dcn(x, offset, mask, weight, bias, stride, 1, 1)
    np.testing.assert_allclose(_ours(x, offset, mask, weight, bias, stride, 1, 1), expected, atol=2e-5)


@pytest.fixture(scope="module")
def dcn_module():
    torch.manual_seed(0)
    module = DCN(6, 5, 3, stride=2, padding=1).eval()
    torch.nn.init.normal_(module.conv_offset_mask.weight, std=0.5)
    torch.nn.init.normal_(module.conv_offset_mask.bias, std=0.5)
    return module


def _export(module, path, decompose: bool):
    register_onnx_symbolic()
    module.decompose = decompose
    with torch.no_grad():
        torch.onnx.export(module, (torch.zeros(1, 6, 11, 11),), str(path), dynamo=False, opset_version=19,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}})  # fmt: skip
    module.decompose = False


@pytest.mark.parametrize("decompose", [False, True], ids=["DeformConv", "decomposed"])
def test_onnx_export_runs_in_onnxruntime(dcn_module, tmp_path, decompose):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "dcn.onnx"
    _export(dcn_module, path, decompose)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ("DeformConv" in ops) != decompose
    x = torch.randn(2, 6, 11, 11)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = dcn_module(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-5)


def test_deform_conv_node_agrees_with_the_onnx_reference_evaluator(dcn_module, tmp_path):
    """ONNX's own Python DeformConv reads our node's attributes and inputs the same way."""
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    path = tmp_path / "dcn.onnx"
    _export(dcn_module, path, decompose=False)
    x = torch.randn(1, 6, 11, 11)
    with torch.no_grad():
        expected = dcn_module(x).numpy()
    got = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)

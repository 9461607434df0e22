"""YOLACT++ R50 in torch and in ONNX against the reference's golden arrays (``golden/yolact_plus_resnet50``).

The golden checkpoint loads strictly (405 tensors, official order); the raw heads of our torch
network and of its ONNX export (DCNs as ``DeformConv``) match the reference within 1e-4, and the
mask re-scoring net fed the reference's Detect output matches ``maskiou_p`` within 1e-6.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import PLUS, golden_case
from yolact_batch.core.configs import get_config
from yolact_batch.torchnet.checkpoint import load_checkpoint
from yolact_batch.torchnet.deform_conv import DCN, register_onnx_symbolic
from yolact_batch.torchnet.graph import crop_masks

CONFIG = get_config(PLUS)
IMAGES = (184324, 165518)
HEADS = ("loc", "conf", "mask", "proto")


@pytest.fixture(scope="module")
def network(golden_checkpoint):
    return load_checkpoint(golden_checkpoint(PLUS), CONFIG)


@pytest.fixture(scope="module")
def raw_onnx(network, tmp_path_factory):
    """The raw heads of the network as ONNX (DCNs as DeformConv, opset 19): the DCN export on real shapes."""
    path = tmp_path_factory.mktemp("plus_raw") / "plus_raw.onnx"
    register_onnx_symbolic()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.zeros(1, 3, 550, 550),), str(path), dynamo=False, opset_version=19,
                          input_names=["images"], output_names=list(HEADS))  # fmt: skip
    return path


def test_golden_checkpoint_loads_strictly_in_the_official_order(golden_dir, network):
    layout = json.loads((golden_dir / "yolact_plus_state_dict_layout.json").read_text())[PLUS]
    state = network.state_dict()
    assert [key for key, _, _ in layout] == list(state) and len(state) == 405
    assert all(list(state[key].shape) == shape for key, shape, _ in layout)
    deformable = sorted(name for name, module in network.named_modules() if isinstance(module, DCN))
    expected = [f"backbone.layers.{s}.{b}.conv2" for s, n in ((1, 4), (2, 6), (3, 3)) for b in range(n)]
    assert deformable == sorted(expected)


@pytest.mark.parametrize("image_id", IMAGES)
def test_torch_heads_match_golden(network, golden_arrays, image_id):
    arrays = golden_arrays(PLUS, image_id)
    with torch.no_grad():
        heads = network(torch.from_numpy(arrays["input"]))
    for name, value in zip(HEADS, heads):
        np.testing.assert_allclose(value.numpy(), arrays[name], atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.parametrize("image_id", IMAGES)
def test_onnx_heads_match_golden(raw_onnx, onnx_session, golden_arrays, image_id):
    arrays = golden_arrays(PLUS, image_id)
    outputs = onnx_session(raw_onnx).run(list(HEADS), {"images": arrays["input"]})
    for name, value in zip(HEADS, outputs):
        np.testing.assert_allclose(value, arrays[name], atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.parametrize("image_id", IMAGES)
def test_mask_rescoring_fed_golden_detections(network, image_id):
    """Cropped prototype-resolution sigmoid masks of the golden Detect output -> maskiou_p, mask scores."""
    arrays, _ = golden_case(PLUS, image_id)
    proto = torch.from_numpy(arrays["proto"][0])
    masks = torch.sigmoid(torch.from_numpy(arrays["det_masks"]) @ proto.flatten(0, 1).T).unflatten(1, proto.shape[:2])
    masks = crop_masks(masks, torch.from_numpy(arrays["det_boxes"]))
    with torch.no_grad():
        out = network.maskiou_net(masks.unsqueeze(1)).numpy()
    np.testing.assert_allclose(out, arrays["maskiou_out"], atol=1e-6, rtol=0)
    maskiou_p = out[np.arange(len(out)), arrays["det_classes"]]
    np.testing.assert_allclose(maskiou_p, arrays["maskiou_p"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(arrays["post_scores"] * maskiou_p, arrays["post_mask_scores"], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(opset=17), "DeformConv, which needs opset >= 19"),
        (dict(deform_conv="torchvision"), "deform_conv must be 'onnx' or 'decomposed'"),
        (dict(contract="raw"), "raw contract cannot carry"),
    ],
)
def test_export_refuses_bad_plus_settings_before_reading_the_checkpoint(tmp_path, kwargs, message):
    from yolact_batch.torchnet.onnx_export import export_onnx

    with pytest.raises(ValueError, match=message):
        export_onnx(tmp_path / "missing.pth", PLUS, tmp_path / "m.onnx", **kwargs)

"""Reading the network a state dict holds from its key names and shapes alone."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yolact_batch.core.configs import dcn_blocks
from yolact_batch.torchnet.checkpoint_layout import CheckpointLayout, NotYolactError, read_layout


def _layout_json(golden_dir, file: str, name: str) -> dict[str, tuple[int, ...]]:
    data = json.loads((golden_dir / file).read_text())
    return {key: tuple(shape) for key, shape, _ in data[name]}


def _with_dcn(shapes: dict, blocks: tuple[int, ...], dcn_layers: tuple[int, ...], interval: int) -> dict:
    """``shapes`` plus the reference's DCN keys (conv2 bias, conv_offset_mask) in the blocks the rule picks."""
    out = dict(shapes)
    for stage, (n, d) in enumerate(zip(blocks, dcn_layers)):
        for b in dcn_blocks(n, d, interval):
            planes = shapes[f"backbone.layers.{stage}.{b}.conv2.weight"][0]
            prefix = f"backbone.layers.{stage}.{b}.conv2."
            out[prefix + "bias"] = (planes,)
            out[prefix + "conv_offset_mask.weight"] = (27, planes, 3, 3)
            out[prefix + "conv_offset_mask.bias"] = (27,)
    return out


def _official(**changes) -> CheckpointLayout:
    base = dict(
        backbone="resnet50", stage_blocks=(3, 4, 6, 3), dcn_layers=(0, 0, 0, 0), dcn_interval=1,
        mask_rescoring=False, anchors_per_location=3, num_classes=81, num_prototypes=32, fpn_channels=256,
    )  # fmt: skip
    return CheckpointLayout(**{**base, **changes})


def test_official_yolact_layouts(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_resnet50")
    assert read_layout(shapes, "r50") == _official()
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_base")
    assert read_layout(shapes, "base") == _official(backbone="resnet101", stage_blocks=(3, 4, 23, 3))


def test_yolact_plus_resnet50_layout(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_plus_state_dict_layout.json", "yolact_plus_resnet50")
    layout = read_layout(shapes, "plus")
    assert layout == _official(dcn_layers=(0, 4, 6, 3), mask_rescoring=True, anchors_per_location=9)
    assert layout.is_plus


def test_yolact_plus_base_layout_interval_three(golden_dir):
    # yolact_plus_base: ResNet-101 with ([3, 4, 23, 3], [0, 4, 23, 3], 3), i.e. every third block.
    plus = _layout_json(golden_dir, "yolact_plus_state_dict_layout.json", "yolact_plus_resnet50")
    base = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_base")
    shapes = _with_dcn(base, (3, 4, 23, 3), (0, 4, 23, 3), 3)
    shapes.update({k: v for k, v in plus.items() if k.startswith(("maskiou_net.", "prediction_layers."))})
    layout = read_layout(shapes, "plus_base")
    assert (layout.dcn_layers, layout.dcn_interval, layout.mask_rescoring) == ((0, 4, 23, 3), 3, True)
    assert sum(f"layers.2.{b}.conv2.conv_offset_mask" in " ".join(shapes) for b in range(23)) == 8


@given(
    blocks=st.tuples(*[st.integers(1, 8)] * 4),
    fractions=st.tuples(*[st.floats(0, 1)] * 4),
    interval=st.integers(1, 4),
)
def test_dcn_rule_is_recovered(blocks, fractions, interval):
    # Whatever (dcn_layers, interval) made the keys, the inferred pair picks the same blocks.
    dcn_layers = tuple(round(f * n) for f, n in zip(fractions, blocks))
    shapes = {f"backbone.layers.{s}.{b}.conv2.weight": (8, 8, 3, 3) for s, n in enumerate(blocks) for b in range(n)}
    with_keys = _with_dcn(shapes, blocks, dcn_layers, interval)
    from yolact_batch.torchnet.checkpoint_layout import _dcn

    got_layers, got_interval = _dcn(with_keys, blocks, "t")
    for n, want, got in zip(blocks, dcn_layers, got_layers):
        assert dcn_blocks(n, got, got_interval) == dcn_blocks(n, want, interval)


@pytest.mark.parametrize(
    ("n", "d", "interval", "expected"),
    [
        (3, 0, 1, set()),
        (4, 4, 1, {0, 1, 2, 3}),
        (4, 4, 3, {0, 3}),
        (23, 23, 3, {0, 3, 6, 9, 12, 15, 18, 21}),
        (3, 3, 3, {0}),
        (6, 2, 1, {4, 5}),
        (6, 6, 2, {0, 2, 4}),
    ],
)
def test_dcn_blocks_table(n, d, interval, expected):
    assert dcn_blocks(n, d, interval) == frozenset(expected)


def test_mask_rcnn_state_dict_is_refused():
    # torchvision's maskrcnn_resnet50_fpn naming, written by hand (a few keys of each part).
    shapes = {
        "backbone.body.conv1.weight": (64, 3, 7, 7),
        "backbone.body.layer1.0.conv1.weight": (64, 64, 1, 1),
        "backbone.body.layer4.2.conv3.weight": (2048, 512, 1, 1),
        "backbone.fpn.inner_blocks.0.0.weight": (256, 256, 1, 1),
        "backbone.fpn.layer_blocks.0.0.weight": (256, 256, 3, 3),
        "rpn.head.conv.0.0.weight": (256, 256, 3, 3),
        "rpn.head.cls_logits.weight": (3, 256, 1, 1),
        "rpn.head.bbox_pred.weight": (12, 256, 1, 1),
        "roi_heads.box_head.fc6.weight": (1024, 12544),
        "roi_heads.box_predictor.cls_score.weight": (91, 1024),
        "roi_heads.mask_head.0.0.weight": (256, 256, 3, 3),
        "roi_heads.mask_predictor.mask_fcn_logits.weight": (91, 256, 1, 1),
    }
    with pytest.raises(NotYolactError) as info:
        read_layout(shapes, "maskrcnn.pth")
    message = str(info.value)
    assert message.startswith("maskrcnn.pth: not a YOLACT checkpoint")
    assert "Mask R-CNN" in message and "prediction_layers.0.conf_layer.weight" in message


def test_unknown_keys_are_refused_with_the_first_keys():
    with pytest.raises(NotYolactError, match=r"first keys: \['encoder.weight'\]"):
        read_layout({"encoder.weight": (3, 3)}, "x.pth")


def test_unsupported_resnet_is_named(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_base")
    shapes["backbone.layers.2.35.conv1.weight"] = (256, 1024, 1, 1)  # a 36-block layer3 (ResNet-152)
    with pytest.raises(ValueError, match=r"\(3, 4, 36, 3\) blocks per stage.*supported: ResNet-50 \(3, 4, 6, 3\)"):
        read_layout(shapes, "r152")


def test_inconsistent_heads_are_refused(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_resnet50")
    shapes["prediction_layers.0.bbox_layer.weight"] = (14, 256, 3, 3)
    with pytest.raises(ValueError, match="do not split into anchors"):
        read_layout(shapes, "x")
    shapes["prediction_layers.0.bbox_layer.weight"] = (12, 256, 3, 3)
    shapes["proto_net.10.weight"] = (16, 256, 1, 1)
    with pytest.raises(ValueError, match="ProtoNet makes 16 prototypes but the head predicts 32"):
        read_layout(shapes, "x")


def test_per_level_heads_are_refused(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_resnet50")
    shapes["prediction_layers.1.conf_layer.weight"] = (243, 256, 3, 3)
    with pytest.raises(ValueError, match="share_prediction_module=False"):
        read_layout(shapes, "x")


def test_other_fpn_depth_is_refused(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_resnet50")
    del shapes["fpn.downsample_layers.1.weight"], shapes["fpn.downsample_layers.1.bias"]
    with pytest.raises(ValueError, match="an FPN with 1 extra downsampled levels is not supported"):
        read_layout(shapes, "x")


def test_data_parallel_prefix_is_named(golden_dir):
    shapes = _layout_json(golden_dir, "yolact_state_dict_layout.json", "yolact_resnet50")
    with pytest.raises(NotYolactError, match="saved from DataParallel: re-save it without the 'module.' prefix"):
        read_layout({"module." + k: v for k, v in shapes.items()}, "x")

"""The config a checkpoint's weights determine, the defaults for the rest, and --config checks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.configs import OFFICIAL_CONFIGS, get_config  # noqa: E402
from yolact_batch.core.overrides import ConfigOverrides, parse_overrides  # noqa: E402
from yolact_batch.core.priors import make_priors  # noqa: E402
from yolact_batch.torchnet.checkpoint import config_for_checkpoint  # noqa: E402
from yolact_batch.torchnet.checkpoint_layout import read_layout  # noqa: E402
from yolact_batch.torchnet.config_from_weights import resolve_config  # noqa: E402
from yolact_batch.torchnet.network import Yolact  # noqa: E402

# What a checkpoint of each official config resolves to without --config: the input size and
# anchor scales of yolact_im400 / yolact_im700 are not in the weights.
WITHOUT_CONFIG = {
    "yolact_base": "yolact_base",
    "yolact_resnet50": "yolact_resnet50",
    "yolact_darknet53": "yolact_darknet53",
    "yolact_im400": "yolact_base",
    "yolact_im700": "yolact_base",
    "yolact_plus_base": "yolact_plus_base",
    "yolact_plus_resnet50": "yolact_plus_resnet50",
}


def _layout(config):
    with torch.device("meta"):
        state = Yolact(config).state_dict()
    return read_layout({k: tuple(v.shape) for k, v in state.items()}, config.name)


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_configs_with_and_without_config(name):
    layout = _layout(get_config(name))
    assert resolve_config(layout).config == get_config(WITHOUT_CONFIG[name])
    assert resolve_config(layout, config_name=name).config == get_config(name)


def test_resnet_tiny_project_model():
    from yolact_batch.training.shapes import SHAPES_CONFIG

    layout = _layout(SHAPES_CONFIG)
    assert (layout.backbone, layout.num_prototypes, layout.fpn_channels) == ("resnet_tiny", 16, 64)
    overrides = ConfigOverrides(input_size=256, scales=SHAPES_CONFIG.priors.scales, origin="t")
    resolved = resolve_config(layout, overrides=overrides, class_names=SHAPES_CONFIG.class_names, name="yolact_shapes")
    assert resolved.config == SHAPES_CONFIG


def _custom_layout(num_foreground: int):
    config = get_config("yolact_resnet50")
    from dataclasses import replace

    names = tuple(f"c{i}" for i in range(num_foreground))
    return _layout(replace(config, class_names=names, category_ids=tuple(range(1, num_foreground + 1))))


def test_pascal_layout_from_overrides():
    pascal = parse_overrides(
        {
            "num_classes": 21,
            "backbone": {"pred_scales": [[32], [64], [128], [256], [512]], "use_square_anchors": False},
        },
        origin="pascal.json",
    )
    names = tuple(f"voc{i}" for i in range(20))
    resolved = resolve_config(_custom_layout(20), overrides=pascal, class_names=names, name="yolact_resnet50_pascal")
    c = resolved.config
    assert c.name == "yolact_resnet50_pascal" and c.num_classes == 21 and c.category_ids == tuple(range(1, 21))
    assert c.priors.square is False and c.priors.scales[0] == (32.0,) and c.input_size == 550
    # Independent prior formula: level -> y -> x -> ratio, w = s*sqrt(r)/550, h = s/sqrt(r)/550.
    priors = make_priors(c.priors)
    level0 = priors[: 69 * 69 * 3].reshape(69, 69, 3, 4)
    for a, r in enumerate((1.0, 0.5, 2.0)):
        np.testing.assert_allclose(
            level0[5, 7, a], [7.5 / 69, 5.5 / 69, 32 * r**0.5 / 550, 32 / r**0.5 / 550], rtol=1e-6
        )
    assert resolved.sources["anchor scales"] == "pascal.json"
    assert resolved.sources["aspect ratios"] == "pascal.json + default (yolact_resnet50)"
    assert resolved.sources["classes"] == "--class-names"


def test_input_size_keeps_the_base_scales_and_says_so():
    resolved = resolve_config(_custom_layout(80), overrides=ConfigOverrides(input_size=700, origin="--input-size"))
    c = resolved.config
    assert c.input_size == 700 and c.priors.conv_sizes == (88, 44, 22, 11, 6)
    assert c.priors.scales == get_config("yolact_resnet50").priors.scales
    assert c.name == "custom" and "yolact_im400 / yolact_im700: use --config" in resolved.notes[0]
    assert "input size     700 x 700" in resolved.describe() and "[--input-size]" in resolved.describe()


def test_class_names_and_ids_from_label_map():
    o = parse_overrides({"dataset": {"class_names": ["a", "b", "c"], "label_map": {"9": 1, "4": 2, "7": 3}}})
    c = resolve_config(_custom_layout(3), overrides=o).config
    assert c.class_names == ("a", "b", "c") and c.category_ids == (9, 4, 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "checkpoint predicts 5 classes (+ background) but default (yolact_resnet50) has 80: name the 5 classes"),
        ({"class_names": ("a", "b")}, "--class-names names 2 classes but the checkpoint predicts 5 (+ background)"),
        ({"config_name": "yolact_resnet50"}, "but --config yolact_resnet50 has 80"),
        (
            {"overrides": ConfigOverrides(num_classes=81, origin="o.json"), "class_names": tuple("abcde")},
            "o.json sets num_classes = 81 but the checkpoint predicts 6 (5 classes + background)",
        ),
        (
            {"overrides": ConfigOverrides(class_names=tuple("abcde"), origin="o.json"), "class_names": tuple("abcde")},
            "class names given twice",
        ),
    ],
)
def test_wrong_class_count_names_both_numbers(kwargs, message):
    with pytest.raises(ValueError) as info:
        resolve_config(_custom_layout(5), **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("weights", "config", "message"),
    [
        ("yolact_resnet50", "yolact_base",
         "checkpoint has ResNet-50 (6-block layer3) but --config yolact_base is ResNet-101 (23-block layer3)"),
        ("yolact_base", "yolact_darknet53", "checkpoint has ResNet-101 (23-block layer3) but --config yolact_darknet53 is DarkNet-53"),
        ("yolact_plus_resnet50", "yolact_resnet50",
         "checkpoint has deformable convs in {'layers.1': [0, 1, 2, 3], 'layers.2': [0, 1, 2, 3, 4, 5], 'layers.3': [0, 1, 2]} "
         "but --config yolact_resnet50 has them in no block"),
        ("yolact_plus_base", "yolact_plus_resnet50", "checkpoint has ResNet-101 (23-block layer3) but --config yolact_plus_resnet50"),
    ],
)  # fmt: skip
def test_conflicting_config_names_both(weights, config, message):
    if weights not in OFFICIAL_CONFIGS:
        pytest.skip(f"{weights} is not an official config of this yolact_batch")
    with pytest.raises(ValueError) as info:
        resolve_config(_layout(get_config(weights)), config_name=config)
    assert message in str(info.value)


def test_anchor_count_must_match_the_weights():
    o = ConfigOverrides(scales=((24.0, 30.0),) * 5, origin="o.json")
    with pytest.raises(
        ValueError,
        match=r"checkpoint has 3 anchors per location but o.json \(scales\) and default \(yolact_resnet50\) \(aspect ratios\) gives 2",
    ):
        resolve_config(_custom_layout(80), overrides=o)
    o = ConfigOverrides(scales=((24.0,),) * 4, origin="o.json")
    with pytest.raises(ValueError, match="has 4 levels but the network predicts on 5"):
        resolve_config(_custom_layout(80), overrides=o)


def test_use_maskiou_is_checked():
    with pytest.raises(
        ValueError, match="o.json sets use_maskiou = True but the checkpoint has no mask re-scoring net"
    ):
        resolve_config(_custom_layout(80), overrides=ConfigOverrides(mask_rescoring=True, origin="o.json"))


def test_describe_is_one_block():
    text = resolve_config(_custom_layout(80)).describe()
    assert text.startswith("config:\n  name ") and "ResNet-50" in text and "19248 (3 per location)" in text
    assert "80 + background: person, bicycle" in text


@pytest.mark.parametrize("name", ["yolact_resnet50", "yolact_base", "yolact_plus_resnet50"])
def test_golden_checkpoints_resolve_to_their_official_config(golden_checkpoint, name):
    # The exporter builds the network and metadata from the config alone, so the same config means
    # the same ONNX model: the golden export tests (made without --config) cover both paths.
    if name not in OFFICIAL_CONFIGS:
        pytest.skip(f"{name} is not an official config of this yolact_batch")
    path = golden_checkpoint(name)
    assert config_for_checkpoint(path).config == get_config(name)
    assert config_for_checkpoint(path, config_name=name).config == get_config(name)


def test_custom_config_round_trips_through_model_metadata():
    from yolact_batch.core.metadata import ModelMetadata

    pascal = parse_overrides(
        {"max_size": 512, "backbone": {"pred_scales": [[32], [64], [128], [256], [512]], "use_square_anchors": False}}
    )
    config = resolve_config(
        _custom_layout(3), overrides=pascal, class_names=("a", "b", "c"), category_ids=(5, 17, 99)
    ).config
    meta = ModelMetadata(config=config, contract="raw")
    back = ModelMetadata.from_onnx_props(meta.to_onnx_props(), origin="t")
    assert back == meta and back.config.category_ids == (5, 17, 99) and back.config.priors.square is False

"""The torch network: official key layout, and output shapes for every official config."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.configs import OFFICIAL_CONFIGS, feature_map_sizes, get_config, with_classes  # noqa: E402
from yolact_batch.torchnet.network import Yolact, build_network  # noqa: E402


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_config_output_shapes(name):
    """Shapes only, on the meta device: no weights are allocated and nothing is computed."""
    config = get_config(name)
    with torch.device("meta"), torch.no_grad():
        net = Yolact(config).eval()
        loc, conf, mask, proto = net(torch.empty(2, 3, config.input_size, config.input_size))
    p, side = config.priors.num_priors, config.proto_size
    assert loc.shape == (2, p, 4)
    assert conf.shape == (2, p, config.num_classes)
    assert mask.shape == (2, p, config.num_prototypes)
    assert proto.shape == (2, side, side, config.num_prototypes)


@pytest.mark.parametrize("name", ["yolact_resnet50", "yolact_darknet53"])
def test_forward_values_on_small_input(name):
    """A real forward (random weights) on a small image: activations as the contract says."""
    config = get_config(name)
    torch.manual_seed(0)
    with torch.no_grad():
        loc, conf, mask, proto = build_network(config)(torch.randn(1, 3, 96, 96))
    levels = feature_map_sizes(96)
    assert loc.shape == (1, 3 * sum(s * s for s in levels), 4)
    assert proto.shape == (1, 2 * levels[0], 2 * levels[0], 32)
    assert torch.allclose(conf.sum(-1), torch.ones(1, loc.shape[1]), atol=1e-5)
    assert mask.abs().max() <= 1 and proto.min() >= 0
    assert all(torch.isfinite(t).all() for t in (loc, conf, mask, proto))


def test_state_dict_layout_is_official(golden_dir):
    """Same keys, shapes, dtypes and order as the official resnet50 / base checkpoints."""
    layout = json.loads((golden_dir / "yolact_state_dict_layout.json").read_text())
    for name in ("yolact_resnet50", "yolact_base"):
        with torch.device("meta"):
            state = Yolact(get_config(name)).state_dict()
        ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]
        assert ours == layout[name], name


def test_darknet53_layout():
    """Not checkable against a real checkpoint here: the names and sizes of the reference design."""
    with torch.device("meta"):
        state = Yolact(get_config("yolact_darknet53")).state_dict()
    assert state["backbone._preconv.0.weight"].shape == (32, 3, 3, 3)
    assert "backbone._preconv.1.running_var" in state
    blocks = {}
    for key in state:
        parts = key.split(".")
        if parts[1] == "layers":
            blocks[int(parts[2])] = max(blocks.get(int(parts[2]), 0), int(parts[3]))
    assert [blocks[i] for i in range(5)] == [1, 2, 8, 8, 4]
    assert state["backbone.layers.0.0.0.weight"].shape == (64, 32, 3, 3)
    assert state["backbone.layers.4.0.0.weight"].shape == (1024, 512, 3, 3)
    assert state["backbone.layers.4.4.conv1.0.weight"].shape == (512, 1024, 1, 1)
    assert state["backbone.layers.4.4.conv2.0.weight"].shape == (1024, 512, 3, 3)
    assert state["backbone.layers.2.8.conv2.1.num_batches_tracked"].dtype == torch.int64
    assert state["fpn.lat_layers.0.weight"].shape == (256, 1024, 1, 1)
    assert state["fpn.lat_layers.2.weight"].shape == (256, 256, 1, 1)
    conv_biases = [
        k
        for k in state
        if k.startswith("backbone.") and k.endswith(".bias") and k.replace(".bias", ".running_mean") not in state
    ]
    assert conv_biases == []


def test_custom_classes_size_the_heads():
    config = with_classes(get_config("yolact_resnet50"), ("cat", "dog"), name="pets")
    with torch.device("meta"):
        state = Yolact(config).state_dict()
    assert state["prediction_layers.0.conf_layer.weight"].shape[0] == 3 * 3
    assert state["semantic_seg_conv.weight"].shape[0] == 2


def test_unknown_backbone_is_rejected():
    from dataclasses import replace

    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        Yolact(replace(get_config("yolact_base"), backbone="vgg16"))

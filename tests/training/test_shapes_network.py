"""The shapes model's config: its priors line up with the network's feature maps, and it round-trips."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.configs import feature_map_sizes  # noqa: E402
from yolact_batch.core.metadata import ModelMetadata  # noqa: E402
from yolact_batch.core.synthetic import SHAPE_CLASSES  # noqa: E402
from yolact_batch.torchnet.network import Yolact  # noqa: E402
from yolact_batch.training.shapes import SHAPES_CONFIG  # noqa: E402


def test_priors_match_the_network_feature_maps():
    config = SHAPES_CONFIG
    network = Yolact(config).eval()
    with torch.no_grad():
        pyramid, loc, conf_logits, mask, proto = network.heads(torch.zeros(1, 3, config.input_size, config.input_size))
    assert tuple(level.shape[-1] for level in pyramid) == config.priors.conv_sizes == feature_map_sizes(256)
    assert all(level.shape[1] == config.fpn_channels for level in pyramid)
    assert loc.shape == (1, config.priors.num_priors, 4)
    assert conf_logits.shape == (1, config.priors.num_priors, len(SHAPE_CLASSES) + 1)
    assert mask.shape == (1, config.priors.num_priors, config.num_prototypes)
    assert proto.shape == (1, config.proto_size, config.proto_size, config.num_prototypes)


def test_forward_is_heads_with_softmax():
    network = Yolact(SHAPES_CONFIG).eval()
    images = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        loc, conf, mask, proto = network(images)
        _, loc2, logits, mask2, proto2 = network.heads(images)
    torch.testing.assert_close(conf, torch.softmax(logits, -1))
    assert torch.equal(loc, loc2) and torch.equal(mask, mask2) and torch.equal(proto, proto2)


def test_small_backbone_layout():
    with torch.device("meta"):
        state = Yolact(SHAPES_CONFIG).state_dict()
    assert state["backbone.conv1.weight"].shape == (32, 3, 7, 7)
    assert state["backbone.layers.0.0.conv2.weight"].shape == (32, 32, 3, 3)  # BasicBlock: conv1, conv2 only
    assert "backbone.layers.0.0.conv3.weight" not in state
    assert state["backbone.layers.3.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    assert state["fpn.lat_layers.0.weight"].shape == (64, 256, 1, 1)
    assert state["proto_net.10.weight"].shape == (16, 64, 1, 1)
    assert state["prediction_layers.0.mask_layer.weight"].shape == (3 * 16, 64, 3, 3)


def test_config_round_trips_through_metadata():
    meta = ModelMetadata(SHAPES_CONFIG, "graph")
    back = ModelMetadata.from_onnx_props(meta.to_onnx_props(), origin="m.onnx")
    assert back == meta and back.config.fpn_channels == 64 and back.config.backbone == "resnet_tiny"

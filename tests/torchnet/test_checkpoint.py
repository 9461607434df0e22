"""Checkpoint loading: legacy keys, optional keys, and errors that say what to do."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.configs import get_config, with_classes  # noqa: E402
from yolact_batch.torchnet.checkpoint import drop_legacy_keys, load_checkpoint, suggest_config  # noqa: E402
from yolact_batch.torchnet.network import Yolact  # noqa: E402


def _meta_state(name: str) -> dict:
    with torch.device("meta"):
        return Yolact(get_config(name)).state_dict()


def test_golden_checkpoint_loads_exactly(golden_checkpoint):
    path = golden_checkpoint("yolact_resnet50")
    model = load_checkpoint(path, get_config("yolact_resnet50"))
    stored = torch.load(path, weights_only=True)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key]), key


def test_legacy_keys_dropped_and_semantic_seg_optional(golden_checkpoint, tmp_path):
    stored = torch.load(golden_checkpoint("yolact_resnet50"), weights_only=True)
    legacy = dict(stored)
    legacy["backbone.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)  # old duplicate name
    legacy["fpn.downsample_layers.2.weight"] = torch.zeros(256, 256, 3, 3)  # v1.0 extra downsample
    legacy["fpn.downsample_layers.2.bias"] = torch.zeros(256)
    for key in ("semantic_seg_conv.weight", "semantic_seg_conv.bias"):
        del legacy[key]
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    model = load_checkpoint(path, get_config("yolact_resnet50"))
    state = model.state_dict()
    assert torch.equal(state["fpn.downsample_layers.1.weight"], stored["fpn.downsample_layers.1.weight"])
    assert torch.equal(state["prediction_layers.0.conf_layer.bias"], stored["prediction_layers.0.conf_layer.bias"])


def test_drop_legacy_keys():
    state = {
        "backbone.layer1.0.conv1.weight": 1,
        "backbone.layers.0.0.conv1.weight": 2,
        "fpn.downsample_layers.1.bias": 3,
        "fpn.downsample_layers.2.bias": 4,
        "fpn.downsample_layers.12.weight": 5,
        "proto_net.0.weight": 6,
    }
    assert drop_legacy_keys(state) == {
        "backbone.layers.0.0.conv1.weight": 2,
        "fpn.downsample_layers.1.bias": 3,
        "proto_net.0.weight": 6,
    }


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("yolact_base", "has a ResNet-101 (23-block layer3) backbone: export without --config"),
        ("yolact_im700", "read from the weights) or use --config yolact_base (or yolact_im400 / yolact_im700"),
        ("yolact_resnet50", "ResNet-50 (6-block layer3) backbone: export without --config (the config is read"),
        (
            "yolact_darknet53",
            "DarkNet-53 backbone: export without --config (the config is read from the weights) "
            "or use --config yolact_darknet53",
        ),
    ],
)
def test_suggest_config(name, hint):
    assert hint in suggest_config(_meta_state(name))


def test_wrong_config_names_the_file_keys_and_fix(golden_checkpoint):
    path = golden_checkpoint("yolact_resnet50")
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, get_config("yolact_base"))
    message = str(info.value)
    assert str(path) in message and "'yolact_base'" in message
    assert "missing keys" in message and "backbone.layers.2.6.conv1.weight" in message
    assert "use --config yolact_resnet50" in message


def test_wrong_class_count_suggests_custom_classes(golden_checkpoint):
    config = with_classes(get_config("yolact_resnet50"), ("cat", "dog"))
    with pytest.raises(ValueError, match=r"wrong shape.*predicts 81 classes \(80 \+ background\)"):
        load_checkpoint(golden_checkpoint("yolact_resnet50"), config)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth", get_config("yolact_resnet50"))


def test_truncated_file(golden_checkpoint, tmp_path):
    path = tmp_path / "truncated.pth"
    with golden_checkpoint("yolact_resnet50").open("rb") as f:
        path.write_bytes(f.read(1 << 20))
    with pytest.raises(ValueError, match=r"truncated\.pth: cannot read it as a PyTorch checkpoint.*truncated"):
        load_checkpoint(path, get_config("yolact_resnet50"))


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(100))
    with pytest.raises(ValueError, match="cannot read it as a PyTorch checkpoint: it is neither a zip archive"):
        load_checkpoint(path, get_config("yolact_resnet50"))


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    path = tmp_path / "with_args.pth"
    torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match=r"Python objects besides tensors.*torch\.save\(model\.state_dict\(\)"):
        load_checkpoint(path, get_config("yolact_resnet50"))


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ValueError, match=r"not a state dict: entries \['epoch', 'lr'\]"):
        load_checkpoint(path, get_config("yolact_resnet50"))


def test_not_a_yolact_checkpoint(tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1), "fc.bias": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a YOLACT checkpoint"):
        load_checkpoint(path, get_config("yolact_resnet50"))


def test_wrapped_state_dict(golden_checkpoint, tmp_path):
    """Training-script style ``{"state_dict": ...}`` files load too."""
    stored = torch.load(golden_checkpoint("yolact_resnet50"), weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": stored}, path)
    model = load_checkpoint(path, get_config("yolact_resnet50"))
    assert torch.equal(model.state_dict()["proto_net.10.bias"], stored["proto_net.10.bias"])

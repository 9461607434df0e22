"""--overrides: the reference's own eval-time config keys, nested as in its data/config.py."""

from __future__ import annotations

import json

import pytest

from yolact_batch.core.overrides import ConfigOverrides, parse_overrides, read_overrides
from yolact_batch.core.settings import DetectSettings

# yolact_resnet50_pascal_config's eval-time part (dbolya/yolact data/config.py), as a user copies it.
PASCAL = {
    "num_classes": 21,
    "max_iter": 120000,
    "lr_steps": [60000, 100000],
    "dataset": {"name": "Pascal SBD 2012", "valid_info": "./data/sbd/pascal_sbd_val.json"},
    "backbone": {"pred_scales": [[32], [64], [128], [256], [512]], "use_square_anchors": False},
}


def test_pascal_layout():
    o = parse_overrides(PASCAL, origin="pascal.json")
    assert o.scales == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert o.square_anchors is False and o.num_classes == 21
    assert o.input_size is None and o.aspect_ratios is None and o.class_names is None
    assert set(o.ignored) == {"max_iter", "lr_steps", "dataset.name", "dataset.valid_info"}


def test_every_supported_key():
    o = parse_overrides(
        {
            "max_size": 512,
            "backbone": {
                "pred_scales": [[24, 30.24, 38.1]] * 5,
                "pred_aspect_ratios": [[[1, 0.5, 2]]] * 5,
                "use_square_anchors": False,
                "use_pixel_scales": True,
                "preapply_sqrt": False,
            },
            "use_maskiou": True,
            "dataset": {"class_names": ["cat", "dog"], "label_map": {"17": 2, "3": 1}},
            "nms_top_k": 100,
            "nms_conf_thresh": 0.1,
            "nms_thresh": 0.6,
            "max_num_detections": 50,
            "preserve_aspect_ratio": False,
        }
    )
    assert o.input_size == 512 and o.scales == ((24.0, 30.24, 38.1),) * 5 and o.aspect_ratios == (1.0, 0.5, 2.0)
    assert o.mask_rescoring is True and o.class_names == ("cat", "dog") and o.category_ids == (3, 17)
    assert o.detect == {"top_k": 100, "conf_threshold": 0.1, "iou_threshold": 0.6, "max_detections": 50}
    assert o.ignored == ()


def test_toml_file(tmp_path):
    path = tmp_path / "custom.toml"
    path.write_text("max_size = 640\n[backbone]\npred_scales = [[32], [64], [128], [256], [512]]\n")
    o = read_overrides(path)
    assert o.input_size == 640 and o.scales[4] == (512.0,) and o.origin == str(path)


def test_json_file(tmp_path):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(PASCAL))
    assert read_overrides(path).num_classes == 21


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_size": "550"}, "max_size must be an integer >= 32, got '550'; e.g. max_size = 550"),
        ({"max_size": 16}, "max_size must be an integer >= 32, got 16"),
        ({"max_size": True}, "max_size must be an integer"),
        ({"backbone": {"pred_scales": [24, 48]}}, "pred_scales must be a list of per-level lists"),
        ({"backbone": {"pred_scales": [[24], [-48]]}}, "pred_scales must hold positive numbers, got [-48]"),
        ({"backbone": {"pred_scales": [[24], [48, 60]]}}, "the same number of scales at every level"),
        ({"backbone": {"pred_aspect_ratios": [[1, 0.5, 2]] * 5}}, "one list of ratios per level"),
        ({"backbone": {"pred_aspect_ratios": [[[1, 0.5]], [[1, 2]]]}}, "the same at every level"),
        ({"backbone": {"pred_aspect_ratios": [[[1, 0]]]}}, "positive numbers"),
        ({"backbone": {"use_square_anchors": "no"}}, "use_square_anchors must be true or false, got 'no'"),
        ({"backbone": {"use_pixel_scales": False}}, "backbone.use_pixel_scales = False is not supported"),
        ({"preserve_aspect_ratio": True}, "preserve_aspect_ratio = True is not supported"),
        ({"nms_thresh": 1.5}, "nms_thresh must be a number in [0, 1], got 1.5"),
        ({"nms_top_k": 0}, "nms_top_k must be an integer >= 1"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"dataset": {"class_names": []}}, "dataset.class_names must be a non-empty list"),
        ({"dataset": {"label_map": {"1": 1}}}, "label_map needs dataset.class_names"),
        ({"dataset": {"class_names": ["a", "b"], "label_map": {"5": 1, "6": 3}}}, "must be a class index in 1..2"),
        ({"dataset": {"class_names": ["a", "b"], "label_map": {"5": 1}}}, "no category id for class indices [2]"),
        ({"dataset": {"class_names": ["a"], "label_map": {"x": 1}}}, "key 'x' is not a category id"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(data, message):
    with pytest.raises(ValueError) as info:
        parse_overrides(data, origin="my.json")
    assert str(info.value).startswith("my.json: ") and message in str(info.value)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError) as info:
        parse_overrides({"max_sizes": 550, "backbone": {"pred_scale": [[1]]}}, origin="my.json")
    message = str(info.value)
    assert "['max_sizes', 'backbone.pred_scale']" in message and "backbone.pred_scales" in message


def test_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read overrides file .*missing.json"):
        read_overrides(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_size": ')
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_overrides(bad)
    (tmp_path / "bad.toml").write_text("max_size = = 3")
    with pytest.raises(ValueError, match="bad.toml is neither JSON nor valid TOML"):
        read_overrides(tmp_path / "bad.toml")


def test_merged_flags_win_only_without_conflict():
    file = parse_overrides({"max_size": 512}, origin="f.json")
    assert file.merged(ConfigOverrides(square_anchors=False, origin="--flags")).input_size == 512
    assert file.merged(ConfigOverrides(input_size=512, origin="--input-size")).input_size == 512
    with pytest.raises(ValueError, match="f.json sets input_size = 512 but --input-size sets 640"):
        file.merged(ConfigOverrides(input_size=640, origin="--input-size"))


def test_detect_settings_flags_over_file_over_reference():
    o = parse_overrides({"nms_top_k": 50, "nms_thresh": 0.7}, origin="f.json")
    got = o.detect_settings(top_k=20, iou_threshold=None, conf_threshold=None, cross_class_nms=None)
    assert (got.top_k, got.iou_threshold, got.conf_threshold, got.max_detections) == (20, 0.7, 0.05, 100)
    assert ConfigOverrides().detect_settings() == DetectSettings()

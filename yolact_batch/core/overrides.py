"""``--overrides``: a custom reference config's eval-time keys, in the reference's own nesting.

A model trained with dbolya/yolact's custom-dataset recipe has a config like
``yolact_base_config.copy({'max_size': 512, 'backbone': ...copy({'pred_scales': ...})})`` in
``data/config.py``; its checkpoint does not store it. The keys that change evaluation are copied
into a JSON or TOML file with the same nesting::

    {"max_size": 512,
     "backbone": {"pred_scales": [[32], [64], [128], [256], [512]], "use_square_anchors": false},
     "dataset": {"class_names": ["cat", "dog"], "label_map": {"3": 1, "7": 2}}}

Training-only keys (learning rate, augmentation, loss weights...) and layout keys (read from the
weights instead) are ignored with a warning naming them; anything else is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from yolact_batch.core.metadata import parse_json_or_toml
from yolact_batch.core.settings import DetectSettings

# Keys whose one supported value is the official one: any other value is refused with the reason.
FIXED = {
    "backbone.use_pixel_scales": (True, "anchor scales are in input pixels in every official config"),
    "backbone.preapply_sqrt": (False, "aspect ratios are square-rooted when the priors are made"),
    "preserve_aspect_ratio": (False, "images are resized to max_size x max_size, as in every official config"),
    "eval_mask_branch": (True, "the exported model always predicts masks"),
    "rescore_bbox": (False, "box results keep the Detect score, as the reference's evaluation writes them"),
    "mask_proto_debug": (False, "a reference debugging switch"),
}
# Training-only keys of the reference's config (prefixes end with "_" or "."): warned, ignored.
TRAINING_ONLY = (
    "name", "max_iter", "lr", "momentum", "decay", "gamma", "lr_steps", "lr_warmup_init", "lr_warmup_until",
    "conf_alpha", "bbox_alpha", "mask_alpha", "maskiou_alpha", "semantic_segmentation_alpha", "class_existence_alpha",
    "masks_to_train", "maskious_to_train", "discard_mask_area", "positive_iou_threshold", "negative_iou_threshold",
    "crowd_iou_threshold", "augment_", "freeze_bn", "use_semantic_segmentation_loss", "use_class_existence_loss",
    "ohem_use_most_confident", "use_focal_loss", "focal_loss_", "use_sigmoid_focal_loss", "delayed_settings",
    "no_jit", "train_masks", "train_boxes", "use_gt_bboxes", "mask_proto_normalize_emulate_roi_pooling",
    "mask_proto_reweight_", "mask_proto_binarize_downsampled_gt", "mask_proto_loss", "mask_proto_crop_expand",
    "mask_proto_coeff_diversity_", "mask_proto_double_loss", "mask_proto_remove_empty_masks", "min_size",
    "force_cpu_nms", "mask_size", "dataset.name", "dataset.train_images", "dataset.train_info",
    "dataset.valid_images", "dataset.valid_info", "dataset.has_gt", "backbone.path", "backbone.name",
)  # fmt: skip
# Network-layout keys: the weights say what they are, so these are ignored with a warning.
LAYOUT = (
    "backbone.type", "backbone.args", "backbone.selected_layers", "backbone.transform", "fpn", "fpn.",
    "mask_type", "mask_proto_net", "mask_proto_src", "mask_dim", "mask_proto_bias", "share_prediction_module",
    "extra_head_net", "head_layer_params", "extra_layers", "maskiou_net", "mask_proto_prototype_activation",
    "mask_proto_mask_activation", "mask_proto_coeff_activation", "rescore_mask",
)  # fmt: skip
# Reference detect keys -> DetectSettings fields (export-time defaults of the model).
DETECT_KEYS = {
    "nms_conf_thresh": "conf_threshold",
    "nms_thresh": "iou_threshold",
    "nms_top_k": "top_k",
    "max_num_detections": "max_detections",
}
SUPPORTED = (
    "max_size", "backbone.pred_scales", "backbone.pred_aspect_ratios", "backbone.use_square_anchors",
    "num_classes", "use_maskiou", "dataset.class_names", "dataset.label_map", *DETECT_KEYS, *FIXED,
)  # fmt: skip


@dataclass(frozen=True)
class ConfigOverrides:
    """What a custom config sets that the weights cannot tell; ``None`` leaves the default.

    Attributes:
        input_size: ``max_size``: side of the square network input.
        scales: ``backbone.pred_scales``: anchor scales in input pixels, per level.
        aspect_ratios: ``backbone.pred_aspect_ratios``: one list, the same at every level.
        square_anchors: ``backbone.use_square_anchors``.
        class_names: ``dataset.class_names``.
        category_ids: from ``dataset.label_map`` (category id -> 1-based class index), in class order.
        num_classes: ``num_classes`` (background included): checked against the weights.
        mask_rescoring: ``use_maskiou``: checked against the weights.
        detect: ``DetectSettings`` field -> value, from the reference's ``nms_*`` and ``max_num_detections``.
        ignored: keys found but not used (training-only or read from the weights), dotted.
        origin: where the overrides came from, for messages.
    """

    input_size: int | None = None
    scales: tuple[tuple[float, ...], ...] | None = None
    aspect_ratios: tuple[float, ...] | None = None
    square_anchors: bool | None = None
    class_names: tuple[str, ...] | None = None
    category_ids: tuple[int, ...] | None = None
    num_classes: int | None = None
    mask_rescoring: bool | None = None
    detect: Mapping[str, float | int] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    origin: str = "overrides"

    def detect_settings(self, **flags: float | int | bool | None) -> DetectSettings:
        """The model's detect defaults: ``flags`` (None = not given) over ``detect`` over the reference's."""
        given = {k: v for k, v in flags.items() if v is not None}
        return DetectSettings(**{**self.detect, **given})

    def merged(self, flags: "ConfigOverrides") -> "ConfigOverrides":
        """These overrides with ``flags`` (command-line options) on top; a disagreement is an error."""
        values = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(flags, f.name)
            if f.name in ("ignored", "origin"):
                continue
            if f.name == "detect":
                values[f.name] = {**mine, **theirs}
                continue
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(f"{self.origin} sets {f.name} = {mine!r} but {flags.origin} sets {theirs!r}: keep one")
            values[f.name] = theirs if theirs is not None else mine
        return ConfigOverrides(**values, ignored=self.ignored, origin=f"{self.origin} + {flags.origin}")


def read_overrides(path: str | Path) -> ConfigOverrides:
    """Parse an overrides file: JSON, or TOML (by suffix ``.toml``, else by content)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read overrides file {path}: {exc}") from exc
    data = parse_json_or_toml(
        text, origin=f"overrides file {path}", toml=True if path.suffix.lower() == ".toml" else None
    )
    return parse_overrides(data, origin=str(path))


def parse_overrides(data: Mapping[str, Any], *, origin: str = "overrides") -> ConfigOverrides:
    """``ConfigOverrides`` from the reference-nested mapping ``data`` (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{origin}: expected a mapping of reference config keys, got {type(data).__name__}")
    flat = dict(_flatten(data))
    unknown = [k for k in flat if k not in SUPPORTED and not _matches(k, TRAINING_ONLY) and not _matches(k, LAYOUT)]
    if unknown:
        raise ValueError(
            f"{origin}: unknown config key(s) {unknown}; the eval-time keys read are {list(SUPPORTED)} "
            "(nested as in the reference's data/config.py: e.g. backbone.pred_scales is "
            '{"backbone": {"pred_scales": ...}})'
        )
    for key, (value, why) in FIXED.items():
        if key in flat and flat[key] is not value:
            raise ValueError(
                f"{origin}: {key} = {flat[key]!r} is not supported ({why}); remove it or set it to {value!r}"
            )
    values: dict[str, Any] = {}
    if "max_size" in flat:
        values["input_size"] = _int(flat["max_size"], "max_size", origin, low=32, example="550")
    if "backbone.pred_scales" in flat:
        values["scales"] = _scales(flat["backbone.pred_scales"], origin)
    if "backbone.pred_aspect_ratios" in flat:
        values["aspect_ratios"] = _aspect_ratios(flat["backbone.pred_aspect_ratios"], origin)
    if "backbone.use_square_anchors" in flat:
        values["square_anchors"] = _bool(flat["backbone.use_square_anchors"], "backbone.use_square_anchors", origin)
    if "use_maskiou" in flat:
        values["mask_rescoring"] = _bool(flat["use_maskiou"], "use_maskiou", origin)
    if "num_classes" in flat:
        values["num_classes"] = _int(
            flat["num_classes"], "num_classes", origin, low=2, example="21 (20 classes + background)"
        )
    if "dataset.class_names" in flat:
        values["class_names"] = _names(flat["dataset.class_names"], origin)
    if "dataset.label_map" in flat:
        if "class_names" not in values:
            raise ValueError(f"{origin}: dataset.label_map needs dataset.class_names beside it (the names it maps to)")
        values["category_ids"] = _label_map(flat["dataset.label_map"], len(values["class_names"]), origin)
    detect = {}
    for key, name in DETECT_KEYS.items():
        if key in flat:
            if name in ("top_k", "max_detections"):
                detect[name] = _int(flat[key], key, origin, low=1, example="100")
            else:
                detect[name] = _fraction(flat[key], key, origin)
    ignored = tuple(k for k in flat if k not in SUPPORTED)
    return ConfigOverrides(**values, detect=detect, ignored=ignored, origin=origin)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys; only ``backbone``, ``dataset`` and ``fpn`` are nested tables in the reference."""
    out = []
    for key, value in data.items():
        dotted = prefix + str(key)
        if not prefix and key in ("backbone", "dataset") and isinstance(value, Mapping):
            out.extend(_flatten(value, dotted + "."))
        else:
            out.append((dotted, value))
    return out


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(("_", ".")) and key.startswith(p)) for p in patterns)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, key: str, origin: str, *, low: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{origin}: {key} must be an integer >= {low}, got {value!r}; e.g. {key} = {example}")
    return value


def _fraction(value: Any, key: str, origin: str) -> float:
    if not _number(value) or not 0 <= value <= 1:
        raise ValueError(f"{origin}: {key} must be a number in [0, 1], got {value!r}")
    return float(value)


def _bool(value: Any, key: str, origin: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{origin}: {key} must be true or false, got {value!r}")
    return value


def _scales(value: Any, origin: str) -> tuple[tuple[float, ...], ...]:
    example = "[[24], [48], [96], [192], [384]] (one list of pixel scales per level, P3 first)"
    if not isinstance(value, list) or not value or not all(isinstance(v, list) and v for v in value):
        raise ValueError(
            f"{origin}: backbone.pred_scales must be a list of per-level lists, got {value!r}; e.g. {example}"
        )
    bad = [v for level in value for v in level if not _number(v) or v <= 0]
    if bad:
        raise ValueError(f"{origin}: backbone.pred_scales must hold positive numbers, got {bad[:3]}; e.g. {example}")
    if len({len(level) for level in value}) != 1:
        raise ValueError(
            f"{origin}: backbone.pred_scales needs the same number of scales at every level (the prediction head is "
            f"shared), got {[len(level) for level in value]}"
        )
    return tuple(tuple(float(v) for v in level) for level in value)


def _aspect_ratios(value: Any, origin: str) -> tuple[float, ...]:
    example = "[[[1, 0.5, 2]]] * 5, i.e. [[[1, 0.5, 2]], [[1, 0.5, 2]], ...] (level -> group -> ratios)"
    if not isinstance(value, list) or not value or not all(isinstance(v, list) and v for v in value):
        raise ValueError(
            f"{origin}: backbone.pred_aspect_ratios must be per-level lists of ratio lists; e.g. {example}"
        )
    if any(len(level) != 1 or not isinstance(level[0], list) or not level[0] for level in value):
        raise ValueError(
            f"{origin}: backbone.pred_aspect_ratios must hold one list of ratios per level (every official config does), "
            f"got {value!r}; e.g. {example}"
        )
    ratios = [level[0] for level in value]
    if any(r != ratios[0] for r in ratios):
        raise ValueError(f"{origin}: backbone.pred_aspect_ratios must be the same at every level, got {ratios}")
    if not all(_number(r) and r > 0 for r in ratios[0]):
        raise ValueError(f"{origin}: backbone.pred_aspect_ratios must be positive numbers, got {ratios[0]}")
    return tuple(float(r) for r in ratios[0])


def _names(value: Any, origin: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{origin}: dataset.class_names must be a non-empty list of names, got {value!r}")
    return tuple(v.strip() for v in value)


def _label_map(value: Any, num_names: int, origin: str) -> tuple[int, ...]:
    """Category ids in class order from ``{category_id: 1-based class index}``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{origin}: dataset.label_map must map category ids to 1-based class indices, got {value!r}")
    by_index: dict[int, int] = {}
    for key, index in value.items():
        try:
            category = int(key)
        except ValueError:
            raise ValueError(f"{origin}: dataset.label_map key {key!r} is not a category id") from None
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= num_names:
            raise ValueError(f"{origin}: dataset.label_map[{key}] = {index!r} must be a class index in 1..{num_names}")
        if index in by_index:
            raise ValueError(
                f"{origin}: dataset.label_map maps categories {by_index[index]} and {category} to class {index}"
            )
        by_index[index] = category
    missing = [i for i in range(1, num_names + 1) if i not in by_index]
    if missing:
        raise ValueError(f"{origin}: dataset.label_map gives no category id for class indices {missing}")
    return tuple(by_index[i] for i in range(1, num_names + 1))

"""What a YOLACT state dict says about its network, read from tensor names and shapes alone.

dbolya/yolact checkpoints are plain state dicts; their config is not stored with them. Most of it
can be read back from the weights: the backbone (its stage block counts), YOLACT++'s deformable
convs (``conv2.conv_offset_mask`` in the blocks that have one) and mask re-scoring net
(``maskiou_net.*``), the anchors per location, the class count, the prototype count and the FPN
width. Input size, anchor scales / aspect ratios and class names cannot be read: see
``yolact_batch.torchnet.config_from_weights``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from yolact_batch.core.configs import dcn_blocks

Shapes = Mapping[str, tuple[int, ...]]

# (blocks per stage, residual block) of the backbones the torch twin builds.
RESNET_LAYOUTS = {
    (3, 4, 6, 3): ("resnet50", "Bottleneck"),
    (3, 4, 23, 3): ("resnet101", "Bottleneck"),
    (1, 1, 1, 1): ("resnet_tiny", "BasicBlock"),
}
DARKNET53_BLOCKS = (1, 2, 8, 8, 4)
BACKBONE_NAMES = {
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "darknet53": "DarkNet-53",
    "resnet_tiny": "resnet_tiny",
}
_STEM_WIDTH = {"Bottleneck": 64, "BasicBlock": 32}
_HEAD = "prediction_layers.0."
_REQUIRED = (
    "fpn.lat_layers.0.weight",
    _HEAD + "bbox_layer.weight",
    _HEAD + "conf_layer.weight",
    _HEAD + "mask_layer.weight",
)
# Key prefixes of other detector families, to say what a refused file looks like.
_FAMILIES = (
    (("rpn.", "roi_heads."), "a torchvision Mask R-CNN / Faster R-CNN (rpn.*, roi_heads.*)"),
    (("proposal_generator.", "roi_heads."), "a detectron2 R-CNN (proposal_generator.*, roi_heads.*)"),
)
_BLOCK_KEY = re.compile(r"^backbone\.layers\.(\d+)\.(\d+)\.")
_SHOWN = 5


class NotYolactError(ValueError):
    """The state dict is not a dbolya/yolact-layout YOLACT / YOLACT++ checkpoint."""


@dataclass(frozen=True)
class CheckpointLayout:
    """The network facts a checkpoint's weights determine.

    Attributes:
        backbone: ``resnet50``, ``resnet101``, ``darknet53`` or ``resnet_tiny``.
        stage_blocks: residual blocks per backbone stage, e.g. ``(3, 4, 23, 3)``.
        dcn_layers, dcn_interval: which ResNet blocks use deformable convs, in the reference's
            terms (``ResNetBackbone(layers, dcn_layers, dcn_interval)``); ``(0, 0, 0, 0), 1``
            for YOLACT.
        mask_rescoring: the checkpoint has YOLACT++'s mask re-scoring net (``maskiou_net``).
        anchors_per_location: priors per feature-map cell (3 for YOLACT, 9 for YOLACT++).
        num_classes: network classes, background included.
        num_prototypes: mask prototypes (mask coefficients per prior).
        fpn_channels: width of the FPN, ProtoNet and prediction head.
    """

    backbone: str
    stage_blocks: tuple[int, ...]
    dcn_layers: tuple[int, int, int, int]
    dcn_interval: int
    mask_rescoring: bool
    anchors_per_location: int
    num_classes: int
    num_prototypes: int
    fpn_channels: int

    @property
    def is_plus(self) -> bool:
        """YOLACT++: deformable convs or the mask re-scoring net."""
        return self.mask_rescoring or any(self.dcn_layers)

    def describe_backbone(self) -> str:
        """``"ResNet-101 (23-block layer3)"``, ``"DarkNet-53"``..., as error messages name it."""
        return describe_backbone(self.backbone)


def describe_backbone(backbone: str) -> str:
    """``"ResNet-101 (23-block layer3)"`` for ``resnet101``, ``"DarkNet-53"``..., as messages name it."""
    name = BACKBONE_NAMES.get(backbone, backbone)
    blocks = next((b for b, (n, kind) in RESNET_LAYOUTS.items() if n == backbone and kind == "Bottleneck"), None)
    return f"{name} ({blocks[2]}-block layer3)" if blocks else name


def read_layout(shapes: Shapes, origin: str) -> CheckpointLayout:
    """The ``CheckpointLayout`` of a state dict given as ``{key: shape}``.

    Legacy keys must already be dropped (``checkpoint.drop_legacy_keys``).

    Raises:
        NotYolactError: the keys are not YOLACT's (the message says what they look like).
        ValueError: a YOLACT variant the torch twin cannot build (named, with what is supported).
    """
    missing = [k for k in _REQUIRED if k not in shapes]
    if missing or not any(k.startswith("proto_net.") for k in shapes):
        raise NotYolactError(_not_yolact(shapes, origin, missing or ["proto_net.*"]))
    backbone, blocks = _backbone(shapes, origin)
    dcn_layers, dcn_interval = _dcn(shapes, blocks, origin) if backbone != "darknet53" else ((0, 0, 0, 0), 1)
    if backbone == "resnet_tiny" and any(dcn_layers):
        raise ValueError(f"{origin}: deformable convs in a BasicBlock ResNet are not supported")
    extra_heads = sorted(
        {k.split(".")[1] for k in shapes if k.startswith("prediction_layers.") and not k.startswith(_HEAD)}
    )
    if extra_heads:
        raise ValueError(
            f"{origin}: one prediction head per level (prediction_layers.{extra_heads[0]}.*: the reference's "
            "share_prediction_module=False) is not supported; every official config shares one head"
        )
    anchors, rem = divmod(shapes[_HEAD + "bbox_layer.weight"][0], 4)
    conf = shapes[_HEAD + "conf_layer.weight"][0]
    coeffs = shapes[_HEAD + "mask_layer.weight"][0]
    if rem or anchors == 0 or conf % anchors or coeffs % anchors:
        raise ValueError(
            f"{origin}: head sizes do not split into anchors: bbox_layer {shapes[_HEAD + 'bbox_layer.weight'][0]}, "
            f"conf_layer {conf}, mask_layer {coeffs} output channels (expected 4*A, C*A, M*A)"
        )
    num_classes, num_prototypes = conf // anchors, coeffs // anchors
    proto_out = shapes[_last_conv(shapes, "proto_net.")][0]
    if proto_out != num_prototypes:
        raise ValueError(
            f"{origin}: ProtoNet makes {proto_out} prototypes but the head predicts {num_prototypes} coefficients "
            "per prior; the checkpoint is inconsistent"
        )
    downsample = {k.split(".")[2] for k in shapes if k.startswith("fpn.downsample_layers.")}
    if len(downsample) != 2:
        raise ValueError(
            f"{origin}: an FPN with {len(downsample)} extra downsampled levels is not supported; every official "
            "config has 2 (P6 and P7: fpn num_downsample=2, use_conv_downsample=True)"
        )
    mask_rescoring = any(k.startswith("maskiou_net.") for k in shapes)
    if mask_rescoring:
        scored = shapes[_last_conv(shapes, "maskiou_net.maskiou_net.")][0]
        if scored != num_classes - 1:
            raise ValueError(
                f"{origin}: the mask re-scoring net scores {scored} classes but the head predicts "
                f"{num_classes - 1} (+ background); the checkpoint is inconsistent"
            )
    return CheckpointLayout(
        backbone=backbone,
        stage_blocks=blocks,
        dcn_layers=dcn_layers,
        dcn_interval=dcn_interval,
        mask_rescoring=mask_rescoring,
        anchors_per_location=anchors,
        num_classes=num_classes,
        num_prototypes=num_prototypes,
        fpn_channels=shapes["fpn.lat_layers.0.weight"][0],
    )


def _not_yolact(shapes: Shapes, origin: str, missing: list[str]) -> str:
    looks = next(
        (what for prefixes, what in _FAMILIES if all(any(k.startswith(p) for k in shapes) for p in prefixes)), None
    )
    if shapes and all(k.startswith("module.") for k in shapes):
        looks = "a YOLACT saved from DataParallel: re-save it without the 'module.' prefix of every key"
    return (
        f"{origin}: not a YOLACT checkpoint: it has no {', '.join(missing[:_SHOWN])} weights"
        + (f"; it looks like {looks}" if looks else f" (first keys: {list(shapes)[:_SHOWN]})")
        + ". yolact-batch export reads dbolya/yolact checkpoints (YOLACT and YOLACT++, official or custom-trained)"
    )


def _backbone(shapes: Shapes, origin: str) -> tuple[str, tuple[int, ...]]:
    counts: dict[int, int] = {}
    for key in shapes:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            counts[stage] = max(counts.get(stage, 0), block + 1)
    stages = tuple(counts[s] for s in sorted(counts))
    if "backbone._preconv.0.weight" in shapes:
        blocks = tuple(n - 1 for n in stages)  # each DarkNet stage starts with its stride-2 conv
        if blocks != DARKNET53_BLOCKS:
            raise ValueError(
                f"{origin}: a DarkNet backbone with {blocks} blocks per stage; only DarkNet-53 {DARKNET53_BLOCKS} is supported"
            )
        return "darknet53", blocks
    if "backbone.conv1.weight" not in shapes or not stages:
        raise ValueError(
            f"{origin}: unknown backbone (no backbone.conv1 / backbone._preconv weights); supported: {_supported()}"
        )
    block = "Bottleneck" if "backbone.layers.0.0.conv3.weight" in shapes else "BasicBlock"
    name, expected_block = RESNET_LAYOUTS.get(stages, (None, None))
    stem = shapes["backbone.conv1.weight"][0]
    if name is None or block != expected_block or stem != _STEM_WIDTH[block]:
        raise ValueError(
            f"{origin}: a {block} ResNet with {stages} blocks per stage and a {stem}-channel stem is not supported; "
            f"supported: {_supported()}"
        )
    return name, stages


def _supported() -> str:
    resnets = ", ".join(f"{BACKBONE_NAMES[n]} {blocks}" for blocks, (n, _) in RESNET_LAYOUTS.items())
    return f"{resnets}, DarkNet-53 {DARKNET53_BLOCKS}"


def _dcn(shapes: Shapes, blocks: tuple[int, ...], origin: str) -> tuple[tuple[int, int, int, int], int]:
    """``(dcn_layers, dcn_interval)`` reproducing the blocks that have deformable convs."""
    have = tuple(
        frozenset(b for b in range(n) if f"backbone.layers.{s}.{b}.conv2.conv_offset_mask.weight" in shapes)
        for s, n in enumerate(blocks)
    )
    if not any(have):
        return (0, 0, 0, 0), 1
    for interval in range(1, max(blocks) + 1):
        layers = []
        for n, wanted in zip(blocks, have):
            # The largest count that reproduces a stage's DCN blocks; 0 for a stage without any.
            fits = [d for d in range(n + 1) if dcn_blocks(n, d, interval) == wanted]
            if not fits:
                break
            layers.append(max(fits) if wanted else 0)
        else:
            return tuple(layers), interval  # type: ignore[return-value]
    shown = {f"layers.{s}": sorted(b) for s, b in enumerate(have) if b}
    raise ValueError(
        f"{origin}: deformable convs in blocks {shown} follow no (dcn_layers, dcn_interval) rule of the reference's "
        "ResNetBackbone; such a backbone is not supported"
    )


def _last_conv(shapes: Shapes, prefix: str) -> str:
    """The weight key of the highest-numbered layer of a ``Sequential`` (its output conv)."""
    numbered = [k[len(prefix) :].split(".")[0] for k in shapes if k.startswith(prefix) and k.endswith(".weight")]
    return f"{prefix}{max(int(n) for n in numbered if n.isdigit())}.weight"

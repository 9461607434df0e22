"""Official YOLACT model configurations, as frozen dataclasses.

Only the facts needed to build priors, preprocess images and post-process the heads
are kept here; the network layout itself lives in ``yolact_batch.torchnet.network``.
Numbers follow the reference implementation (dbolya/yolact, ``data/config.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from yolact_batch.core.coco import COCO_CATEGORY_IDS, COCO_CLASSES

MEAN_BGR = (103.94, 116.78, 123.68)
STD_BGR = (57.38, 57.12, 58.40)
_BASE_SCALES = (24, 48, 96, 192, 384)
_ASPECT_RATIOS = (1.0, 0.5, 2.0)
# YOLACT++: three scales per level, base * 2**(j/3) (the reference's ``pred_scales``).
_PLUS_SCALES = tuple(tuple(base * 2 ** (j / 3.0) for j in range(3)) for base in _BASE_SCALES)


@dataclass(frozen=True)
class PriorConfig:
    """How the anchors ("priors") are laid out.

    Attributes:
        input_size: side of the square network input in pixels (550 for yolact_base).
        conv_sizes: side of each prediction feature map, finest first (69, 35, 18, 9, 5 at 550).
        scales: anchor scales in input pixels, a tuple per level (the reference's
            ``pred_scales``: ``((24.0,), (48.0,), ...)`` for YOLACT, three per level for
            YOLACT++). Every level has the same number, since one head serves all levels. The
            flat form of one int per level (``(24, 48, ...)``, older metadata) is accepted and
            normalised to one-element tuples.
        aspect_ratios: aspect ratios used at every level, in prior order.
        square: keep ``h = w`` (the reference's backward-compatible square anchors; YOLACT++
            sets ``use_square_anchors = False``).

    Prior order is level -> y -> x -> scale -> aspect ratio.
    """

    input_size: int
    conv_sizes: tuple[int, ...]
    scales: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[float, ...] = _ASPECT_RATIOS
    square: bool = True

    def __post_init__(self) -> None:
        scales = tuple(
            (float(level),) if isinstance(level, (int, float)) else tuple(float(s) for s in level)
            for level in self.scales
        )
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "aspect_ratios", tuple(float(a) for a in self.aspect_ratios))
        if len(self.conv_sizes) != len(scales):
            raise ValueError(
                f"PriorConfig needs one tuple of scales per level: got {len(scales)} for "
                f"{len(self.conv_sizes)} conv sizes"
            )
        if len({len(level) for level in scales}) > 1 or not scales[0] or not self.aspect_ratios:
            raise ValueError(
                "PriorConfig: every level needs the same, non-zero number of scales (one head serves all levels), "
                f"got scales {scales} and aspect ratios {self.aspect_ratios}"
            )

    @property
    def anchors_per_location(self) -> int:
        """Scales times aspect ratios (3 for YOLACT, 9 for YOLACT++)."""
        return len(self.scales[0]) * len(self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(s * s for s in self.conv_sizes) * self.anchors_per_location


def dcn_blocks(num_blocks: int, dcn_layers: int, dcn_interval: int = 1) -> frozenset[int]:
    """Indices of the blocks of one backbone stage that use a deformable conv, by the reference's
    rule (``ResNetBackbone._make_layer``): block 0 when ``dcn_layers >= num_blocks``; block
    ``i >= 1`` when ``i + dcn_layers >= num_blocks`` and ``i % dcn_interval == 0``."""
    first = {0} if dcn_layers >= num_blocks else set()
    return frozenset(
        first | {i for i in range(1, num_blocks) if i + dcn_layers >= num_blocks and i % dcn_interval == 0}
    )


@dataclass(frozen=True)
class ModelConfig:
    """Everything a runtime needs to know about a YOLACT model besides its weights.

    Attributes:
        name: reference config name (``yolact_base``, ``yolact_resnet50``, ...).
        backbone: ``resnet101``, ``resnet50``, ``darknet53`` or ``resnet_tiny`` (a small
            BasicBlock ResNet for models trained by this project).
        priors: the anchor layout (also fixes the input size).
        class_names: foreground class names; index ``i`` is network class ``i + 1``.
        category_ids: COCO category id for each foreground class.
        num_prototypes: number of mask prototypes (32 for every official config).
        mean_bgr, std_bgr: input normalisation, BGR order, in 0..255 pixel units.
        normalize: ``"mean_std"`` (``(x - mean) / std``, the ResNet configs) or ``"unit"``
            (``x / 255``, the reference's DarkNet transform).
        fpn_channels: width of the FPN, ProtoNet and prediction head (256 for every official
            config; small project models use fewer).
        dcn_layers: per ResNet stage, the reference's ``dcn_layers``: how many of the stage's last
            bottlenecks use a modulated deformable 3x3 conv (DCNv2); ``(0, 0, 0, 0)`` is plain
            YOLACT, ``(0, 4, 6, 3)`` YOLACT++ R50. See ``uses_dcn``.
        dcn_interval: the reference's ``dcn_interval``: of those, only every n-th block
            (by index within the stage) is deformable (3 for yolact_plus_base).
        mask_rescoring: the model has the FastMaskIoUNet (YOLACT++): each detection gets a
            mask score ``box score * predicted mask IoU`` besides its box score.
    """

    name: str
    backbone: str
    priors: PriorConfig
    class_names: tuple[str, ...] = COCO_CLASSES
    category_ids: tuple[int, ...] = field(default=())
    num_prototypes: int = 32
    mean_bgr: tuple[float, float, float] = MEAN_BGR
    std_bgr: tuple[float, float, float] = STD_BGR
    normalize: str = "mean_std"
    fpn_channels: int = 256
    dcn_layers: tuple[int, int, int, int] = (0, 0, 0, 0)
    dcn_interval: int = 1
    mask_rescoring: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dcn_layers", tuple(int(n) for n in self.dcn_layers))
        if len(self.dcn_layers) != 4 or min(self.dcn_layers) < 0 or self.dcn_interval < 1:
            raise ValueError(
                f"ModelConfig {self.name!r}: dcn_layers must be 4 counts >= 0 and dcn_interval >= 1, "
                f"got {self.dcn_layers} and {self.dcn_interval}"
            )
        if any(self.dcn_layers) and not self.backbone.startswith("resnet"):
            raise ValueError(f"ModelConfig {self.name!r}: dcn_layers needs a ResNet backbone, got {self.backbone!r}")
        if self.fpn_channels < 1:
            raise ValueError(f"ModelConfig.fpn_channels must be >= 1, got {self.fpn_channels}")
        if self.normalize not in ("mean_std", "unit"):
            raise ValueError(f"ModelConfig.normalize must be 'mean_std' or 'unit', got {self.normalize!r}")
        if not self.category_ids:
            object.__setattr__(self, "category_ids", tuple(range(1, len(self.class_names) + 1)))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError(
                f"ModelConfig {self.name!r}: {len(self.class_names)} class names but "
                f"{len(self.category_ids)} category ids"
            )

    @property
    def input_size(self) -> int:
        return self.priors.input_size

    @property
    def is_plus(self) -> bool:
        """YOLACT++: deformable convs or mask re-scoring."""
        return any(self.dcn_layers) or self.mask_rescoring

    def uses_dcn(self, stage: int, block: int, num_blocks: int) -> bool:
        """Whether ``backbone.layers.<stage>.<block>`` is deformable (the reference's
        ``ResNetBackbone._make_layer``: block 0 iff ``dcn_layers >= num_blocks``, block ``i >= 1``
        iff ``i + dcn_layers >= num_blocks`` and ``i % dcn_interval == 0``)."""
        return block in dcn_blocks(num_blocks, self.dcn_layers[stage], self.dcn_interval)

    @property
    def num_classes(self) -> int:
        """Number of network classes, background included (81 for COCO)."""
        return len(self.class_names) + 1

    @property
    def proto_size(self) -> int:
        """Side of the prototype masks: twice the finest feature map (138 at 550)."""
        return 2 * self.priors.conv_sizes[0]


def feature_map_sizes(input_size: int, num_levels: int = 5) -> tuple[int, ...]:
    """Sides of the P3..P7 feature maps for a square input.

    Every stride-2 layer of the official backbones (7x7/3x3 convs with "same" padding and
    the 3x3 max-pool) maps a side ``n`` to ``ceil(n / 2)``; P3 is the third halving.
    """
    sizes = []
    side = input_size
    for level in range(2 + num_levels):
        side = math.ceil(side / 2)
        if level >= 2:
            sizes.append(side)
    return tuple(sizes)


def scaled_priors(input_size: int) -> PriorConfig:
    """The yolact_base prior layout for another input size (P3..P7, three square anchors per cell).

    Scales are the yolact_base pixel scales rescaled from 550 and truncated to int, as the
    reference does for im400 / im700.
    """
    scales = tuple((int(s / 550 * input_size),) for s in _BASE_SCALES)
    return PriorConfig(input_size=input_size, conv_sizes=feature_map_sizes(input_size), scales=scales)


def _plus(name: str, backbone: str, dcn_layers: tuple[int, int, int, int], dcn_interval: int) -> ModelConfig:
    """A YOLACT++ config: DCNv2 backbone, 3 scales x 3 aspect ratios, rectangular anchors, mask re-scoring."""
    priors = PriorConfig(input_size=550, conv_sizes=feature_map_sizes(550), scales=_PLUS_SCALES, square=False)
    return ModelConfig(
        name=name, backbone=backbone, priors=priors, category_ids=COCO_CATEGORY_IDS,
        dcn_layers=dcn_layers, dcn_interval=dcn_interval, mask_rescoring=True,
    )  # fmt: skip


def _official(name: str, backbone: str, input_size: int) -> ModelConfig:
    priors = scaled_priors(input_size)
    # The reference feeds DarkNet RGB / 255 with no mean/std ("darknet_transform").
    normalize = "unit" if backbone == "darknet53" else "mean_std"
    return ModelConfig(name=name, backbone=backbone, priors=priors, category_ids=COCO_CATEGORY_IDS, normalize=normalize)


OFFICIAL_CONFIGS: dict[str, ModelConfig] = {
    cfg.name: cfg
    for cfg in (
        _official("yolact_base", "resnet101", 550),
        _official("yolact_resnet50", "resnet50", 550),
        _official("yolact_darknet53", "darknet53", 550),
        _official("yolact_im400", "resnet101", 400),
        _official("yolact_im700", "resnet101", 700),
        _plus("yolact_plus_base", "resnet101", (0, 4, 23, 3), 3),
        _plus("yolact_plus_resnet50", "resnet50", (0, 4, 6, 3), 1),
    )
}


def get_config(name: str) -> ModelConfig:
    """Return the official config called ``name``; the error lists the valid names."""
    try:
        return OFFICIAL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown YOLACT config {name!r}; expected one of {sorted(OFFICIAL_CONFIGS)}") from None


def with_classes(config: ModelConfig, class_names: tuple[str, ...], name: str | None = None) -> ModelConfig:
    """A copy of ``config`` for a custom dataset (category ids 1..N)."""
    return replace(
        config,
        name=name or config.name,
        class_names=tuple(class_names),
        category_ids=tuple(range(1, len(class_names) + 1)),
    )

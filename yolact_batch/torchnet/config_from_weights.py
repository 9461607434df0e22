"""The ``ModelConfig`` of a checkpoint: what its weights determine, plus what the user says.

The weights determine the network (``CheckpointLayout``). The rest comes, in this order, from
``--overrides`` / command-line options, else ``--config NAME``, else the official config with that
network (``yolact_base`` for ResNet-101, ``yolact_resnet50``, ``yolact_darknet53``,
``yolact_plus_base``, ``yolact_plus_resnet50``): input size, anchor scales, aspect ratios, square
anchors, class names and ids, and the detect defaults. A named config is checked against the weights
and a disagreement names both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from yolact_batch.core.configs import (
    OFFICIAL_CONFIGS,
    ModelConfig,
    PriorConfig,
    dcn_blocks,
    feature_map_sizes,
    get_config,
)
from yolact_batch.core.overrides import ConfigOverrides
from yolact_batch.torchnet.checkpoint_layout import (
    CheckpointLayout,
    describe_backbone,
)

# The official config whose geometry and classes a checkpoint with this network defaults to.
DEFAULT_CONFIG = {
    ("resnet101", False): "yolact_base",
    ("resnet50", False): "yolact_resnet50",
    ("darknet53", False): "yolact_darknet53",
    ("resnet_tiny", False): "yolact_base",
    ("resnet101", True): "yolact_plus_base",
    ("resnet50", True): "yolact_plus_resnet50",
}
_REFERENCE_SIZE = 550


@dataclass(frozen=True)
class ResolvedConfig:
    """A checkpoint's config and where each part of it came from.

    Attributes:
        config: the config to build and export the network with.
        base: the official config the defaults came from (``--config`` or the one for the network).
        sources: part (``"input size"``, ``"anchors"``, ``"classes"``, ...) -> where it came from.
        notes: things worth telling the user (ignored override keys, unscaled anchors, ...).
    """

    config: ModelConfig
    base: str
    sources: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """The config as one readable block (what ``yolact-batch export`` prints)."""
        c, p = self.config, self.config.priors
        names = ", ".join(c.class_names[:6]) + (", ..." if len(c.class_names) > 6 else "")
        ids = list(c.category_ids)
        if ids == list(range(1, len(ids) + 1)):
            id_text = f"ids 1..{len(ids)}"
        else:
            id_text = f"ids {ids}" if len(ids) <= 8 else f"ids {ids[:4]} ... {ids[-2:]}"
        plus = [f"deformable convs {list(c.dcn_layers)} interval {c.dcn_interval}"] if any(c.dcn_layers) else []
        plus += ["mask re-scoring"] if c.mask_rescoring else []
        scales = "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in level) + "]" for level in p.scales) + "]"
        square = "square anchors" if p.square else "rectangular anchors"
        rows = [
            ("name", c.name, ""),
            ("backbone", describe_backbone(c.backbone), "weights"),
            ("YOLACT++", ", ".join(plus) if plus else "no", "weights"),
            ("classes", f"{len(c.class_names)} + background: {names} ({id_text})", self.sources["classes"]),
            ("prototypes", str(c.num_prototypes), "weights"),
            ("FPN width", str(c.fpn_channels), "weights"),
            ("input size", f"{c.input_size} x {c.input_size}, normalise {c.normalize}", self.sources["input size"]),
            ("anchor scales", scales, self.sources["anchor scales"]),
            ("aspect ratios", f"{list(p.aspect_ratios)}, {square}", self.sources["aspect ratios"]),
            ("priors", f"{p.num_priors} ({len(p.scales[0]) * len(p.aspect_ratios)} per location)", ""),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"  {k:<{width}}  {v}" + (f"   [{s}]" if s else "") for k, v, s in rows]
        return "\n".join(["config:", *lines, *(f"  note: {n}" for n in self.notes)])


def resolve_config(
    layout: CheckpointLayout,
    *,
    config_name: str | None = None,
    overrides: ConfigOverrides = ConfigOverrides(),
    class_names: tuple[str, ...] | None = None,
    category_ids: tuple[int, ...] | None = None,
    class_origin: str = "--class-names",
    name: str = "custom",
) -> ResolvedConfig:
    """The config for a checkpoint with ``layout``.

    Args:
        layout: what the weights determine (``checkpoint_layout.read_layout``).
        config_name: ``--config``: an official config whose geometry and classes are the defaults;
            it must describe the same network as the weights.
        overrides: eval-time settings of a custom config (``--overrides`` and options).
        class_names, category_ids: ``--class-names`` (ids default to ``1..N``); they may not be
            given together with ``dataset.class_names`` in ``overrides``.
        class_origin: where ``class_names`` came from, for messages.
        name: the config name when the result is not an official config unchanged.

    Raises:
        ValueError: the weights disagree with ``config_name``, the overrides or the class count;
            the message names both sides and the fix.
    """
    base_name = config_name or DEFAULT_CONFIG[layout.backbone, layout.is_plus]
    if base_name not in OFFICIAL_CONFIGS:
        raise ValueError(
            f"the checkpoint has a {_network(layout)} network, whose default config {base_name!r} this "
            f"yolact_batch does not have; pass --config with one of {sorted(OFFICIAL_CONFIGS)}"
        )
    base = get_config(base_name)
    given = f"--config {config_name}" if config_name else f"default ({base_name})"
    if config_name:
        _check_named(layout, base)
    sources = {"input size": given, "anchor scales": given, "aspect ratios": given, "classes": given}
    priors, notes = _priors(layout, base, overrides, given, sources)
    names, ids = _classes(layout, base, overrides, class_names, category_ids, class_origin, given, sources)
    if overrides.mask_rescoring is not None and overrides.mask_rescoring != layout.mask_rescoring:
        raise ValueError(
            f"{overrides.origin} sets use_maskiou = {overrides.mask_rescoring} but the checkpoint "
            f"{'has' if layout.mask_rescoring else 'has no'} mask re-scoring net (maskiou_net.*)"
        )
    config = replace(
        base,
        backbone=layout.backbone,
        dcn_layers=layout.dcn_layers,
        dcn_interval=layout.dcn_interval,
        mask_rescoring=layout.mask_rescoring,
        num_prototypes=layout.num_prototypes,
        fpn_channels=layout.fpn_channels,
        priors=priors,
        class_names=names,
        category_ids=ids,
    )
    if config != base:
        config = replace(config, name=name)
    if overrides.ignored:
        notes = (
            *notes,
            f"ignored from {overrides.origin} (training-only or read from the weights): {list(overrides.ignored)}",
        )
    return ResolvedConfig(config=config, base=base_name, sources=sources, notes=notes)


def _network(layout: CheckpointLayout) -> str:
    return f"{'YOLACT++ ' if layout.is_plus else ''}{layout.describe_backbone()}"


def _check_named(layout: CheckpointLayout, config: ModelConfig) -> None:
    """``--config NAME`` must describe the network the weights hold."""
    blocks = layout.stage_blocks
    where = f"--config {config.name}"
    if config.backbone != layout.backbone:
        raise ValueError(
            f"checkpoint has {layout.describe_backbone()} but {where} is {describe_backbone(config.backbone)}"
        )
    mine_dcn = [dcn_blocks(n, d, layout.dcn_interval) for n, d in zip(blocks, layout.dcn_layers)]
    their_dcn = [dcn_blocks(n, d, config.dcn_interval) for n, d in zip(blocks, config.dcn_layers)]
    if layout.backbone != "darknet53" and mine_dcn != their_dcn:
        raise ValueError(
            f"checkpoint has deformable convs in {_dcn_text(mine_dcn)} but {where} has them in {_dcn_text(their_dcn)}"
        )
    if config.mask_rescoring != layout.mask_rescoring:
        have = "has a mask re-scoring net (maskiou_net.*)" if layout.mask_rescoring else "has no mask re-scoring net"
        raise ValueError(f"checkpoint {have} but {where} {'uses' if config.mask_rescoring else 'does not use'} one")
    for what, mine, other in (
        ("prototypes", layout.num_prototypes, config.num_prototypes),
        ("FPN channels", layout.fpn_channels, config.fpn_channels),
    ):
        if mine != other:
            raise ValueError(f"checkpoint has {mine} {what} but {where} has {other}")


def _dcn_text(per_stage: list[frozenset[int]]) -> str:
    used = {f"layers.{s}": sorted(b) for s, b in enumerate(per_stage) if b}
    return str(used) if used else "no block"


def _priors(
    layout: CheckpointLayout, base: ModelConfig, o: ConfigOverrides, given: str, sources: dict[str, str]
) -> tuple[PriorConfig, tuple[str, ...]]:
    p = base.priors
    size = o.input_size if o.input_size is not None else p.input_size
    scales = o.scales if o.scales is not None else p.scales
    ratios = o.aspect_ratios if o.aspect_ratios is not None else p.aspect_ratios
    square = o.square_anchors if o.square_anchors is not None else p.square
    if o.input_size is not None:
        sources["input size"] = o.origin
    if o.scales is not None:
        sources["anchor scales"] = o.origin
    if (o.aspect_ratios, o.square_anchors) != (None, None):
        both = None not in (o.aspect_ratios, o.square_anchors)
        sources["aspect ratios"] = o.origin if both else f"{o.origin} + {given}"
    anchors = sources["anchor scales"]
    if sources["aspect ratios"] != anchors:
        anchors = f"{anchors} (scales) and {sources['aspect ratios']} (aspect ratios)"
    conv_sizes = feature_map_sizes(size)
    if len(scales) != len(conv_sizes):
        raise ValueError(
            f"backbone.pred_scales from {sources['anchor scales']} has {len(scales)} levels but the network predicts "
            f"on {len(conv_sizes)} (P3..P7): give one list of scales per level"
        )
    per_location = len(scales[0]) * len(ratios)
    if per_location != layout.anchors_per_location:
        raise ValueError(
            f"checkpoint has {layout.anchors_per_location} anchors per location but {anchors} gives "
            f"{len(scales[0])} scale(s) x {len(ratios)} aspect ratio(s) = {per_location}: set backbone.pred_scales "
            "and backbone.pred_aspect_ratios in --overrides to the ones the model was trained with"
        )
    notes = ()
    if size != p.input_size and o.scales is None:
        notes = (
            f"input size {size} with {base.name}'s anchor scales {[list(s) for s in scales]} unchanged, as the "
            f"reference's {base.name}_config.copy({{'max_size': {size}}}) keeps them; if the model was trained "
            "with rescaled anchors, give backbone.pred_scales in --overrides (yolact_im400 / yolact_im700: use --config)",
        )
    return PriorConfig(
        input_size=size, conv_sizes=conv_sizes, scales=scales, aspect_ratios=ratios, square=square
    ), notes


def _classes(
    layout: CheckpointLayout,
    base: ModelConfig,
    o: ConfigOverrides,
    names: tuple[str, ...] | None,
    ids: tuple[int, ...] | None,
    origin: str,
    given: str,
    sources: dict[str, str],
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    wanted = layout.num_classes - 1
    if o.num_classes is not None and o.num_classes != layout.num_classes:
        raise ValueError(
            f"{o.origin} sets num_classes = {o.num_classes} but the checkpoint predicts {layout.num_classes} "
            f"({wanted} classes + background)"
        )
    if names is not None and o.class_names is not None:
        raise ValueError(f"class names given twice ({origin} and dataset.class_names in {o.origin}): keep one")
    if o.class_names is not None:
        names, ids, origin = o.class_names, o.category_ids, o.origin
    if names is None:
        names, ids = base.class_names, base.category_ids
        origin = given
        if len(names) != wanted:
            raise ValueError(
                f"checkpoint predicts {wanted} classes (+ background) but {given} has {len(names)}: name the "
                f"{wanted} classes with --class-names (instances.json, a names.txt file, or a,b,c)"
            )
    elif len(names) != wanted:
        raise ValueError(f"{origin} names {len(names)} classes but the checkpoint predicts {wanted} (+ background)")
    sources["classes"] = origin
    return tuple(names), tuple(ids) if ids is not None else tuple(range(1, len(names) + 1))

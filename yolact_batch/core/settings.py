"""Detection and post-processing settings (frozen, picklable, passed explicitly).

``InferenceRequest`` is what a caller asks for (the CLI, ``YolactModel`` and the job all
build one); ``InferenceRequest.resolve`` turns it, against a model's defaults, into the
``InferenceSettings`` that post-processing runs with. A new setting is one field of
``InferenceRequest`` (the CLI option is derived from it) and its use in ``resolve``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal, Sequence

# PIL's own decompression-bomb refusal (2 x its 89.5 Mpx warning limit): 179 Mpx, which decodes
# to 537 MB of BGR, as large as a batch worker should accept.
DEFAULT_MAX_PIXELS = 178_956_970


NMS_METHODS = ("fast", "greedy")


@dataclass(frozen=True)
class DetectSettings:
    """How raw heads become detections. Defaults are the reference evaluation settings.

    Attributes:
        conf_threshold: a prior is considered only if its best foreground confidence is
            strictly greater than this (reference ``nms_conf_thresh``, 0.05).
        iou_threshold: a box is suppressed when its IoU with a higher-scored box of the
            same class (any class with ``cross_class_nms``) is strictly greater than this.
        top_k: candidates per class entering Fast NMS (all classes with ``cross_class_nms``).
        max_detections: detections kept per image after NMS, best scores first.
        cross_class_nms: one NMS over all classes instead of one per class.
        nms: ``"fast"`` (YOLACT's Fast NMS, the reference default) or ``"greedy"``
            (classic sequential NMS, which never lets a suppressed box suppress others).
    """

    conf_threshold: float = 0.05
    iou_threshold: float = 0.5
    top_k: int = 200
    max_detections: int = 100
    cross_class_nms: bool = False
    nms: Literal["fast", "greedy"] = "fast"

    def __post_init__(self) -> None:
        if self.nms not in NMS_METHODS:
            raise ValueError(f"DetectSettings.nms must be 'fast' or 'greedy', got {self.nms!r}")
        for name in ("top_k", "max_detections"):
            if getattr(self, name) < 1:
                raise ValueError(f"DetectSettings.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"DetectSettings.iou_threshold must be in [0, 1], got {self.iou_threshold}")


@dataclass(frozen=True)
class OutputSettings:
    """What is kept of the detections and how masks are made.

    Attributes:
        score_threshold: keep detections with score strictly greater than this
            (reference eval uses 0; 0.3 is a good pre-labeling preset).
        classes: keep only these foreground class indices (0-based); ``None`` keeps all.
        mask_threshold: a full-resolution mask pixel is on when its value is strictly
            greater than this.
        crop_masks: zero each mask outside its box (at prototype resolution, padding 1).
    """

    score_threshold: float = 0.0
    classes: tuple[int, ...] | None = None
    mask_threshold: float = 0.5
    crop_masks: bool = True

    def __post_init__(self) -> None:
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))


@dataclass(frozen=True)
class InferenceSettings:
    """Detect settings plus output settings: everything that changes the results."""

    detect: DetectSettings = DetectSettings()
    output: OutputSettings = OutputSettings()


# Detect settings a graph-contract model has baked in: they cannot change after export.
_BAKED = ("conf_threshold", "iou_threshold", "top_k", "cross_class_nms", "nms")


def _setting(help: str, **kwargs):
    return field(metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class InferenceRequest:
    """Every detection setting a caller may ask for, one name each.

    ``None`` means "the model's default" (the reference evaluation settings for our exports).
    The help texts are the CLI's (``cli/options.py`` derives one option per field).

    Attributes:
        score_threshold: keep detections scoring strictly above this (reference: 0;
            pre-labeling: 0.3).
        classes: keep only these classes, by name or COCO category id; None keeps all.
        mask_threshold: a mask pixel is on when strictly above this (reference: 0.5).
        max_detections: detections per image (reference: 100).
        top_k: candidates per class entering NMS (reference: 200; raw models only).
        conf_threshold: minimum best-class confidence of a prior (reference: 0.05; raw only).
        iou_threshold: NMS IoU threshold (reference: 0.5; raw only).
        cross_class_nms: one NMS over all classes (reference: False; raw only).
        nms: ``"fast"`` (reference) or ``"greedy"`` (raw only).
        max_pixels: refuse images with more pixels than this (decompression bombs).
    """

    score_threshold: float = _setting("keep scores above this (0; 0.3 for pre-labeling)", default=0.0)
    classes: tuple[str | int, ...] | None = _setting(
        "keep only these classes: comma-separated names or COCO category ids", default=None
    )
    mask_threshold: float = _setting("mask pixel on above this (0.5)", default=0.5)
    max_detections: int | None = _setting("detections per image (model default: 100)", default=None)
    top_k: int | None = _setting("candidates per class entering NMS (raw models; 200)", default=None)
    conf_threshold: float | None = _setting("minimum prior confidence (raw models; 0.05)", default=None)
    iou_threshold: float | None = _setting("NMS IoU threshold (raw models; 0.5)", default=None)
    cross_class_nms: bool | None = _setting("one NMS over all classes (raw models)", default=None)
    nms: str | None = _setting("NMS method: fast or greedy (raw models; fast)", default=None)
    max_pixels: int = _setting("reject larger images (decompression bombs)", default=DEFAULT_MAX_PIXELS)

    def __post_init__(self) -> None:
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.nms is not None and self.nms not in NMS_METHODS:
            raise ValueError(f"nms must be one of {list(NMS_METHODS)}, got {self.nms!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")

    def detect_overrides(self) -> dict:
        """The ``DetectSettings`` fields this request sets explicitly."""
        names = {f.name for f in fields(DetectSettings)}
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def resolve(
        self,
        defaults: DetectSettings,
        *,
        class_names: Sequence[str],
        category_ids: Sequence[int],
        graph: bool = False,
        baked_score_threshold: float = 0.0,
        crop_masks: bool = True,
    ) -> InferenceSettings:
        """The settings to run a model with: its ``defaults`` overridden by this request.

        A ``graph`` model ran NMS inside the network, so its NMS settings are fixed: it can
        only be asked for fewer detections or a higher score threshold.

        Raises:
            ValueError: a setting the model cannot honour, or an unknown class, with the fix.
        """
        detect = self.detect_overrides()
        if graph:
            changed = {k: getattr(defaults, k) for k in _BAKED if k in detect and detect[k] != getattr(defaults, k)}
            if changed:
                raise ValueError(
                    f"this graph-contract model has NMS settings {changed} built in; to use other values "
                    "re-export it with those settings (yolact-batch export ...) or export with --contract raw"
                )
            if detect.get("max_detections", defaults.max_detections) > defaults.max_detections:
                raise ValueError(
                    f"this graph-contract model returns at most {defaults.max_detections} detections per image"
                )
            if self.score_threshold < baked_score_threshold:
                raise ValueError(
                    f"this graph-contract model drops scores <= {baked_score_threshold}; "
                    f"score_threshold {self.score_threshold} cannot bring them back"
                )
        output = OutputSettings(
            score_threshold=self.score_threshold,
            classes=resolve_classes(self.classes, class_names, category_ids),
            mask_threshold=self.mask_threshold,
            crop_masks=crop_masks,
        )
        return InferenceSettings(replace(defaults, **detect), output)


def resolve_classes(
    classes: Sequence[str | int] | None, class_names: Sequence[str], category_ids: Sequence[int]
) -> tuple[int, ...] | None:
    """Class filter given as names or COCO category ids -> sorted foreground class indices."""
    if classes is None:
        return None
    resolved = []
    for c in classes:
        if isinstance(c, str) and not c.strip().isdigit():
            if c not in class_names:
                raise ValueError(f"unknown class name {c!r}; the model's classes are {list(class_names)}")
            resolved.append(list(class_names).index(c))
        else:
            if int(c) not in category_ids:
                raise ValueError(f"unknown category id {c}; the model's category ids are {list(category_ids)}")
            resolved.append(list(category_ids).index(int(c)))
    return tuple(sorted(set(resolved)))

"""Detection and post-processing settings (frozen, picklable, passed explicitly)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class DetectSettings:
    """How raw heads become detections. Defaults are the reference evaluation settings.

    Attributes:
        conf_threshold: a prior is considered only if its best foreground confidence is
            strictly greater than this (reference ``nms_conf_thresh``, 0.05).
        iou_threshold: a box is suppressed when its IoU with a higher-scored box of the
            same class (any class with ``cross_class``) is strictly greater than this.
        top_k: candidates per class entering Fast NMS (all classes with ``cross_class``).
        max_detections: detections kept per image after NMS, best scores first.
        cross_class: one NMS over all classes instead of one per class.
        method: ``"fast"`` (YOLACT's Fast NMS, the reference default) or ``"greedy"``
            (classic sequential NMS, which never lets a suppressed box suppress others).
    """

    conf_threshold: float = 0.05
    iou_threshold: float = 0.5
    top_k: int = 200
    max_detections: int = 100
    cross_class: bool = False
    method: Literal["fast", "greedy"] = "fast"

    def __post_init__(self) -> None:
        if self.method not in ("fast", "greedy"):
            raise ValueError(f"DetectSettings.method must be 'fast' or 'greedy', got {self.method!r}")
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

    def with_overrides(self, **kwargs) -> "InferenceSettings":
        """Copy with any field of ``detect`` or ``output`` replaced by keyword."""
        detect_fields = set(DetectSettings.__dataclass_fields__)
        detect_kw = {k: v for k, v in kwargs.items() if k in detect_fields}
        output_kw = {k: v for k, v in kwargs.items() if k not in detect_fields}
        unknown = set(output_kw) - set(OutputSettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown inference setting(s): {sorted(unknown)}")
        return InferenceSettings(replace(self.detect, **detect_kw), replace(self.output, **output_kw))


PRELABEL_SETTINGS = InferenceSettings(output=OutputSettings(score_threshold=0.3))

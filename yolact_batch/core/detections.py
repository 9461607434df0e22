"""``Detections``: the instances found in one image, validated, indexable, convertible."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yolact_batch.core import rle as rle_codec


@dataclass(frozen=True, eq=False)
class Detections:
    """Instances of one image. Boxes are ``(x1, y1, x2, y2)`` in pixels.

    Attributes:
        boxes: ``float32[N, 4]`` pixel boxes (integer-valued for model outputs, as the
            reference truncates them).
        scores: ``float32[N]`` class scores, descending for model outputs.
        class_ids: ``int64[N]`` foreground class index (0-based) into ``class_names``.
        rles: ``N`` COCO RLEs ``{"size": [h, w], "counts": str}``, one per instance.
        image_size: ``(height, width)`` of the image the masks cover.
        class_names: name of each foreground class of the model.
        category_ids: dataset category id (COCO id) of each foreground class.
        areas: ``int64[N]`` mask pixel counts; computed from ``rles`` when not given.
        mask_scores: ``float32[N]`` YOLACT++ only: the re-scored mask score of each instance
            (``score * predicted mask IoU``, the reference's segm score); ``scores`` stay the box
            scores and fix the order. None for models without mask re-scoring.

    Index with a boolean mask, integer array or slice: ``dets[dets.scores > 0.3]``.
    ``==`` compares every field by value (arrays element-wise, exactly); instances are unhashable.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    rles: tuple[dict, ...]
    image_size: tuple[int, int]
    class_names: tuple[str, ...] = field(default=(), repr=False)
    category_ids: tuple[int, ...] = field(default=(), repr=False)
    areas: np.ndarray | None = field(default=None, repr=False)
    mask_scores: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.scores)
        if len(self.rles) != n:
            raise ValueError(f"Detections.rles: expected {n} RLEs (one per box), got {len(self.rles)}")
        if self.areas is None:
            object.__setattr__(self, "areas", np.array([rle_codec.area(r) for r in self.rles], dtype=np.int64))
        expected = {"boxes": (n, 4), "scores": (n,), "class_ids": (n,), "areas": (n,)}
        if self.mask_scores is not None:
            expected["mask_scores"] = (n,)
        for name, shape in expected.items():
            actual = np.shape(getattr(self, name))
            if actual != shape:
                raise ValueError(f"Detections.{name}: expected shape {shape}, got {actual}")
        h, w = self.image_size
        for i, r in enumerate(self.rles):
            if list(r["size"]) != [h, w]:
                raise ValueError(f"Detections.rles[{i}]: size {r['size']} does not match image_size {[h, w]}")
        if self.class_names and n and (self.class_ids.min() < 0 or self.class_ids.max() >= len(self.class_names)):
            raise ValueError(
                f"Detections.class_ids must be within [0, {len(self.class_names)}), "
                f"got range [{self.class_ids.min()}, {self.class_ids.max()}]"
            )

    @classmethod
    def empty(cls, image_size: tuple[int, int], class_names=(), category_ids=()) -> "Detections":
        """No instances (a valid value, never ``None``)."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            (),
            tuple(image_size),
            tuple(class_names),
            tuple(category_ids),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            self.image_size == other.image_size
            and self.class_names == other.class_names
            and self.category_ids == other.category_ids
            and all(
                np.array_equal(getattr(self, n), getattr(other, n)) for n in ("boxes", "scores", "class_ids", "areas")
            )
            and [(list(r["size"]), r["counts"]) for r in self.rles]
            == [(list(r["size"]), r["counts"]) for r in other.rles]
            and (self.mask_scores is None) == (other.mask_scores is None)
            and (self.mask_scores is None or np.array_equal(self.mask_scores, other.mask_scores))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: equal values, no stable hash

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: Any) -> "Detections":
        picked = np.arange(len(self))[index]
        picked = np.atleast_1d(picked)
        return Detections(
            self.boxes[picked],
            self.scores[picked],
            self.class_ids[picked],
            tuple(self.rles[i] for i in picked),
            self.image_size,
            self.class_names,
            self.category_ids,
            self.areas[picked],
            None if self.mask_scores is None else self.mask_scores[picked],
        )

    @property
    def segm_scores(self) -> np.ndarray:
        """The score of each mask: ``mask_scores`` when the model re-scores masks, else ``scores``."""
        return self.scores if self.mask_scores is None else self.mask_scores

    @property
    def names(self) -> list[str]:
        """Class name of each instance."""
        return [self.class_names[c] for c in self.class_ids]

    def masks(self) -> np.ndarray:
        """Dense ``bool[N, H, W]`` masks (decoded on demand; large for big images)."""
        h, w = self.image_size
        if not self.rles:
            return np.zeros((0, h, w), bool)
        return np.stack([rle_codec.decode(r) for r in self.rles])

    def to_supervision(self):
        """Convert to ``supervision.Detections`` (requires the ``supervision`` package).

        ``confidence`` is the mask score (``segm_scores``: the re-scored one for YOLACT++, as the
        reference displays it); ``data`` holds ``class_name``, and for YOLACT++ ``box_score`` and
        ``mask_score`` too.
        """
        try:
            import supervision as sv
        except ImportError as exc:
            raise ImportError("to_supervision() needs the supervision package: pip install supervision") from exc
        data = {"class_name": np.array(self.names, dtype=object)}
        if self.mask_scores is not None:
            data.update(box_score=self.scores.astype(np.float32), mask_score=self.mask_scores.astype(np.float32))
        return sv.Detections(
            xyxy=self.boxes.astype(np.float32),
            mask=self.masks(),
            confidence=self.segm_scores.astype(np.float32),
            class_id=self.class_ids.astype(int),
            data=data,
        )

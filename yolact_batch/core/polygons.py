"""Masks to polygons for labeling tools: contours, simplification, one-ring merging.

Vertices are ``(x, y)`` pixel indices of the mask's boundary pixels, as ``cv2.findContours``
returns them: filling the ring with ``cv2.fillPoly`` (how Ultralytics and supervision turn
YOLO polygons back into masks) covers those boundary pixels. Writers shift by 0.5 where their
format measures from pixel corners (COCO, Label Studio).

Deliberate choices, in one place:
- simplification is Douglas-Peucker (``cv2.approxPolyDP``) with ``tolerance`` pixels of
  maximum deviation; 0 keeps every boundary pixel turn (``CHAIN_APPROX_SIMPLE``, lossless);
- a ring left with fewer than 3 vertices or zero area (a speck, a 1-pixel line) is dropped
  and counted: labeling tools cannot show or edit it;
- holes are kept as separate rings, run opposite to the outer rings, so a format with one
  polygon per object can carry them through :func:`merge_rings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MaskRings", "mask_rings", "merge_rings"]


@dataclass(frozen=True)
class MaskRings:
    """The rings of one mask.

    Attributes:
        outer: outer boundaries, ``int32[N_i, 2]`` (x, y) each, largest area first, in the
            order ``cv2.findContours`` traces them (negative ``cv2.contourArea(oriented=True)``).
        holes: hole boundaries, same layout, run the other way (positive signed area).
        dropped: rings dropped for having fewer than 3 vertices or no area after simplification.
    """

    outer: tuple[np.ndarray, ...]
    holes: tuple[np.ndarray, ...]
    dropped: int


def _oriented(ring: np.ndarray, positive: bool) -> np.ndarray:
    import cv2

    area = cv2.contourArea(ring.astype(np.float32), oriented=True)
    return ring if (area > 0) == positive else ring[::-1].copy()


def mask_rings(mask: np.ndarray, tolerance: float = 0.0) -> MaskRings:
    """Outer and hole rings of ``bool[H, W]``, simplified to ``tolerance`` pixels.

    An empty mask gives no rings and nothing dropped.
    """
    import cv2

    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return MaskRings((), (), 0)
    y0, x0 = int(ys.min()), int(xs.min())
    crop = np.ascontiguousarray(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], dtype=np.uint8)
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
    outer: list[tuple[float, np.ndarray]] = []
    holes: list[tuple[float, np.ndarray]] = []
    dropped = 0
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance, True)
        ring = contour.reshape(-1, 2).astype(np.int32)
        area = abs(cv2.contourArea(ring.astype(np.float32)))
        if len(ring) < 3 or area == 0:
            dropped += 1
            continue
        (holes if parent >= 0 else outer).append((area, _oriented(ring, positive=parent >= 0)))
    by_area = lambda rings: tuple(r for _, r in sorted(rings, key=lambda item: -item[0]))  # noqa: E731
    return MaskRings(by_area(outer), by_area(holes), dropped)


def _nearest(ring: np.ndarray, other: np.ndarray, chunk: int = 512) -> tuple[int, int]:
    """(i, j) minimising the distance between ``ring[i]`` and ``other[j]`` (first on ties)."""
    best, where = None, (0, 0)
    a = ring.astype(np.int64)
    for start in range(0, len(other), chunk):
        b = other[start : start + chunk].astype(np.int64)
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        k = int(d.argmin())
        if best is None or d.flat[k] < best:
            best, where = d.flat[k], (k // d.shape[1], start + k % d.shape[1])
    return where


def merge_rings(rings: MaskRings) -> np.ndarray:
    """All rings of a mask as one polygon ``int32[N, 2]``, for one-polygon-per-object formats.

    Each further ring (other parts, then holes) is joined to the polygon built so far at their
    closest vertices by a zero-width bridge walked out and back (a "keyhole"), the way
    Ultralytics' COCO converter joins multi-part masks. Holes run opposite to the outer rings,
    so ``cv2.fillPoly`` leaves them empty; the bridges add at most a 1-pixel line between
    parts. Returns ``int32[0, 2]`` when there is no outer ring.
    """
    if not rings.outer:
        return np.zeros((0, 2), np.int32)
    polygon = rings.outer[0]
    for ring in (*rings.outer[1:], *rings.holes):
        i, j = _nearest(polygon, ring)
        entered = np.roll(ring, -j, axis=0)
        polygon = np.concatenate([polygon[: i + 1], entered, entered[:1], polygon[i:]])
    return polygon.astype(np.int32)

"""A deterministic synthetic instance-segmentation dataset of coloured shapes, in COCO format.

Five classes with distinct geometry (disc, square, triangle, ring, star) are drawn with random
colours and textures, sizes, rotations and overlaps on noisy, cluttered backgrounds of varied
size. Each image comes from its own random stream ``(seed, split, index)``, so a split's first
``n`` images do not depend on how many are generated and two splits never share an image.

    json_path = make_dataset("data/shapes", split="val", num_images=200, seed=SHAPES_SEED)

writes ``data/shapes/val/000000.jpg ...`` and ``data/shapes/val/instances.json`` (file names are
relative to the json's folder; segmentations are COCO RLE with ``iscrowd`` 0; ``bbox`` and
``area`` are those of the visible mask).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolact_batch.core import rle

SHAPE_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "star")
SHAPES_SEED = 20240611  # the seed of the shipped model's train and held-out splits
_SUBPIXEL_BITS = 4  # cv2 fixed-point shift: vertices at 1/16 px keep small shapes round


@dataclass(frozen=True)
class SceneSettings:
    """How the scenes are drawn.

    Attributes:
        min_side, max_side: image width and height are drawn independently in this range (px).
        min_objects, max_objects: shapes per image (fewer when placement fails).
        min_size, max_size: shape diameter as a fraction of the image's shorter side
            (log-uniform between the two).
        min_visible: a shape may be occluded by later ones down to this fraction of its area.
        clutter: number of background distractors (lines, specks) per image, at most.
        jpeg_quality: quality of the written JPEG files.
    """

    min_side: int = 192
    max_side: int = 384
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 0.14
    max_size: float = 0.5
    min_visible: float = 0.6
    clutter: int = 12
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if not (0 < self.min_side <= self.max_side):
            raise ValueError(f"SceneSettings: need 0 < min_side <= max_side, got {self.min_side}, {self.max_side}")
        if not (0 <= self.min_objects <= self.max_objects):
            raise ValueError(
                f"SceneSettings: need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not (0 < self.min_size <= self.max_size <= 1):
            raise ValueError(f"SceneSettings: need 0 < min_size <= max_size <= 1, got {self.min_size}, {self.max_size}")


@dataclass(frozen=True)
class Scene:
    """One rendered image and its instances.

    Attributes:
        image: ``uint8[H, W, 3]`` BGR.
        class_ids: ``int64[N]`` foreground class index into ``SHAPE_CLASSES``.
        masks: ``bool[N, H, W]`` visible (occlusion-aware) masks, drawing order.
    """

    image: np.ndarray
    class_ids: np.ndarray
    masks: np.ndarray


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split`` (crc32 keeps split names stable across runs)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def shape_outline(class_id: int, rng: np.random.Generator, radius: float) -> list[np.ndarray]:
    """Closed polygons of a shape centred on the origin: ``[outer]`` or, for a ring, ``[outer, hole]``."""
    name = SHAPE_CLASSES[class_id]
    angle = rng.uniform(0, 2 * np.pi)
    if name in ("disc", "ring"):
        outer = _regular_polygon(64, radius, angle)
        if name == "disc":
            return [outer]
        return [outer, _regular_polygon(64, radius * rng.uniform(0.45, 0.65), angle)]
    if name == "square":
        return [_regular_polygon(4, radius, angle)]
    if name == "triangle":
        return [_regular_polygon(3, radius, angle)]
    # Star: five points alternating between the outer radius and an inner one.
    points = _regular_polygon(10, radius, angle)
    points[1::2] *= rng.uniform(0.38, 0.5)
    return [points]


def _regular_polygon(sides: int, radius: float, angle: float) -> np.ndarray:
    t = angle + 2 * np.pi * np.arange(sides) / sides
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _shape_mask(polygons: list[np.ndarray], center: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise ``polygons`` (first filled, later ones cut out) at ``center`` into ``bool[H, W]``."""
    canvas = np.zeros((height, width), np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    for k, polygon in enumerate(polygons):
        points = np.round((polygon + center) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [points], 0 if k else 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return canvas.astype(bool)


def _background(rng: np.random.Generator, height: int, width: int, clutter: int) -> np.ndarray:
    """A linear colour gradient with Gaussian noise, random lines and specks (float32 BGR)."""
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    direction = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    t = (xs * np.cos(direction) + ys * np.sin(direction)) / max(height, width)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    image = (start + (end - start) * t[..., None]).astype(np.float32)
    for _ in range(rng.integers(0, clutter + 1)):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, p1, p2, colour, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
        else:
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.circle(image, centre, int(rng.integers(1, 4)), colour, -1, lineType=cv2.LINE_AA)
    image += rng.normal(0, rng.uniform(3, 14), image.shape).astype(np.float32)
    return image


def _texture(rng: np.random.Generator, colour: np.ndarray, height: int, width: int) -> np.ndarray:
    """A fill for one shape: flat, stripes, checkers or speckle around ``colour`` (float32 BGR)."""
    kind = rng.integers(0, 4)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:
        pattern = np.zeros((height, width), np.float32)
    elif kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        pattern = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    elif kind == 2:
        cell = int(rng.integers(3, 8))
        pattern = (((xs // cell) + (ys // cell)) % 2) * 2 - 1
    else:
        pattern = rng.uniform(-1, 1, (height, width)).astype(np.float32)
    amplitude = rng.uniform(10, 35)
    return colour.astype(np.float32) + amplitude * pattern[..., None]


def _distinct_colour(rng: np.random.Generator, against: np.ndarray) -> np.ndarray:
    """A colour at least 80 (BGR distance) from ``against`` so every shape is visible."""
    for _ in range(32):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - against) >= 80:
            return colour
    # Practically unreachable (each draw fails with p < 0.15); each channel's far end is >= 128 away.
    return np.where(against < 128, 255.0, 0.0)


def render_scene(rng: np.random.Generator, settings: SceneSettings = SceneSettings()) -> Scene:
    """Draw one image from ``rng``.

    Shapes are drawn one over the other; a placement that would hide more than
    ``1 - settings.min_visible`` of an earlier shape is retried (10 times), then skipped.
    """
    height = int(rng.integers(settings.min_side, settings.max_side + 1))
    width = int(rng.integers(settings.min_side, settings.max_side + 1))
    image = _background(rng, height, width, settings.clutter)
    full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(settings.min_objects, settings.max_objects + 1))):
        class_id = int(rng.integers(0, len(SHAPE_CLASSES)))
        for _attempt in range(10):
            diameter = min(height, width) * np.exp(rng.uniform(np.log(settings.min_size), np.log(settings.max_size)))
            radius = diameter / 2
            centre = rng.uniform([radius * 0.6, radius * 0.6], [width - radius * 0.6, height - radius * 0.6])
            mask = _shape_mask(shape_outline(class_id, rng, radius), centre, height, width)
            if mask.sum() < 16:
                continue
            if all((v & ~mask).sum() >= settings.min_visible * f.sum() for v, f in zip(visible, full)):
                break
        else:
            continue
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        local_bg = image[y0:y1, x0:x1][mask[y0:y1, x0:x1]].mean(axis=0)
        fill = _texture(rng, _distinct_colour(rng, local_bg), y1 - y0, x1 - x0)
        region = image[y0:y1, x0:x1]
        region[mask[y0:y1, x0:x1]] = fill[mask[y0:y1, x0:x1]]
        visible = [v & ~mask for v in visible]
        visible.append(mask)
        full.append(mask)
        classes.append(class_id)
    masks = np.stack(visible) if visible else np.zeros((0, height, width), bool)
    return Scene(np.clip(np.round(image), 0, 255).astype(np.uint8), np.array(classes, np.int64), masks)


def coco_categories() -> list[dict]:
    """COCO ``categories`` for ``SHAPE_CLASSES``: ids 1..N in class order."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)]


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a non-empty ``bool[H, W]`` mask (as ``pycocotools.mask.toBbox``)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def make_dataset(
    root: str | Path,
    *,
    split: str,
    num_images: int,
    seed: int = SHAPES_SEED,
    settings: SceneSettings = SceneSettings(),
) -> Path:
    """Write ``num_images`` scenes of ``split`` under ``root/split`` and return its ``instances.json``.

    Args:
        root: dataset folder; the split gets its own sub-folder (created, files overwritten).
        split: split name (``"train"``, ``"val"``...); it selects an independent random stream.
        num_images: how many images to write; image ``i`` is the same for any ``num_images > i``.
        seed: dataset seed; the same ``(seed, split, settings)`` gives the same bytes.
        settings: how scenes are drawn.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    folder = Path(root) / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        scene = render_scene(image_rng(seed, split, index), settings)
        file_name = f"{index:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {folder / file_name}")
        (folder / file_name).write_bytes(encoded.tobytes())
        height, width = scene.image.shape[:2]
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        for class_id, mask in zip(scene.class_ids, scene.masks):
            encoded_mask = rle.encode(mask)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": index + 1,
                "category_id": int(class_id) + 1,
                "segmentation": {"size": [height, width], "counts": encoded_mask["counts"]},
                "area": int(mask.sum()),
                "bbox": mask_bbox(mask),
                "iscrowd": 0,
            })  # fmt: skip
    dataset = {
        "info": {"description": "yolact_batch synthetic shapes", "split": split, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    json_path = folder / "instances.json"
    json_path.write_text(json.dumps(dataset))
    return json_path


def make_demo_set(root: str | Path, *, num_images: int = 16) -> Path:
    """A small demo set: the first ``num_images`` of the shipped model's held-out split.

    Its COCO AP is therefore comparable to the model card's. Returns the ``instances.json`` path
    (the images sit beside it).
    """
    return make_dataset(root, split="val", num_images=num_images, seed=SHAPES_SEED)

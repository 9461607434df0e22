"""Pictures people look at: images with masks, boxes, class names and scores, and a contact sheet.

Rows come from our Parquet output (streamed), pixels from the source images (decoded exactly
as the job decoded them, so masks line up). Drawing is plain OpenCV/numpy.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from yolact_batch.core import rle
from yolact_batch.core.coco import segm_score
from yolact_batch.io.results_io import iter_batches
from yolact_batch.io.storage import StorageOptions, filesystem, read_bytes

CONTACT_SHEET = "contact_sheet.png"


def class_color(category_id: int) -> tuple[int, int, int]:
    """A stable, well separated BGR colour per category (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((int(category_id) * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    import cv2

    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    y = max(y, h + base + 1)
    cv2.rectangle(image, (x, y - h - base - 2), (x + w + 2, y), color, -1)
    ink = (0, 0, 0) if sum(c * k for c, k in zip(color, (0.114, 0.587, 0.299))) > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y - base), font, scale, ink, thick, cv2.LINE_AA)


def draw_instances(
    image: np.ndarray, instances: Sequence[dict], *, score_threshold: float = 0.0, alpha: float = 0.45
) -> np.ndarray:
    """A copy of BGR ``uint8[H, W, 3]`` with the instances drawn (row-format dicts).

    Instances scoring above ``score_threshold`` are drawn lowest score first (the best on
    top): mask tinted with the class colour at ``alpha``, its outline, the box, and a
    ``"name 0.87"`` label. The score is the mask score (``coco.segm_score``: YOLACT++'s
    re-scored one, as the reference's display uses, else the box score). Raises ``ValueError``
    when a mask's size is not the image's.
    """
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(1.2, min(h, w) / 900))
    shown = sorted((i for i in instances if segm_score(i) > score_threshold), key=segm_score)
    for inst in shown:
        size = [int(v) for v in inst["segmentation"]["size"]]
        if size != [h, w]:
            raise ValueError(f"mask size {size} is not the image size {[h, w]}")
        color = class_color(inst["category_id"])
        mask = rle.decode(inst["segmentation"])
        out[mask] = (out[mask] * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(np.ascontiguousarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, max(1, round(scale * 2)), cv2.LINE_AA)
        x, y, bw, bh = (float(v) for v in inst["bbox"])
        p0, p1 = (round(x), round(y)), (round(x + bw), round(y + bh))
        cv2.rectangle(out, p0, p1, color, max(1, round(scale * 2)))
        _label(out, f"{inst['category']} {segm_score(inst):.2f}", p0[0], p0[1], color, scale)
    return out


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled (aspect kept) so its longer side is ``size``."""
    import cv2

    h, w = image.shape[:2]
    f = size / max(h, w)
    if f == 1:
        return image
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray, str]], *, tile_size: int = 320, columns: int | None = None
) -> np.ndarray:
    """One BGR image of ``(image, caption)`` tiles, each fitted into ``tile_size`` square cells."""
    import cv2

    if not tiles:
        raise ValueError("a contact sheet needs at least one image")
    cols = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    caption_h = 22
    sheet = np.full((rows * (tile_size + caption_h), cols * tile_size, 3), 32, np.uint8)
    for n, (image, caption) in enumerate(tiles):
        r, c = divmod(n, cols)
        small = fit(image, tile_size)
        top, left = r * (tile_size + caption_h), c * tile_size
        oy, ox = (tile_size - small.shape[0]) // 2, (tile_size - small.shape[1]) // 2
        sheet[top + oy : top + oy + small.shape[0], left + ox : left + ox + small.shape[1]] = small
        at = (left + 4, top + tile_size + 16)
        cv2.putText(sheet, caption[:40], at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return sheet


def _batches(output_uri: str, columns: list[str] | None, storage: StorageOptions, allow_incomplete: bool) -> Iterator:
    return iter_batches(output_uri, columns=columns, storage=storage, allow_incomplete=allow_incomplete)


def select_rows(
    output_uri: str,
    *,
    count: int = 16,
    images: Sequence[str | int] | None = None,
    seed: int = 0,
    storage: StorageOptions = StorageOptions(),
    allow_incomplete: bool = False,
) -> list[dict]:
    """Rows to draw: the listed ``images`` (ids, base names or URIs), or a uniform sample of
    ``count`` ok rows (reservoir sampling with ``seed``), in output order.

    Two streamed passes: the first reads only ``image_uri``/``image_id``/``status`` to choose,
    the second converts just the chosen rows. Raises ``ValueError`` naming listed images
    that are not in the output.
    """
    chosen: list[int] = []
    if images is not None:
        wanted = {str(i) for i in images}
        found: set[str] = set()
        index = 0
        for batch in _batches(output_uri, ["image_uri", "image_id"], storage, allow_incomplete):
            for row in batch.to_pylist():
                keys = {row["image_uri"], row["image_uri"].rsplit("/", 1)[-1], str(row["image_id"])} & wanted
                if keys:
                    chosen.append(index)
                    found |= keys
                index += 1
        if wanted - found:
            raise ValueError(f"images not in {output_uri}: {sorted(wanted - found)[:10]}")
    else:
        rng = np.random.default_rng(seed)
        seen, index = 0, 0
        for batch in _batches(output_uri, ["status"], storage, allow_incomplete):
            for status in batch.column("status").to_pylist():
                if status == "ok":
                    if len(chosen) < count:
                        chosen.append(index)
                    else:
                        j = int(rng.integers(0, seen + 1))
                        if j < count:
                            chosen[j] = index
                    seen += 1
                index += 1
        chosen.sort()
    picked, start = [], 0
    wanted_set = set(chosen)
    for batch in _batches(output_uri, None, storage, allow_incomplete):
        if not chosen or start > chosen[-1]:
            break
        local = [i - start for i in range(start, start + batch.num_rows) if i in wanted_set]
        if local:
            picked.extend(batch.take(local).to_pylist())
        start += batch.num_rows
    return picked


@dataclass(frozen=True)
class OverlayResult:
    """What ``render_overlays`` wrote.

    Attributes:
        images: PNG paths, one per drawn image.
        contact_sheet: path of the contact sheet (empty when nothing was drawn).
        skipped: ``(image_uri, reason)`` of rows that could not be drawn.
    """

    images: tuple
    contact_sheet: str
    skipped: tuple


def render_overlays(
    output_uri: str,
    out_dir: str,
    *,
    count: int = 16,
    images: Sequence[str | int] | None = None,
    seed: int = 0,
    score_threshold: float = 0.3,
    images_dir: str | None = None,
    tile_size: int = 320,
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> OverlayResult:
    """Draw a sample (or the listed images) of an output to PNGs, plus ``contact_sheet.png``.

    Args:
        output_uri: our Parquet output (see ``results_io.part_files``).
        out_dir: folder for ``<image name>.png`` files and the contact sheet (path or URL).
        count: how many ok rows to sample when ``images`` is not given.
        images: draw these (image ids, base names or URIs) instead of a sample.
        seed: sampling seed (same seed, same sample).
        score_threshold: draw instances scoring above this.
        images_dir: read source images from this folder by base name instead of each
            row's ``image_uri`` (when the job read them elsewhere).
        tile_size: contact sheet cell size in pixels.
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options.
    """
    import cv2

    from yolact_batch.core.preprocess import decode_image

    rows = select_rows(
        output_uri, count=count, images=images, seed=seed, storage=storage, allow_incomplete=allow_incomplete
    )
    fs, root = filesystem(out_dir, storage)
    fs.makedirs(root, exist_ok=True)
    written, skipped, tiles, used = [], [], [], set()
    for row in rows:
        uri = row["image_uri"]
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if row["status"] != "ok":
            skipped.append((uri, f"error row: {row['error']}"))
            continue
        try:
            source = f"{images_dir.rstrip('/')}/{name}" if images_dir else uri
            image = decode_image(read_bytes(source, storage))
            drawn = draw_instances(image, row["instances"], score_threshold=score_threshold)
        except (OSError, ValueError) as exc:  # ImageDecodeError is a ValueError
            skipped.append((uri, str(exc)))
            continue
        stem, k = name.rsplit(".", 1)[0] or "image", 1
        while f"{stem}.png" in used:
            stem, k = f"{name.rsplit('.', 1)[0]}_{k}", k + 1
        used.add(f"{stem}.png")
        path = f"{root.rstrip('/')}/{stem}.png"
        with fs.open(path, "wb") as f:
            f.write(cv2.imencode(".png", drawn)[1].tobytes())
        written.append(path)
        n = sum(segm_score(i) > score_threshold for i in row["instances"])
        tiles.append((fit(drawn, tile_size), f"{name} ({n})"))  # keep thumbnails only
    sheet = ""
    if tiles:
        sheet = f"{root.rstrip('/')}/{CONTACT_SHEET}"
        with fs.open(sheet, "wb") as f:
            f.write(cv2.imencode(".png", contact_sheet(tiles, tile_size=tile_size))[1].tobytes())
    return OverlayResult(tuple(written), sheet, tuple(skipped))

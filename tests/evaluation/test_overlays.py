"""Overlays: PNGs of the source size, pixels changed where masks are, a contact sheet, sampling."""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest

from tests.conftest import COCO_SUBSET
from tests.evaluation.conftest import SHARED_IMAGE_IDS, rows_of
from yolact_batch.cli.reports import add_command
from yolact_batch.core import rle
from yolact_batch.evaluation.overlays import (
    class_color,
    draw_instances,
    render_overlays,
    select_rows,
)
from yolact_batch.io.results_io import write_rows


def _instance(mask: np.ndarray, score: float = 0.9, category_id: int = 18, name: str = "dog") -> dict:
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {
        "category_id": category_id, "category": name, "score": score, "bbox": box, "area": int(mask.sum()),
        "segmentation": rle.encode(mask),
    }  # fmt: skip


def _row(uri: str, instances: list, h: int = 120, w: int = 160, image_id=None) -> dict:
    return {"image_uri": uri, "image_id": image_id, "width": w, "height": h, "status": "ok", "error": None,
            "instances": instances, "model": {"name": "m", "digest": ""}}  # fmt: skip


def test_draw_changes_pixels_inside_masks_only():
    image = np.full((120, 160, 3), 128, np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[60:100, 90:150] = True
    low = np.zeros_like(mask)
    low[5:10, 5:10] = True
    drawn = draw_instances(image, [_instance(mask), _instance(low, score=0.1)], score_threshold=0.3)
    assert drawn.shape == image.shape and (image == 128).all()  # a copy
    changed = (drawn != image).any(axis=2)
    assert changed[65:95, 95:145].all()  # mask interior tinted
    assert not changed[:5, :].any() and not changed[5:10, 5:10].any()  # far away; below the threshold
    assert changed[mask].mean() == 1.0 and changed[~mask].mean() < 0.1  # outline, box, label only
    tint = drawn[80, 120].astype(int)
    assert np.abs(tint - (128 * 0.55 + np.array(class_color(18)) * 0.45)).max() <= 1
    with pytest.raises(ValueError, match=r"mask size \[120, 160\] is not the image size \[60, 80\]"):
        draw_instances(image[:60, :80], [_instance(mask)])


def test_render_writes_pngs_of_the_source_size_and_a_contact_sheet(tmp_path):
    sources = tmp_path / "images"
    sources.mkdir()
    rows = []
    for k, (h, w) in enumerate([(120, 160), (90, 200), (150, 100)]):
        cv2.imwrite(str(sources / f"im{k}.png"), np.full((h, w, 3), 40 * k + 60, np.uint8))
        mask = np.zeros((h, w), bool)
        mask[h // 4 : h // 2, w // 4 : w // 2] = True
        rows.append(_row(str(sources / f"im{k}.png"), [_instance(mask)], h, w, image_id=k))
    rows.append({**rows[0], "image_uri": str(sources / "gone.png"), "image_id": 9})
    write_rows(rows, str(tmp_path / "out"), rows_per_file=2)
    result = render_overlays(
        str(tmp_path / "out"), str(tmp_path / "viz"), images=["im0.png", "2", "gone.png"], tile_size=64
    )
    assert [p.rsplit("/", 1)[-1] for p in result.images] == ["im0.png", "im2.png"]
    assert result.skipped == ((str(sources / "gone.png"), f"{sources / 'gone.png'}: no such file"),)
    for path, (h, w) in zip(result.images, [(120, 160), (150, 100)]):
        drawn = cv2.imread(path)
        assert drawn.shape == (h, w, 3)
        assert (drawn[h // 4 + 3 : h // 2 - 3, w // 4 + 3 : w // 2 - 3] != drawn[-1, -1]).any(axis=2).all()
    sheet = cv2.imread(result.contact_sheet)
    assert sheet.shape == (64 + 22, 2 * 64, 3)  # two tiles side by side, captions below
    with pytest.raises(ValueError, match=r"images not in .*: \['nope.jpg'\]"):
        render_overlays(str(tmp_path / "out"), str(tmp_path / "viz"), images=["nope.jpg"])


def test_sampling_is_seeded_and_reads_only_what_it_draws(tmp_path):
    rows = [_row(f"s3://b/{k}.jpg", [], image_id=k) for k in range(40)]
    rows[3] = {**rows[3], "status": "error", "error": "corrupt"}
    write_rows(rows, str(tmp_path / "out"), rows_per_file=7, row_group_rows=3)
    a = select_rows(str(tmp_path / "out"), count=5, seed=1)
    assert (
        a == select_rows(str(tmp_path / "out"), count=5, seed=1) != select_rows(str(tmp_path / "out"), count=5, seed=2)
    )
    ids = [r["image_id"] for r in a]
    assert len(ids) == 5 and ids == sorted(ids) and 3 not in ids
    assert len(select_rows(str(tmp_path / "out"), count=100)) == 39


def test_overlays_command_on_real_images(reference_results, gt_dataset, tmp_path, capsys):
    folder = str(COCO_SUBSET / "val2017") + "/"
    rows = rows_of(reference_results("yolact_base"), gt_dataset, SHARED_IMAGE_IDS[:2], uri_prefix=folder)
    write_rows(rows, str(tmp_path / "out"))
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["overlays", "-p", str(tmp_path / "out"), "-o", str(tmp_path / "viz"), "-n", "4"])
    assert args.func(args) == 0
    for row in rows:
        drawn = cv2.imread(str(tmp_path / "viz" / row["image_uri"].rsplit("/", 1)[-1].replace(".jpg", ".png")))
        source = cv2.imread(row["image_uri"])
        assert drawn.shape == source.shape
        shown = [i for i in row["instances"] if i["score"] > 0.3]
        union = np.any([rle.decode(i["segmentation"]) for i in shown], axis=0)
        assert (drawn != source).any(axis=2)[union].mean() > 0.95
    assert (tmp_path / "viz" / "contact_sheet.png").exists() and "overlays: 2 images" in capsys.readouterr().err

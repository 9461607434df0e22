"""YOLO segmentation export, read back by supervision's YOLO loader (a third-party reader of
Ultralytics' layout that rasterises the polygons with cv2.fillPoly, as Ultralytics does).

datumaro 1.13.12 cannot be the reader here: its YOLO importers (stable and experimental) read
boxes only and refuse polygon lines ("Expected 5 fields")."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from tests.io.prelabel_data import SHAPES_SIZE, real_rows, shape_masks, shape_rows
from yolact_batch.core import rle
from yolact_batch.core.polygons import mask_rings
from yolact_batch.io.prelabel import PrelabelSettings
from yolact_batch.io.results_io import write_rows
from yolact_batch.io.yolo_seg import YoloOptions, export_yolo, polygon_line


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("yolo")
    rows = real_rows() + shape_rows(tmp / "shapes")
    write_rows(rows, str(tmp / "out"), rows_per_file=4)
    return str(tmp / "out"), rows


def _read_back(folder):
    """supervision's reading of the dataset: (class names, {file name: Detections})."""
    from supervision.dataset.formats.yolo import load_yolo_annotations

    classes, _, annotations = load_yolo_annotations(
        images_directory_path=os.path.join(folder, "images", "train"),
        annotations_directory_path=os.path.join(folder, "labels", "train"),
        data_yaml_path=os.path.join(folder, "data.yaml"), force_masks=True,
    )  # fmt: skip
    return classes, {os.path.basename(path): dets for path, dets in annotations.items()}


def _iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_supervision_reads_our_classes_and_masks(output, tmp_path, tolerance):
    out, rows = output
    settings = PrelabelSettings(score_threshold=0.3)
    report = export_yolo(out, str(tmp_path / "y"), settings=settings, options=YoloOptions(tolerance=tolerance))
    classes, read = _read_back(tmp_path / "y")
    assert classes[:2] == ["person", "ring"] and len(classes) == len(set(classes))
    assert sorted(read) == sorted(r["image_uri"].rsplit("/", 1)[-1] for r in rows if r["status"] == "ok")
    assert (report.images, report.error_rows, report.dropped["no_polygon"]) == (6, 1, 2)  # speck, line
    ious = []
    for row in rows[:-1]:
        dets = read[row["image_uri"].rsplit("/", 1)[-1]]
        expected = [
            i for i in row["instances"] if i["score"] > 0.3 and i["area"] >= 1 and i["category"] not in ("line",)
        ]
        expected = [i for i in expected if i["area"] > 1]  # the 1-pixel speck has no polygon either
        assert [classes[c] for c in dets.class_id] == [i["category"] for i in expected]
        for mask, inst in zip(dets.mask if len(dets) else [], expected):
            ours = rle.decode(inst["segmentation"])
            ious.append(_iou(mask, ours))
            if tolerance == 0:  # lossless outlines: only degenerate parts lost, extra pixels only on bridges
                rings = mask_rings(ours)
                _, parts = cv2.connectedComponents(ours.astype(np.uint8), connectivity=8)
                assert all(not mask_rings(parts == p).outer for p in np.unique(parts[ours & ~mask]))
                assert (mask & ~ours).sum() <= (len(rings.outer) + len(rings.holes) - 1) * max(ours.shape)
            if tolerance == 0 and inst["category"] in ("ring", "square"):
                assert np.array_equal(mask, ours)  # one part, with or without a hole: exact
    assert report.exported == len(ious) > 10
    assert min(ious) > 0.8 and np.median(ious) > (0.95 if tolerance else 0.98)


def test_layout_and_data_yaml(output, tmp_path):
    import yaml

    out, _ = output
    report = export_yolo(out, str(tmp_path / "y"), options=YoloOptions(images="symlink"))
    data = yaml.safe_load(open(tmp_path / "y" / "data.yaml"))
    assert data["train"] == data["val"] == "images/train" and data["nc"] == len(data["names"])
    assert os.path.islink(tmp_path / "y" / "images" / "train" / "shapes.png")
    assert open(tmp_path / "y" / "labels" / "train" / "nothing.txt").read() == ""  # background image
    assert report.files == tuple(str(tmp_path / "y" / p) for p in ("data.yaml", "labels/train", "images/train"))
    assert len(os.listdir(tmp_path / "y" / "labels" / "train")) == 6


def test_holes_and_parts_are_one_line_each(tmp_path):
    rows = shape_rows(tmp_path / "img")
    write_rows(rows, str(tmp_path / "out"))
    export_yolo(str(tmp_path / "out"), str(tmp_path / "y"), options=YoloOptions(tolerance=0, images="none"),
                labels=["ring", "disc", "line", "square"])  # fmt: skip
    lines = open(tmp_path / "y" / "labels" / "train" / "shapes.txt").read().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "3"]  # ring, the two-part disc, the square
    assert not os.listdir(tmp_path / "y" / "images" / "train")
    h, w = SHAPES_SIZE
    from supervision.dataset.formats.yolo import yolo_annotations_to_detections

    dets = yolo_annotations_to_detections(lines, resolution_wh=(w, h), with_masks=True)
    masks = shape_masks()
    assert np.array_equal(dets.mask[0], masks["ring"])  # the hole stays empty
    assert (masks["two_parts"] & ~dets.mask[1]).sum() == 0 and (dets.mask[1] & ~masks["two_parts"]).sum() < w  # bridge


def test_unknown_label_and_duplicate_names(tmp_path):
    rows = shape_rows(tmp_path / "a") + [
        {**r, "image_uri": r["image_uri"].replace("/a/", "/b/")} for r in shape_rows(tmp_path / "b")[:1]
    ]
    write_rows(rows, str(tmp_path / "out"))
    report = export_yolo(str(tmp_path / "out"), str(tmp_path / "y"), settings=PrelabelSettings(min_area=2))
    names = sorted(os.listdir(tmp_path / "y" / "labels" / "train"))
    assert len(names) == 3 and "shapes.txt" in names and names[1].startswith("shapes-")  # same stem: made unique
    assert report.dropped["below_area"] == 2  # the speck, twice
    with pytest.raises(ValueError, match="not in the class list"):
        export_yolo(str(tmp_path / "out"), str(tmp_path / "z"), labels=["ring"])


@pytest.mark.parametrize("name, hint", [("gone.png", ""), ("shard.tar#gone.png", "inside a tar shard")])
def test_missing_image_is_named(tmp_path, name, hint):
    rows = shape_rows(tmp_path / "img")[:1]
    write_rows([{**rows[0], "image_uri": str(tmp_path / name)}], str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=f"{name}: image not found, cannot copy it.*{hint}"):
        export_yolo(str(tmp_path / "out"), str(tmp_path / "y"))
    report = export_yolo(str(tmp_path / "out"), str(tmp_path / "n"), options=YoloOptions(images="none"))
    assert report.exported == 5 - 2  # without images: the labels only (speck and line have no polygon)


def test_polygon_line_normalizes():
    assert (
        polygon_line(2, np.array([[0, 0], [60, 0], [60, 50]]), 120, 100)
        == "2 0.000000 0.000000 0.500000 0.000000 0.500000 0.500000"
    )


def test_empty_output(tmp_path):
    write_rows([], str(tmp_path / "out"))
    report = export_yolo(str(tmp_path / "out"), str(tmp_path / "y"))
    assert (report.images, report.exported, len(report.files)) == (0, 0, 3)
    assert "nc: 0" in open(tmp_path / "y" / "data.yaml").read()

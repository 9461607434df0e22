"""The COCO dataset export read by datumaro 1.13.12 (CVAT's import engine), in its own
environment (tests/io/consumers.py): every mask pixel-exact, ids, labels, iscrowd, scores."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.io.consumers import run_script
from tests.io.prelabel_data import kept, real_rows, shape_rows
from yolact_batch.core import rle
from yolact_batch.io.coco_files import export_datumaro
from yolact_batch.io.prelabel import PrelabelSettings
from yolact_batch.io.results_io import write_rows

USES_CONSUMERS = ("datumaro",)  # built in the background from collection on (tests/io/conftest.py)


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dm")
    rows = real_rows() + shape_rows(tmp / "shapes")
    write_rows(rows, str(tmp / "out"), rows_per_file=4)
    return str(tmp / "out"), rows


def test_datumaro_imports_every_mask_pixel_exact(output, tmp_path):
    out, rows = output
    report = export_datumaro(
        out, str(tmp_path / "ds"), images="copy", settings=PrelabelSettings(rename=(("disc", "circle"),))
    )
    expected = kept(rows)
    assert report.exported == len(expected) and report.error_rows == 1
    got = run_script("datumaro", "datumaro_coco.py", tmp_path / "ds" / "annotations" / "instances_default.json",
                     tmp_path / "masks.npz")  # fmt: skip
    masks = np.load(tmp_path / "masks.npz")
    assert sorted(i["id"] for i in got["items"]) == sorted(os.path.splitext(r["image_uri"].rsplit("/", 1)[-1])[0]
                                                           for r in rows if r["status"] == "ok")  # fmt: skip
    ok = [r for r in rows if r["status"] == "ok"]  # the shapes have no image_id: all numbered 1..N in row order
    assert {i["id"]: i["image_id"] for i in got["items"]} == {
        os.path.splitext(r["image_uri"].rsplit("/", 1)[-1])[0]: k for k, r in enumerate(ok, 1)
    }
    assert all(i["size"] for i in got["items"])  # sizes from the JSON (images copied beside it)
    mask_anns = [a for a in got["annotations"] if a["type"] == "mask"]
    assert len(mask_anns) == len(expected) == sum(a["type"] == "bbox" for a in got["annotations"])
    by_id = {a["id"]: a for a in mask_anns}
    for k, (row, inst) in enumerate(expected, 1):  # annotation ids 1..N in export order
        ann = by_id[k]
        assert ann["item"] == os.path.splitext(row["image_uri"].rsplit("/", 1)[-1])[0]
        assert ann["label"] == {"disc": "circle"}.get(inst["category"], inst["category"]) and ann["is_crowd"] is False
        assert ann["score"] == pytest.approx(inst["score"], abs=1e-6)
        assert np.array_equal(masks[str(k)], rle.decode(inst["segmentation"]))
    assert "circle" in got["labels"] and "disc" not in got["labels"]


def test_datumaro_reads_polygons(output, tmp_path):
    out, rows = output
    report = export_datumaro(out, str(tmp_path / "ds"), polygons=True, tolerance=1.0)
    got = run_script("datumaro", "datumaro_coco.py", tmp_path / "ds" / "annotations" / "instances_default.json",
                     tmp_path / "masks.npz")  # fmt: skip
    polygons = [a for a in got["annotations"] if a["type"] == "polygon"]
    assert len({a["id"] for a in polygons}) == report.exported == len(kept(rows)) - report.dropped["no_polygon"]
    assert report.dropped["no_polygon"] >= 2 and all(len(a["points"]) >= 6 for a in polygons)  # speck, line, ...
    assert os.listdir(tmp_path / "ds" / "images" / "default") == []


def test_clashing_category_ids_and_file_names(tmp_path):
    rows = shape_rows(tmp_path / "a")
    rows[0]["instances"][1] = {**rows[0]["instances"][1], "category_id": 1}  # "disc" shares id 1 with "ring"
    write_rows(rows, str(tmp_path / "out"))
    export_datumaro(str(tmp_path / "out"), str(tmp_path / "ds"))
    got = run_script("datumaro", "datumaro_coco.py", tmp_path / "ds" / "annotations" / "instances_default.json",
                     tmp_path / "m.npz")  # fmt: skip
    assert got["labels"] == ["disc", "ring", "line", "square"]  # renumbered 1..4 in (id, name) order, none lost
    labels = [a["label"] for a in sorted(got["annotations"], key=lambda a: a["id"]) if a["type"] == "mask"]
    assert labels == ["ring", "disc", "disc", "line", "square"]
    twice = rows + [{**rows[0], "image_uri": str(tmp_path / "b" / "shapes.png")}]
    write_rows(twice, str(tmp_path / "twice"))
    with pytest.raises(ValueError, match="two images would be named 'shapes.png'.*--image-root"):
        export_datumaro(str(tmp_path / "twice"), str(tmp_path / "t"))
    export_datumaro(
        str(tmp_path / "twice"), str(tmp_path / "t"), image_root=str(tmp_path)
    )  # a/shapes.png, b/shapes.png


def test_empty_and_error_only_outputs(tmp_path):
    write_rows([], str(tmp_path / "empty"))
    write_rows(shape_rows(tmp_path / "img")[2:], str(tmp_path / "bad"))  # one error row
    for name, error_rows in (("empty", 0), ("bad", 1)):
        report = export_datumaro(str(tmp_path / name), str(tmp_path / f"ds-{name}"))
        assert (report.images, report.exported, report.error_rows) == (0, 0, error_rows)
        got = run_script("datumaro", "datumaro_coco.py",
                         tmp_path / f"ds-{name}" / "annotations" / "instances_default.json", tmp_path / "m.npz")  # fmt: skip
        assert got == {"labels": [], "items": [], "annotations": []}

"""Label Studio export: task files, labeling config, and label-studio-sdk's own decoder and
validator reading them (in Label Studio's environment, see tests/io/consumers.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.io.consumers import run_script
from tests.io.prelabel_data import MODEL, kept, real_rows, shape_rows
from yolact_batch.core import rle
from yolact_batch.io.labelstudio import LabelStudioOptions, export_labelstudio, labeling_config, model_version
from yolact_batch.io.prelabel import PrelabelSettings
from yolact_batch.io.results_io import write_rows

USES_CONSUMERS = ("label-studio",)  # built in the background from collection on (tests/io/conftest.py)


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """(output folder, rows): 4 real COCO images, the hand-made shapes, an empty image, an error row."""
    tmp = tmp_path_factory.mktemp("ls")
    rows = real_rows() + shape_rows(tmp / "shapes")
    write_rows(rows, str(tmp / "out"), rows_per_file=3, row_group_rows=2)
    return str(tmp / "out"), rows


def _tasks(report) -> list[dict]:
    return [t for path in report.files if path.endswith(".json") for t in json.load(open(path))]


def test_brush_tasks_decode_to_our_masks_with_label_studio_sdk(output, tmp_path):
    out, rows = output
    report = export_labelstudio(out, str(tmp_path / "ls"), options=LabelStudioOptions(tasks_per_file=2))
    expected = kept(rows)
    assert (report.images, report.error_rows, report.exported) == (6, 1, len(expected))
    assert report.dropped["below_area"] == sum(i["area"] == 0 for r in rows for i in r["instances"]) > 0
    task_files = [p for p in report.files if p.endswith(".json")]
    assert len(task_files) == 3 and all(len(json.load(open(p))) <= 2 for p in task_files)
    decoded = run_script("label-studio", "ls_brush_decode.py", tmp_path / "ls" / "labeling_config.xml",
                         tmp_path / "masks.npz", *task_files)  # fmt: skip
    assert decoded == {"tasks": 6, "regions": len(expected), "channels_agree": True, "errors": []}
    masks = np.load(tmp_path / "masks.npz")
    ours = iter(expected)
    for f, path in enumerate(task_files):
        for t, task in enumerate(json.load(open(path))):
            (prediction,) = task["predictions"]
            for region in prediction["result"]:
                row, inst = next(ours)
                assert task["data"]["image_uri"] == row["image_uri"] and region["value"]["brushlabels"] == [
                    inst["category"]
                ]
                assert region["score"] == pytest.approx(inst["score"], abs=1e-6)
                assert np.array_equal(masks[f"{f}/{t}/{region['id']}"], rle.decode(inst["segmentation"]))
    assert next(ours, None) is None


def test_polygon_tasks_validate_against_the_config(output, tmp_path):
    out, rows = output
    settings = PrelabelSettings(score_threshold=0.3, rename=(("disc", "circle"),))
    report = export_labelstudio(
        out, str(tmp_path / "p"), settings=settings, options=LabelStudioOptions(regions="polygon")
    )
    checked = run_script("label-studio", "ls_brush_decode.py", tmp_path / "p" / "labeling_config.xml",
                         tmp_path / "none.npz", *report.files[:-1])  # fmt: skip
    assert checked["errors"] == [] and checked["regions"] == 0
    assert report.dropped["no_polygon"] == 2  # the speck and the 1-pixel line have no polygon
    tasks = {t["data"]["image_uri"].rsplit("/", 1)[-1]: t for t in _tasks(report)}
    shapes = tasks["shapes.png"]["predictions"][0]["result"]
    labels = [r["value"]["polygonlabels"] for r in shapes]
    assert labels == [["ring"], ["circle"], ["circle"]]  # the two-part disc: one region per part
    assert all(r["value"]["closed"] and all(0 <= v <= 100 for p in r["value"]["points"] for v in p) for r in shapes)
    assert any("holes left out" in n for n in report.notes)


def test_task_fields_and_image_references(output, tmp_path):
    out, rows = output
    options = LabelStudioOptions(
        image_prefixes=((rows[0]["image_uri"].rsplit("/", 1)[0] + "/", "/data/local-files/?d=coco/"),)
    )
    report = export_labelstudio(out, str(tmp_path / "r"), options=options, settings=PrelabelSettings(top_n=3))
    tasks = _tasks(report)
    first = tasks[0]
    assert first["data"] == {"image": f"/data/local-files/?d=coco/{rows[0]['image_uri'].rsplit('/', 1)[-1]}",
                             "image_uri": rows[0]["image_uri"], "image_id": rows[0]["image_id"]}  # fmt: skip
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == "yolact_base@0123456789ab" == model_version(MODEL)
    scores = [r["score"] for r in prediction["result"]]
    assert len(scores) == 3 and prediction["score"] == pytest.approx(np.mean(scores), abs=1e-6)
    empty = next(t for t in tasks if t["data"]["image_uri"].endswith("nothing.png"))
    assert empty["predictions"] == [{"model_version": model_version(MODEL), "score": 0.0, "result": []}]
    assert sum(n.startswith("2 image references are local paths") for n in report.notes) == 1  # the shapes


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/a b.jpg", "s3://bucket/a b.jpg"),  # cloud URIs stay for Label Studio's cloud storage
        ("/data/images/a b#1.jpg", "/data/local-files/?d=images/a%20b%231.jpg"),  # a query: the rest is quoted
        ("/data/images2/x.jpg", "/data/local-files/?d=images/2/x.jpg"),
        ("gs://b/images/x.jpg", "https://storage.example/images/x.jpg"),  # no query: kept as is
        ("/elsewhere/x.jpg", "/elsewhere/x.jpg"),
    ],
)
def test_image_reference_rewriting(uri, expected):
    options = LabelStudioOptions(image_prefixes=(
        ("/data/images/", "/data/local-files/?d=images/"), ("/data/images", "/data/local-files/?d=images/"),
        ("gs://b/", "https://storage.example/"),
    ))  # fmt: skip
    assert options.image_reference(uri) == expected


def test_split_by_size(output, tmp_path):
    out, _ = output
    report = export_labelstudio(out, str(tmp_path / "s"), options=LabelStudioOptions(max_file_bytes=20_000))
    task_files = [p for p in report.files if p.endswith(".json")]
    sizes = [len(open(p, "rb").read()) for p in task_files]
    counts = [len(json.load(open(p))) for p in task_files]
    assert sum(counts) == 6 and len(task_files) > 2
    assert all(size <= 20_000 or count == 1 for size, count in zip(sizes, counts))  # a bigger task: a file alone


def test_labeling_config_is_valid_xml_with_escaped_labels():
    config = labeling_config(["person", 'a "quoted" & <odd> label'], "polygon")
    root = ET.fromstring(config)
    control = root.find("PolygonLabels")
    assert control.get("name") == "label" and control.get("toName") == "image"
    assert [label.get("value") for label in control] == ["person", 'a "quoted" & <odd> label']
    assert root.find("Image").get("value") == "$image"


def test_empty_and_error_only_outputs(tmp_path):
    write_rows([], str(tmp_path / "empty"))
    report = export_labelstudio(str(tmp_path / "empty"), str(tmp_path / "e"))
    assert (report.images, report.exported, report.files) == (0, 0, (str(tmp_path / "e" / "labeling_config.xml"),))
    bad = shape_rows(tmp_path / "img")[2:]
    write_rows(bad, str(tmp_path / "bad"))
    report = export_labelstudio(str(tmp_path / "bad"), str(tmp_path / "b"))
    assert (report.images, report.error_rows, len(report.files)) == (0, 1, 1)
    assert "1 error rows skipped" in report.line("export-labelstudio")


def test_refuses_bad_settings():
    with pytest.raises(ValueError, match="regions"):
        LabelStudioOptions(regions="mask")
    with pytest.raises(ValueError, match="positive"):
        LabelStudioOptions(tasks_per_file=0)

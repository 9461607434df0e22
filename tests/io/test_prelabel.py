"""The shared pre-labeling controls: a table of small cases with their boundaries and counts."""

from __future__ import annotations

import pytest

from tests.io.prelabel_data import shape_rows
from yolact_batch.io.prelabel import Prelabeler, PrelabelSettings, parse_pairs, scan_classes
from yolact_batch.io.results_io import write_rows
from yolact_batch.io.storage import StorageOptions


def inst(category: str, score: float, area: int = 10, cid: int = 1) -> dict:
    return {"category": category, "category_id": cid, "score": score, "area": area}


CAT, DOG = inst("cat", 0.9), inst("dog", 0.5, cid=2)
TINY, EMPTY = inst("cat", 0.8, area=3), inst("dog", 0.95, area=0, cid=2)


@pytest.mark.parametrize(
    "settings, instances, kept, counts",
    [
        (PrelabelSettings(), [], [], {}),
        (PrelabelSettings(), [CAT, DOG, EMPTY], ["cat", "dog"], {"below_area": 1}),  # empty masks: nothing to label
        (PrelabelSettings(score_threshold=0.5), [CAT, DOG], ["cat"], {"below_score": 1}),  # strictly above
        (PrelabelSettings(score_threshold=0.5, class_thresholds=(("dog", 0.4),)), [CAT, DOG], ["cat", "dog"], {}),
        (PrelabelSettings(class_thresholds=(("cat", 0.95),)), [CAT, DOG], ["dog"], {"below_score": 1}),
        (PrelabelSettings(min_area=4), [CAT, TINY], ["cat"], {"below_area": 1}),
        (PrelabelSettings(min_area=3), [CAT, TINY], ["cat", "cat"], {}),
        (PrelabelSettings(classes=("dog",)), [CAT, DOG, TINY], ["dog"], {"other_class": 2}),
        (PrelabelSettings(top_n=1), [DOG, CAT], ["cat"], {"over_top_n": 1}),  # the best, whatever the order
        (PrelabelSettings(top_n=2), [DOG, TINY, CAT], ["cat", "cat"], {"over_top_n": 1}),  # kept in row order
        (PrelabelSettings(top_n=1), [inst("a", 0.5), inst("b", 0.5)], ["a"], {"over_top_n": 1}),  # tie: first
        (PrelabelSettings(rename=(("cat", "feline"), ("dog", "feline"))), [CAT, DOG], ["feline", "feline"], {}),
        # the rules run in order and each drop counts once, under the first rule that applies
        (PrelabelSettings(classes=("cat",), score_threshold=0.85, min_area=5, top_n=1),
         [DOG, TINY, CAT, inst("cat", 0.99, area=2)], ["cat"], {"other_class": 1, "below_score": 1, "below_area": 1}),
    ],
)  # fmt: skip
def test_selection(settings, instances, kept, counts):
    pre = Prelabeler(settings)
    assert [i["label"] for i in pre.select(instances)] == kept
    assert {k: v for k, v in pre.counts.items() if k != "instances"} == counts
    assert pre.counts["instances"] == len(instances)


def test_refuses_contradictions():
    with pytest.raises(ValueError, match="min_area"):
        PrelabelSettings(min_area=0)
    with pytest.raises(ValueError, match="top_n"):
        PrelabelSettings(top_n=0)
    with pytest.raises(ValueError, match="given twice"):
        PrelabelSettings(rename=(("cat", "a"), ("cat", "b")))


def test_parse_pairs():
    assert parse_pairs(["cat=0.4", "a=b=0.5"], "--class-threshold", float) == (("cat", 0.4), ("a=b", 0.5))
    for bad in ("cat", "=0.4"):
        with pytest.raises(ValueError, match="expected NAME=VALUE"):
            parse_pairs([bad], "--rename")
    with pytest.raises(ValueError, match="is not a float"):
        parse_pairs(["cat=high"], "--class-threshold", float)


def test_rows_labels_and_report(tmp_path):
    rows = shape_rows(tmp_path / "img")
    write_rows(rows, str(tmp_path / "out"), rows_per_file=1)
    options = dict(storage=StorageOptions(), allow_incomplete=False)
    classes = scan_classes(str(tmp_path / "out"), **options)
    assert classes == {"ring": 1, "disc": 2, "line": 3, "square": 4}
    settings = PrelabelSettings(classes=("disc", "square", "zebra"), rename=(("disc", "circle"),))
    pre = Prelabeler(settings, classes)
    selected = [(row["image_uri"].rsplit("/", 1)[-1], [i["label"] for i in kept])
                for row, kept in pre.rows(str(tmp_path / "out"), ["image_uri"], **options)]  # fmt: skip
    assert selected == [("shapes.png", ["circle", "circle", "square"]), ("nothing.png", [])]
    assert pre.labels(extra=["square", "person"]) == ["circle", "square", "person"]
    report = pre.report(3, ["a.json"], {"no_polygon": 1}, ["a note"])
    assert (report.images, report.error_rows, report.instances, report.exported) == (2, 1, 5, 3)
    assert report.dropped == {"other_class": 2, "below_score": 0, "below_area": 0, "over_top_n": 0, "no_polygon": 1}
    assert report.unused_names == ("zebra",)
    assert report.line("x") == (
        "x: 2 images, 3 of 5 instances (dropped: 2 other class, 1 no polygon), 1 error rows skipped, 1 files; "
        "no instance of zebra\nx: a note"
    )


def test_scan_names_a_broken_part_file(tmp_path):
    write_rows(shape_rows(tmp_path / "img"), str(tmp_path / "out"))
    (tmp_path / "out" / "predictions" / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="part-00001.parquet: not a Parquet file of the row format"):
        scan_classes(str(tmp_path / "out"), storage=StorageOptions(), allow_incomplete=False)

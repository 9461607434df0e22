"""The column-wise row table against the row-by-row one it replaces in the job (``rows_to_table``)."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import golden_case
from yolact_batch.core.configs import get_config
from yolact_batch.core.detections import Detections
from yolact_batch.core.heads import RawHeads
from yolact_batch.core.postprocess import Postprocessor
from yolact_batch.io import schema
from yolact_batch.io.schema import INSTANCE, ModelRef, error_row, ok_row, results_table, rows_to_table

CFG = get_config("yolact_resnet50")
MODEL = ModelRef("yolact_resnet50", "ab" * 32)


def row_by_row(uris, ids, results):
    """The oracle: one dict per row and per instance, then ``Table.from_pylist``."""
    rows = [
        ok_row(r, image_uri=u, image_id=i, model=MODEL)
        if isinstance(r, Detections)
        else error_row(image_uri=u, image_id=i, error=r, model=MODEL)
        for u, i, r in zip(uris, ids, results)
    ]
    return rows_to_table(rows)


def assert_same_table(uris, ids, results):
    got, expected = results_table(uris, ids, results, MODEL), row_by_row(uris, ids, results)
    assert got.schema == expected.schema
    assert got.equals(expected)


@pytest.fixture(scope="module")
def golden_dets():
    g, ref = golden_case("yolact_resnet50", 184324)
    heads = RawHeads(g["loc"], g["conf"], g["mask"], g["proto"])
    return Postprocessor(CFG, "raw")(heads, [(ref["height"], ref["width"])])[0]


def test_golden_detections_mixed_with_errors_and_empty_images(golden_dets):
    empty = Detections.empty((10, 20), CFG.class_names, CFG.category_ids)
    results = [
        golden_dets,
        "decode failed: truncated JPEG",
        empty,
        golden_dets[:3],
        golden_dets[golden_dets.scores > 2],
    ]
    uris = [f"s3://bucket/{i}.jpg" for i in range(len(results))]
    assert_same_table(uris, [184324, None, 3, 4, None], results)


def test_mask_scores_of_yolact_plus_beside_images_without_them(golden_dets):
    rescored = dataclasses.replace(golden_dets, mask_scores=np.linspace(0.9, 0.1, len(golden_dets)).astype(np.float32))
    results = [rescored, golden_dets[:4], rescored[:2], "decode failed: empty file (0 bytes)"]
    assert_same_table([f"u{i}" for i in range(4)], [1, 2, 3, None], results)
    table = results_table([f"u{i}" for i in range(4)], [1, 2, 3, None], results, MODEL)
    scores = [[inst["mask_score"] for inst in row] for row in table["instances"].to_pylist()]
    assert scores[1] == [None] * 4 and scores[2] == pytest.approx([0.9, 0.9 - 0.8 / (len(golden_dets) - 1)])


@pytest.mark.parametrize("results", [[], ["read failed: gone"], ["a", "b"]], ids=["no rows", "one error", "errors"])
def test_tables_without_instances(results):
    assert_same_table([f"u{i}" for i in range(len(results))], [None] * len(results), results)


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="2 uris, 1 ids and 2 results"):
        results_table(["a", "b"], [1], ["x", "y"], MODEL)


def test_one_builder_per_instance_field_in_order():
    assert list(schema._INSTANCE_COLUMNS) == INSTANCE.names


# Box coordinates on the .x5 boundaries that round(v * 10) / 10 must round like Python does.
_coordinate = st.one_of(
    st.integers(0, 4000).map(lambda v: v / 20),
    st.floats(0, 5000, width=32, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), images=st.integers(1, 4))
def test_prop_results_table_equals_row_by_row(data, images):
    results = []
    for _ in range(images):
        if data.draw(st.booleans().map(lambda b: b and images > 1)):
            results.append(data.draw(st.text(max_size=20)))
            continue
        n = data.draw(st.integers(0, 6))
        boxes = np.array(data.draw(st.lists(st.tuples(*[_coordinate] * 4), min_size=n, max_size=n)), np.float32)
        scores = np.array(data.draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), np.float32)
        classes = np.array(data.draw(st.lists(st.integers(0, 79), min_size=n, max_size=n)), np.int64)
        height, width = data.draw(st.integers(1, 3000)), data.draw(st.integers(1, 3000))
        counts = [data.draw(st.sampled_from(["", "0", "PPYo1", "a?b@c"])) for _ in range(n)]
        results.append(
            Detections(
                boxes=boxes.reshape(n, 4),
                scores=scores,
                class_ids=classes,
                rles=tuple({"size": [height, width], "counts": c} for c in counts),
                image_size=(height, width),
                class_names=CFG.class_names,
                category_ids=CFG.category_ids,
                areas=np.arange(n, dtype=np.int64) * 7,
            )
        )
    ids = data.draw(st.lists(st.one_of(st.none(), st.integers(0, 2**40)), min_size=images, max_size=images))
    assert_same_table([f"file:///{i}.jpg" for i in range(images)], ids, results)

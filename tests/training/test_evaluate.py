"""The split evaluation: ground truth fed back as predictions scores AP 1, wrong classes score less."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolact_batch.core.detections import Detections
from yolact_batch.core.synthetic import SHAPE_CLASSES, make_dataset
from yolact_batch.training.evaluate import coco_metrics, predict_split

CATEGORY_IDS = tuple(range(1, len(SHAPE_CLASSES) + 1))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("shapes"), split="val", num_images=6, seed=2)


def _ground_truth_as_predictions(json_path, shift_classes=0) -> dict[int, Detections]:
    data = json.loads(json_path.read_text())
    out = {}
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32).reshape(-1, 4)
        classes = (np.array([a["category_id"] - 1 for a in anns], np.int64) + shift_classes) % len(SHAPE_CLASSES)
        out[image["id"]] = Detections(
            boxes, np.ones(len(anns), np.float32), classes, tuple(a["segmentation"] for a in anns),
            (image["height"], image["width"]), SHAPE_CLASSES, CATEGORY_IDS,
        )  # fmt: skip
    return out


def test_perfect_predictions_score_one(split):
    metrics = coco_metrics(split, _ground_truth_as_predictions(split))
    assert metrics["bbox_AP"] == pytest.approx(1.0) and metrics["segm_AP"] == pytest.approx(1.0)
    present = {SHAPE_CLASSES[a["category_id"] - 1] for a in json.loads(split.read_text())["annotations"]}
    assert all(metrics[f"segm_AP/{name}"] == pytest.approx(1.0) for name in present)


def test_wrong_categories_score_zero(split):
    metrics = coco_metrics(split, _ground_truth_as_predictions(split, shift_classes=1))
    assert metrics["bbox_AP"] == 0 and metrics["segm_AP"] == 0


def test_only_predicted_images_are_evaluated(split):
    predictions = _ground_truth_as_predictions(split)
    first_two = {k: predictions[k] for k in sorted(predictions)[:2]}
    assert coco_metrics(split, first_two)["segm_AP"] == pytest.approx(1.0)


def test_predict_split_reads_images_in_id_order(split):
    seen = []

    def predict(images):
        seen.extend(im.shape for im in images)
        return [Detections.empty(im.shape[:2], SHAPE_CLASSES, CATEGORY_IDS) for im in images]

    predictions = predict_split(split, predict, limit=5, batch_size=2)
    images = json.loads(split.read_text())["images"][:5]
    assert list(predictions) == [im["id"] for im in images]
    assert seen == [(im["height"], im["width"], 3) for im in images]

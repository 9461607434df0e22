"""The shipped shapes model segments its held-out data: COCO box and mask AP >= 0.5.

A bug anywhere between the network outputs and the COCO results (box decode, NMS, mask
assembly, RLE, category mapping, evaluation) takes these APs from ~0.7 to near zero.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from yolact_batch.core.synthetic import SHAPE_CLASSES, SHAPES_SEED, make_dataset
from yolact_batch.training.evaluate import coco_metrics, predict_split

MODEL = Path(__file__).resolve().parents[1] / "yolact_batch" / "models" / "yolact_shapes.onnx"
HELD_OUT_IMAGES = 100


@pytest.fixture(scope="module")
def shapes_model():
    pytest.importorskip("onnxruntime", reason="needs the 'cpu' extra (onnxruntime)")
    if not MODEL.is_file():
        pytest.skip(f"shipped model {MODEL} not found: train it with jobs/train_shapes.py")
    from yolact_batch.backends.factory import BackendOptions
    from yolact_batch.model import YolactModel

    return YolactModel(str(MODEL), backend=BackendOptions(intra_op_threads=2))


def test_metadata_names_the_shape_classes(shapes_model):
    config = shapes_model.config
    assert config.class_names == SHAPE_CLASSES
    assert config.category_ids == tuple(range(1, len(SHAPE_CLASSES) + 1))
    assert shapes_model.metadata.contract == "graph"


def test_held_out_box_and_mask_ap(shapes_model, tmp_path):
    json_path = make_dataset(tmp_path, split="val", num_images=HELD_OUT_IMAGES, seed=SHAPES_SEED)
    predictions = predict_split(json_path, shapes_model)
    assert len(predictions) == HELD_OUT_IMAGES
    metrics = coco_metrics(json_path, predictions)
    assert metrics["bbox_AP"] >= 0.5, metrics
    assert metrics["segm_AP"] >= 0.5, metrics

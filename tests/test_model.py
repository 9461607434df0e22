"""The Python API over real ONNX Runtime sessions (constant-head models from golden arrays)."""

import json

import numpy as np
import pytest

from tests.conftest import golden_case, golden_image_bytes
from tests.onnx_models import constant_heads_model
from yolact_batch.backends.factory import BackendOptions
from yolact_batch.core.configs import get_config
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.settings import DetectSettings
from yolact_batch.model import YolactModel

CFG = get_config("yolact_resnet50")
IMAGE_ID = 184324


@pytest.fixture(scope="module")
def golden():
    arrays, ref = golden_case("yolact_resnet50", IMAGE_ID)
    return arrays, ref


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory, golden):
    arrays, _ = golden
    path = tmp_path_factory.mktemp("m") / "raw.onnx"
    return constant_heads_model(path, arrays, ModelMetadata(CFG, "raw"))


def test_bytes_and_arrays_give_reference_detections(raw_model, golden):
    arrays, ref = golden
    model = YolactModel(str(raw_model))
    data = golden_image_bytes(IMAGE_ID)
    import cv2

    from_bytes, from_array = model([data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)])
    for dets in (from_bytes, from_array):
        assert dets.image_size == (ref["height"], ref["width"])
        np.testing.assert_array_equal(dets.boxes.astype(np.int64), arrays["post_boxes"])
        np.testing.assert_array_equal(dets.class_ids, arrays["det_classes"])
    assert model.ref.digest.startswith("sha256:") and model.ref.name == "yolact_resnet50"


def test_batching_splits_and_keeps_order(raw_model):
    model = YolactModel(str(raw_model), backend=BackendOptions(batch_size=2))
    images = [np.zeros((10 + i, 20, 3), np.uint8) for i in range(5)]
    assert [d.image_size for d in model(images)] == [(10 + i, 20) for i in range(5)]


def test_explicit_settings(raw_model):
    model = YolactModel(str(raw_model), score_threshold=0.5, classes=["person", 3], max_detections=10)
    dets = model([golden_image_bytes(IMAGE_ID)])[0]
    assert len(dets) <= 10 and np.all(dets.scores > 0.5)
    assert set(dets.class_ids.tolist()) <= {0, 2}
    with pytest.raises(ValueError, match="unknown class name 'persn'"):
        YolactModel(str(raw_model), classes=["persn"])


def test_missing_metadata_needs_sidecar(tmp_path, golden):
    arrays, _ = golden
    path = constant_heads_model(tmp_path / "third_party.onnx", arrays, None)
    with pytest.raises(ValueError, match="no yolact_batch metadata"):
        YolactModel(str(path))
    side = tmp_path / "side.json"
    side.write_text(json.dumps({"config": "yolact_resnet50", "contract": "raw"}))
    assert len(YolactModel(str(path), sidecar=str(side))([golden_image_bytes(IMAGE_ID)])[0]) == 100


def test_truncated_or_wrong_model_is_a_clear_error(tmp_path, raw_model):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(raw_model.read_bytes()[:5000])
    with pytest.raises(ValueError, match="broken.onnx: not a loadable ONNX model"):
        YolactModel(str(broken))
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        YolactModel(str(tmp_path / "nope.onnx"))


def test_graph_model_refuses_settings_it_cannot_honour(tmp_path):
    k, hp = 5, 138
    heads = {
        "boxes": np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (1, k, 1)),
        "scores": np.linspace(0.9, 0.1, k, dtype=np.float32)[None],
        "classes": np.zeros((1, k), np.int64),
        "masks": np.full((1, k, hp, hp), 0.9, np.float32),
        "num_detections": np.array([4], np.int64),
    }
    meta = ModelMetadata(CFG, "graph", DetectSettings(max_detections=k))
    path = constant_heads_model(tmp_path / "graph.onnx", heads, meta, names=tuple(heads))
    dets = YolactModel(str(path))([np.zeros((100, 200, 3), np.uint8)])[0]
    assert len(dets) == 4 and dets.boxes[0].tolist() == [20, 10, 100, 50]
    assert dets.areas[0] > 0
    assert len(YolactModel(str(path), max_detections=2, score_threshold=0.5)([np.zeros((9, 9, 3), np.uint8)])[0]) == 2
    with pytest.raises(ValueError, match="built in"):
        YolactModel(str(path), iou_threshold=0.7)
    with pytest.raises(ValueError, match="at most 5"):
        YolactModel(str(path), max_detections=50)


def test_unknown_provider_is_a_clear_error(raw_model):
    with pytest.raises(ValueError, match="unknown execution provider 'tpu'"):
        YolactModel(str(raw_model), backend=BackendOptions(providers=["tpu"]))
    with pytest.raises(RuntimeError, match="gpu' extra"):
        YolactModel(str(raw_model), backend=BackendOptions(providers=["cuda"]))

"""Training samples: the inference transform, relative boxes and prototype-size masks that agree."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.preprocess import preprocess  # noqa: E402
from yolact_batch.core.synthetic import make_dataset  # noqa: E402
from yolact_batch.training.data import CocoInstances, batch_order  # noqa: E402
from yolact_batch.training.shapes import SHAPES_CONFIG  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    json_path = make_dataset(tmp_path_factory.mktemp("shapes"), split="train", num_images=4, seed=1)
    return CocoInstances(json_path, SHAPES_CONFIG)


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    side = mask.shape[0]
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / side


@pytest.mark.parametrize("flip_x,flip_y", [(False, False), (True, False), (False, True), (True, True)])
def test_boxes_follow_masks_through_flips(dataset, flip_x, flip_y):
    for index in range(len(dataset)):
        image, targets = dataset.sample(index, flip_x=flip_x, flip_y=flip_y)
        assert image.shape == (3, 256, 256) and image.dtype == np.float32
        side = SHAPES_CONFIG.proto_size
        assert targets.masks.shape == (len(targets.labels), side, side)
        for box, mask in zip(targets.boxes.numpy(), targets.masks.numpy()):
            assert np.all(box[:2] < box[2:])
            # A prototype pixel is 1/64 of the input: the downsampled mask's box is within two of them.
            np.testing.assert_allclose(_mask_box(mask > 0), box, atol=2 / side)


def test_image_is_the_inference_transform_and_flips_mirror_it(dataset):
    import cv2

    image, _ = dataset.sample(0)
    bgr = cv2.imread(str(dataset.image_path(0)))
    np.testing.assert_array_equal(image, preprocess(bgr, SHAPES_CONFIG))
    flipped, _ = dataset.sample(0, flip_x=True)
    np.testing.assert_array_equal(flipped, preprocess(np.ascontiguousarray(bgr[:, ::-1]), SHAPES_CONFIG))


def test_labels_are_zero_based_classes(dataset):
    import json

    anns = json.loads(dataset.json_path.read_text())["annotations"]
    first = [a["category_id"] - 1 for a in anns if a["image_id"] == dataset.images[0]["id"]]
    assert dataset.sample(0)[1].labels.tolist() == first


def test_batch_order_is_a_seeded_shuffle():
    a = batch_order(10, batch_size=3, seed=0, epoch=0)
    assert [len(b) for b in a] == [3, 3, 3]
    assert len(set(np.concatenate(a).tolist())) == 9
    assert all(np.array_equal(x, y) for x, y in zip(a, batch_order(10, batch_size=3, seed=0, epoch=0)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, batch_order(10, batch_size=3, seed=0, epoch=1)))

"""Packing graph-contract heads (what the job ships between stages) loses nothing."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from yolact_batch.core.configs import get_config
from yolact_batch.core.heads import GraphHeads, PackedDetections
from yolact_batch.core.masks import crop_windows, upsample_masks
from yolact_batch.core.postprocess import pack_graph_heads, postprocess_packed
from yolact_batch.core.settings import OutputSettings

CONFIG = get_config("yolact_resnet50")


def random_heads(batch=2, k=6, hp=20, wp=24, seed=0, crop=True) -> GraphHeads:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(-0.6, 1.6, (batch, k, 2, 2)).astype(np.float32)  # some boxes off the grid
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2)], axis=-1)
    scores = -np.sort(-rng.uniform(0.05, 1, (batch, k)).astype(np.float32), axis=1)
    masks = rng.uniform(0, 1, (batch, k, hp, wp)).astype(np.float32)
    for b in range(batch if crop else 0):  # zero outside the crop, as the model does
        for mask, (r0, r1, c0, c1) in zip(masks[b], crop_windows(boxes[b], hp, wp)):
            inside = mask[r0:r1, c0:c1].copy()
            mask[:] = 0
            mask[r0:r1, c0:c1] = inside
    classes = rng.integers(0, 80, (batch, k))
    return GraphHeads(boxes, scores, classes, masks, np.array([k, k - 2][:batch], np.int64))


def test_packing_keeps_only_kept_detections_and_their_windows():
    heads = random_heads()
    output = OutputSettings(score_threshold=0.3)
    packed = pack_graph_heads(heads, output, max_detections=5)
    for b, item in enumerate(packed):
        n = min(int(heads.num_detections[b]), 5)
        keep = np.flatnonzero(heads.scores[b, :n] > 0.3)
        np.testing.assert_array_equal(item.scores, heads.scores[b, keep])
        np.testing.assert_array_equal(item.boxes, heads.boxes[b, keep])
        windows = crop_windows(item.boxes, 20, 24)
        expected = [heads.masks[b, k, r0:r1, c0:c1].ravel() for k, (r0, r1, c0, c1) in zip(keep, windows)]
        np.testing.assert_array_equal(item.mask_values, np.concatenate(expected) if expected else [])
        assert item.proto_size == (20, 24)


@pytest.mark.parametrize("crop", [True, False])
def test_packed_heads_give_the_masks_of_the_full_size_computation(crop):
    # Oracle: each kept mask at prototype resolution (cropped or not), upsampled to full
    # size, thresholded and encoded by pycocotools.
    heads, output, sizes = random_heads(seed=3, crop=crop), OutputSettings(crop_masks=crop), [(40, 50), (33, 17)]
    results = postprocess_packed(pack_graph_heads(heads, output), sizes, CONFIG, output)
    for b, (result, (height, width)) in enumerate(zip(results, sizes)):
        for i, score in enumerate(result.scores):
            k = int(np.flatnonzero(heads.scores[b] == score)[0])
            full = upsample_masks(heads.masks[b, k][None], height, width)[0] > 0.5
            expected = coco_mask.encode(np.asfortranarray(full.astype(np.uint8)))
            assert result.rles[i]["counts"] == expected["counts"].decode()
        assert len(result) > 0


def test_packed_values_that_do_not_fit_the_windows_are_refused():
    item = pack_graph_heads(random_heads(), OutputSettings(crop_masks=True))[0]
    with pytest.raises(ValueError, match=r"packed masks hold \d+ values but the windows of 6 boxes cover \d+"):
        postprocess_packed([item], [(40, 50)], CONFIG, OutputSettings(crop_masks=False))


def test_packed_detections_validate_shapes():
    with pytest.raises(ValueError, match=r"boxes: expected shape \(2, 4\), got \(3, 4\)"):
        PackedDetections(
            np.zeros((3, 4), np.float32),
            np.zeros(2, np.float32),
            np.zeros(2, np.int64),
            np.zeros(0, np.float32),
            (138, 138),
        )
    empty = PackedDetections(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, np.float32),
        (138, 138),
    )
    [result] = postprocess_packed([empty], [(10, 10)], CONFIG)
    assert len(result) == 0 and result.image_size == (10, 10)


def test_a_box_off_the_grid_packs_nothing_and_is_dropped():
    # Wholly above the image: its crop window is empty (a negative end would be read as
    # counting from the bottom), and it has no pixels, so the image simply has no detection.
    heads = GraphHeads(
        np.array([[[0.2, -0.5, 0.6, -0.4]]], np.float32),
        np.array([[0.9]], np.float32),
        np.array([[1]]),
        np.ones((1, 1, 20, 20), np.float32),
        np.array([1]),
    )
    [item] = pack_graph_heads(heads)
    assert item.mask_values.size == 0 and len(item) == 1
    [result] = postprocess_packed([item], [(40, 40)], CONFIG)
    assert len(result) == 0

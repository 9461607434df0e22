"""Training targets and losses on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.boxes import decode_boxes  # noqa: E402
from yolact_batch.training.losses import box_loss, conf_loss, hard_negatives, mask_loss  # noqa: E402
from yolact_batch.training.targets import NEUTRAL, box_iou, encode_boxes, match, prior_boxes  # noqa: E402

GT = torch.tensor([[0.0, 0.0, 1.0, 1.0]])


def _priors(*xyxy):
    """Priors ``(cx, cy, w, h)`` from xyxy boxes (all fractions of two: exact in float32)."""
    b = torch.tensor(xyxy, dtype=torch.float32)
    return torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], dim=1)


@pytest.mark.parametrize("seed", range(5))
def test_encode_is_the_inverse_of_decode(seed):
    rng = np.random.default_rng(seed)
    priors = np.concatenate([rng.uniform(0.1, 0.9, (50, 2)), rng.uniform(0.05, 0.6, (50, 2))], axis=1)
    priors = priors.astype(np.float32)
    top_left = rng.uniform(0, 0.7, (50, 2))
    boxes = np.concatenate([top_left, top_left + rng.uniform(0.02, 0.3, (50, 2))], axis=1).astype(np.float32)
    loc = encode_boxes(torch.from_numpy(boxes), torch.from_numpy(priors)).numpy()
    np.testing.assert_allclose(decode_boxes(loc, priors), boxes, atol=1e-6)
    # Centred and prior-sized boxes encode to zero.
    as_boxes = prior_boxes(torch.from_numpy(priors))
    np.testing.assert_allclose(encode_boxes(as_boxes, torch.from_numpy(priors)), 0, atol=1e-5)


def test_iou_hand_values():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 0.25, 0.5]])
    np.testing.assert_array_equal(box_iou(GT, boxes).numpy(), [[0.5, 0.5, 0.125]])


def test_match_thresholds():
    # IoU with the ground truth: 1, 0.5 (boundary: positive), 7/16 (neutral), 3/8 (background), 0.
    priors = _priors([0, 0, 1, 1], [0, 0, 0.5, 1], [0, 0, 0.4375, 1], [0, 0, 0.375, 1], [2, 2, 3, 3])
    m = match(GT, torch.tensor([2]), priors)
    assert m.labels.tolist() == [3, 3, NEUTRAL, 0, 0]
    assert m.positive.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(m.loc[0].numpy(), 0, atol=1e-6)


def test_custom_thresholds():
    priors = _priors([0, 0, 1, 1], [0, 0, 0.5, 1], [0, 0, 0.375, 1])
    m = match(GT, torch.tensor([0]), priors, pos_threshold=0.6, neg_threshold=0.3)
    assert m.labels.tolist() == [1, NEUTRAL, NEUTRAL]


def test_every_ground_truth_gets_its_best_prior_even_below_threshold():
    priors = _priors([0, 0, 0.25, 1], [0, 0, 0.125, 1])  # IoU 1/4 and 1/8
    m = match(GT, torch.tensor([1]), priors)
    assert m.labels.tolist() == [2, 0]


def test_two_ground_truths_wanting_the_same_prior():
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.75, 1.0]])
    # Prior 0 is the best of both (IoU 1 and 0.75); the second takes its next best, prior 1.
    priors = _priors([0, 0, 1, 1], [0, 0, 0.25, 1], [2, 2, 3, 3])
    m = match(gt, torch.tensor([0, 1]), priors)
    assert m.labels.tolist() == [1, 2, 0]
    assert m.gt_index[:2].tolist() == [0, 1]


def test_no_ground_truth_means_all_background():
    m = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), _priors([0, 0, 1, 1], [0, 0, 0.5, 0.5]))
    assert m.labels.tolist() == [0, 0]


def test_ohem_keeps_three_negatives_per_positive_the_hardest():
    labels = torch.tensor([[1, 2] + [0] * 10 + [NEUTRAL]])
    logits = torch.zeros(1, 13, 3)
    # Hardness of a negative grows with its foreground logit: negative k has logit k.
    logits[0, 2:12, 1] = torch.arange(10, dtype=torch.float32)
    logits[0, 12, 1] = 100.0  # the neutral prior is the "hardest" but must never be picked
    logits[0, :2, 1] = 50.0
    chosen = hard_negatives(logits, labels, negpos_ratio=3)[0]
    assert chosen.sum() == 6
    assert torch.nonzero(chosen).squeeze(1).tolist() == list(range(6, 12))


def test_ohem_ratio_is_capped_by_the_available_negatives():
    labels = torch.tensor([[1, 1, 1, 0, 0, NEUTRAL], [0, 0, 0, 0, 0, 0]])
    chosen = hard_negatives(torch.randn(2, 6, 2), labels, negpos_ratio=3)
    assert chosen[0].tolist() == [False, False, False, True, True, False]
    assert not chosen[1].any()  # no positives in that image: no negatives either


def test_conf_loss_is_cross_entropy_over_positives_and_mined_negatives():
    torch.manual_seed(0)
    logits = torch.randn(1, 6, 3)
    labels = torch.tensor([[2, 0, 0, 0, 0, NEUTRAL]])
    picked = torch.tensor([0, *hard_negatives(logits, labels, 3)[0].nonzero().squeeze(1).tolist()])
    manual = -torch.log_softmax(logits[0, picked], -1)[torch.arange(4), labels[0, picked]].sum()
    assert len(picked) == 4
    torch.testing.assert_close(conf_loss(logits, labels), manual)


def test_box_loss_counts_positives_only():
    loc = torch.tensor([[[0.0, 0, 0, 0], [5.0, 5, 5, 5]]])
    target = torch.tensor([[[0.5, 0, 0, 2], [0.0, 0, 0, 0]]])
    loss = box_loss(loc, target, torch.tensor([[True, False]]))
    torch.testing.assert_close(loss, torch.tensor(0.5 * 0.5**2 + 1.5))


def test_mask_loss_is_the_mean_bce_inside_the_box():
    side = 8
    proto = torch.zeros(side, side, 1)
    proto[..., 0] = -3.0
    proto[2:6, 2:6, 0] = 3.0  # the mask logit is +3 inside, -3 outside (coefficient 1)
    gt_mask = torch.zeros(1, side, side)
    gt_mask[0, 2:6, 2:6] = 1
    box = torch.tensor([[3 / side, 3 / side, 5 / side, 5 / side]])  # 2x2 px; crop pads it to 4x4
    loss = mask_loss(proto, torch.ones(1, 1), box, gt_mask)
    per_pixel = torch.nn.functional.softplus(torch.tensor(-3.0))
    torch.testing.assert_close(loss, per_pixel * 16 / 4)
    # Pixels outside the padded box do not count, whatever they predict.
    proto[0, 0, 0] = 50.0
    torch.testing.assert_close(mask_loss(proto, torch.ones(1, 1), box, gt_mask), loss)
    # A wrong mask costs more.
    assert mask_loss(proto, -torch.ones(1, 1), box, gt_mask) > 10 * loss

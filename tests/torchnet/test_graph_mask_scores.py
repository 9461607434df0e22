"""The graph contract's mask re-scoring (YOLACT++): ``mask_scores = scores * IoU[class]`` from the
cropped prototype-resolution masks, zero past ``num_detections``, padded like every other output."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from yolact_batch.core.configs import ModelConfig, PriorConfig  # noqa: E402
from yolact_batch.core.settings import DetectSettings  # noqa: E402
from yolact_batch.torchnet.graph import GraphHead  # noqa: E402
from yolact_batch.torchnet.network import FastMaskIoUNet  # noqa: E402

PLUS_TINY = ModelConfig(
    name="plus_tiny",
    backbone="resnet50",
    priors=PriorConfig(input_size=64, conv_sizes=(8, 4), scales=((16.0, 20.0), (32.0, 40.0)), square=False),
    class_names=("a", "b", "c"),
    mask_rescoring=True,
    num_prototypes=4,  # 64x64 prototypes below: FastMaskIoUNet needs at least 63 px
)


def _heads(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    p, c = PLUS_TINY.priors.num_priors, PLUS_TINY.num_classes
    conf = torch.softmax(torch.randn(batch, p, c, generator=g) * 3, dim=-1)
    return (torch.randn(batch, p, 4, generator=g) * 0.5, conf, torch.tanh(torch.randn(batch, p, 4, generator=g)),
            torch.relu(torch.randn(batch, 64, 64, 4, generator=g)))  # fmt: skip


@pytest.fixture(scope="module")
def maskiou_net():
    torch.manual_seed(0)
    net = FastMaskIoUNet(len(PLUS_TINY.class_names)).eval()
    for conv in net.modules():
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.uniform_(conv.weight, 0.0, 0.3)  # positive: the IoU output is not all zeros
    return net


@pytest.mark.parametrize("max_detections", [5, 50])  # 50 > 3 classes x top_k 10: padded
def test_mask_scores_are_box_scores_times_the_iou_of_the_class(maskiou_net, max_detections):
    detect = DetectSettings(top_k=10, max_detections=max_detections)
    plain = GraphHead(dataclasses.replace(PLUS_TINY, mask_rescoring=False), detect)
    head = GraphHead(PLUS_TINY, detect, maskiou_net=maskiou_net)
    heads = _heads(1)
    with torch.no_grad():
        boxes, scores, classes, masks, count, mask_scores = head(*heads)
        expected = plain(*heads)
        iou = maskiou_net(masks.flatten(0, 1).unsqueeze(1)).unflatten(0, masks.shape[:2])
    for got, want in zip((boxes, scores, classes, masks, count), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # re-scoring changes nothing else
    assert mask_scores.shape == scores.shape == (2, max_detections)
    for b in range(2):
        n = int(count[b])
        want = scores[b, :n] * iou[b, torch.arange(n), classes[b, :n]]
        torch.testing.assert_close(mask_scores[b, :n], want, rtol=0, atol=1e-7)
        assert (mask_scores[b, n:] == 0).all() and (mask_scores[b, :n] <= scores[b, :n] * iou.max()).all()
    assert (mask_scores[:, : int(count.min())] > 0).any()


def test_a_rescoring_config_needs_the_net():
    with pytest.raises(ValueError, match="maskiou_net"):
        GraphHead(PLUS_TINY, DetectSettings())

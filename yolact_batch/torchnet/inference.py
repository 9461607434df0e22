"""Inference in torch: the network in a chosen dtype, then the softmax and graph head in float32."""

from __future__ import annotations

import torch
from torch import nn

from yolact_batch.core.settings import DetectSettings
from yolact_batch.torchnet.graph import GraphHead
from yolact_batch.torchnet.network import Yolact


class InferenceProgram(nn.Module):
    """Normalised images -> graph-contract outputs, or raw heads.

    Args:
        network: the loaded ``Yolact`` (moved to ``dtype`` and ``channels_last`` here).
        detect: NMS settings of the graph head; None returns the raw heads instead.
        dtype: the network's weights and activations (float32, float16 or bfloat16).
        channels_last: NHWC memory layout for the convolutions.

    ``forward(images)`` takes ``float32[B, 3, S, S]`` on the program's device and returns
    ``(boxes, scores, classes, masks, num_detections)`` as ``core.heads.GraphHeads`` describes
    (with ``detect``), else ``(loc, conf, mask, proto)`` as ``core.heads.RawHeads`` describes,
    all float32 (int64 for classes and counts). The low-precision network's outputs are cast
    to float32 before the softmax, so NMS compares float32 scores in every precision.
    """

    def __init__(
        self, network: Yolact, detect: DetectSettings | None, *, dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.dtype, self.channels_last = dtype, channels_last
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.network = network.to(dtype=dtype, memory_format=memory).eval()
        # YOLACT++ re-scores masks in the head with the network's maskiou_net: float32 like the head.
        maskiou = getattr(network, "maskiou_net", None)
        extra = {} if maskiou is None else {"maskiou_net": maskiou.float()}
        self.head = None if detect is None else GraphHead(network.config, detect, **extra).eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _, loc, conf_logits, mask, proto = self.network.heads(x)
        heads = (loc.float(), torch.softmax(conf_logits.float(), dim=-1), mask.float(), proto.float())
        return heads if self.head is None else self.head(*heads)

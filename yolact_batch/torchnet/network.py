"""The YOLACT network in torch, laid out so the official checkpoints load with ``strict=True``.

Module and parameter names follow the official state dicts (``backbone.layers.2.5.conv2.weight``,
``fpn.lat_layers.0.bias``, ``proto_net.10.weight``, ``prediction_layers.0.conf_layer.weight``...),
and modules are registered in the official order, so ``state_dict()`` lists the same keys in the
same order as an official ``.pth`` file.

The forward pass returns the raw heads of the ``raw`` contract (see ``yolact_batch.core.heads``):
``loc [B, P, 4]``, ``conf [B, P, C]`` after softmax, ``mask [B, P, M]`` after tanh and
``proto [B, Hp, Wp, M]`` after ReLU, channels last.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from yolact_batch.core.configs import ModelConfig
from yolact_batch.torchnet.deform_conv import DCN

RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
# Small BasicBlock ResNets for models trained by this project on a CPU: (blocks per stage, stem width).
SMALL_RESNETS = {"resnet_tiny": ((1, 1, 1, 1), 32)}
DARKNET_BLOCKS = (1, 2, 8, 8, 4)
BACKBONES = (*RESNET_BLOCKS, *SMALL_RESNETS, "darknet53")


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with the stride, 1x1 to ``4 * planes``) with a residual add.

    With ``deformable`` the 3x3 is the reference's ``DCN`` (DCNv2, with a bias): YOLACT++.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, deformable: bool = False) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2: nn.Module = (
            DCN(planes, planes, 3, stride=stride, padding=1)
            if deformable
            else nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + shortcut)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, the first with the stride) with a residual add."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, deformable: bool = False) -> None:
        super().__init__()
        if deformable:
            raise ValueError("BasicBlock has no deformable variant; DCN needs a Bottleneck ResNet")
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + shortcut)


class ResNetBackbone(nn.Module):
    """ResNet: 7x7 stem, 3x3 max-pool, four residual stages; returns C3, C4, C5.

    Args:
        blocks: residual blocks per stage.
        block: ``Bottleneck`` (ResNet-50/101) or ``BasicBlock`` (the small project backbones).
        stem_channels: width of the stem; stage ``s`` has ``stem_channels * 2**s`` planes.
        deformable: ``deformable(stage, block, num_blocks)``: whether that block's 3x3 is a DCN
            (``ModelConfig.uses_dcn``); None for none.
    """

    def __init__(
        self,
        blocks: tuple[int, ...],
        *,
        block: type[nn.Module] = Bottleneck,
        stem_channels: int = 64,
        deformable: Callable[[int, int, int], bool] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()  # registered first, as in the official state dict
        self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        in_channels = stem_channels
        widths = []
        for stage, num_blocks in enumerate(blocks):
            planes = stem_channels * 2**stage
            stride = 1 if stage == 0 else 2
            dcn = [bool(deformable and deformable(stage, i, num_blocks)) for i in range(num_blocks)]
            stage_blocks = [block(in_channels, planes, stride, deformable=dcn[0])]
            in_channels = planes * block.expansion
            stage_blocks += [block(in_channels, planes, deformable=dcn[i]) for i in range(1, num_blocks)]
            self.layers.append(nn.Sequential(*stage_blocks))
            widths.append(in_channels)
        self.out_channels = tuple(widths[1:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs[1:]


def _conv_bn_leaky(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """DarkNet unit: conv without bias, BatchNorm, LeakyReLU(0.1); "same" padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1),
    )


class DarkNetBlock(nn.Module):
    """DarkNet-53 residual block: 1x1 down to ``channels``, 3x3 back to ``2 * channels``, add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_leaky(2 * channels, channels, 1)
        self.conv2 = _conv_bn_leaky(channels, 2 * channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


class DarkNetBackbone(nn.Module):
    """DarkNet-53: a 3x3 stem then five stages (stride-2 conv + residual blocks); returns C3, C4, C5."""

    def __init__(self, blocks: tuple[int, ...] = DARKNET_BLOCKS) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self._preconv = _conv_bn_leaky(3, 32, 3)
        in_channels = 32
        for stage, num_blocks in enumerate(blocks):
            half = 32 * 2**stage
            stage_layers = [_conv_bn_leaky(in_channels, 2 * half, 3, stride=2)]
            stage_layers += [DarkNetBlock(half) for _ in range(num_blocks)]
            self.layers.append(nn.Sequential(*stage_layers))
            in_channels = 2 * half
        self.out_channels = (256, 512, 1024)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._preconv(x)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs[2:]


class FPN(nn.Module):
    """Feature pyramid: C3..C5 -> P3..P7 (``channels`` wide, 256 officially), finest first.

    Index 0 of ``lat_layers`` / ``pred_layers`` belongs to the coarsest level (C5 / P5).
    P6 and P7 come from stride-2 convs on P5 (after its ReLU) and on P6, without ReLU.
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.lat_layers = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in reversed(in_channels))
        self.pred_layers = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.downsample_layers = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(2))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        coarse_first = features[::-1]
        merged = []
        x = None
        for lateral, feature in zip(self.lat_layers, coarse_first):
            lat = lateral(feature)
            if x is not None:
                x = F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False)
                lat = x + lat
            x = lat
            merged.append(x)
        outs = [F.relu(pred(m)) for pred, m in zip(self.pred_layers, merged)]
        outs = outs[::-1]  # finest first: P3, P4, P5
        for down in self.downsample_layers:
            outs.append(down(outs[-1]))
        return outs


class PredictionHead(nn.Module):
    """Shared head applied to every pyramid level: box, class and mask-coefficient convs."""

    def __init__(self, num_classes: int, num_prototypes: int, channels: int, num_anchors: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.upfeature = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.bbox_layer = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.conf_layer = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.mask_layer = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.upfeature(x)
        return (
            _flatten_nhwc(self.bbox_layer(x), 4),
            _flatten_nhwc(self.conf_layer(x), self.num_classes),
            _flatten_nhwc(self.mask_layer(x), self.num_prototypes),
        )


def _flatten_nhwc(x: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, A*width, H, W]`` -> ``[B, H*W*A, width]`` (y, then x, then anchor)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)


def _proto_net(num_prototypes: int, channels: int) -> nn.Sequential:
    """ProtoNet: three 3x3 convs, x2 bilinear upsample, a 3x3 conv, a 1x1 conv to the prototypes."""

    def conv3() -> nn.Conv2d:
        return nn.Conv2d(channels, channels, 3, padding=1)

    return nn.Sequential(
        conv3(), nn.ReLU(),
        conv3(), nn.ReLU(),
        conv3(), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.ReLU(),
        conv3(), nn.ReLU(),
        nn.Conv2d(channels, num_prototypes, 1),
    )  # fmt: skip


class FastMaskIoUNet(nn.Module):
    """YOLACT++ mask re-scoring: cropped sigmoid masks ``[N, 1, Hp, Wp]`` -> predicted IoU per class ``[N, C]``.

    Five 3x3 stride-2 convs without padding (8..128 channels), a 1x1 conv to the foreground
    classes, each followed by ReLU, then a global max pool (the reference's ``FastMaskIoUNet``).
    """

    def __init__(self, num_foreground: int, widths: tuple[int, ...] = (8, 16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2), nn.ReLU()]
            in_channels = width
        layers += [nn.Conv2d(in_channels, num_foreground, 1), nn.ReLU()]
        self.maskiou_net = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.maskiou_net(masks).amax(dim=(2, 3))


class Yolact(nn.Module):
    """YOLACT for inference, built from a ``ModelConfig``.

    ``forward(images)`` takes normalised ``float32[B, 3, S, S]`` images (``S`` the config's input
    size) and returns ``(loc, conf, mask, proto)`` as described in the module docstring. A
    YOLACT++ config adds DCNv2 blocks to the backbone and ``maskiou_net`` (``FastMaskIoUNet``),
    which the graph contract runs on the cropped masks of the detections.
    BatchNorm layers use their running statistics: call ``eval()`` (``build_network`` does).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.backbone in RESNET_BLOCKS:
            backbone: nn.Module = ResNetBackbone(RESNET_BLOCKS[config.backbone], deformable=config.uses_dcn)
        elif config.backbone in SMALL_RESNETS:
            blocks, stem = SMALL_RESNETS[config.backbone]
            backbone = ResNetBackbone(blocks, block=BasicBlock, stem_channels=stem)
        elif config.backbone == "darknet53":
            backbone = DarkNetBackbone()
        else:
            raise ValueError(
                f"config {config.name!r}: unknown backbone {config.backbone!r}; expected one of {BACKBONES}"
            )
        self.config = config
        self.backbone = backbone
        width = config.fpn_channels
        self.proto_net = _proto_net(config.num_prototypes, width)
        # YOLACT++ only; registered here, where the official state dict lists it.
        self.maskiou_net = FastMaskIoUNet(config.num_classes - 1) if config.mask_rescoring else None
        self.fpn = FPN(backbone.out_channels, width)
        head = PredictionHead(config.num_classes, config.num_prototypes, width, config.priors.anchors_per_location)
        self.prediction_layers = nn.ModuleList([head])
        # Training-only semantic segmentation head: kept so official checkpoints load strictly.
        self.semantic_seg_conv = nn.Conv2d(width, config.num_classes - 1, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        _, loc, conf_logits, mask, proto = self.heads(images)
        return loc, torch.softmax(conf_logits, dim=-1), mask, proto

    def heads(
        self, images: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pyramid, loc, conf_logits, mask, proto)``: ``forward`` before the softmax, plus P3..P7.

        Training needs the logits (for the classification loss) and P3 (for the semantic head).
        """
        pyramid = self.fpn(self.backbone(images))
        proto = F.relu(self.proto_net(pyramid[0])).permute(0, 2, 3, 1)
        head = self.prediction_layers[0]
        locs, confs, masks = zip(*(head(level) for level in pyramid))
        loc = torch.cat(locs, dim=1)
        mask = torch.tanh(torch.cat(masks, dim=1))
        return pyramid, loc, torch.cat(confs, dim=1), mask, proto


def build_network(config: ModelConfig) -> Yolact:
    """A randomly initialised ``Yolact`` for ``config``, in eval mode."""
    return Yolact(config).eval()

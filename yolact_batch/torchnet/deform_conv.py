"""Modulated deformable convolution (DCNv2) in plain torch, exportable to ONNX ``DeformConv``.

The reference (dbolya/yolact ``external/DCNv2``) ships a CUDA kernel only; this is the same
computation written with gathers so it runs on any torch build. The rules, from
``modulated_deformable_im2col_gpu_kernel`` / ``dmcn_im2col_bilinear``:

* kernel point ``k = i * kw + j`` samples at ``(ho * s - p + i * d + dy, wo * s - p + j * d + dx)``
  where ``dy, dx`` are offset channels ``2k`` and ``2k + 1`` (interleaved, not planes);
* bilinear interpolation where every corner outside the map reads 0 (this is the same as the
  kernel's rule "a sample is 0 unless -1 < y < H and -1 < x < W");
* the sample is multiplied by the modulation channel ``k`` (already through a sigmoid), then
  ``out = W . columns + bias``.

When traced for ONNX export (``torch.onnx.export(..., dynamo=False)``), ``DCN`` emits one ONNX
``DeformConv`` node (opset 19) instead of the gathers, unless ``decompose=True``.
"""

from __future__ import annotations

import torch
from torch import nn

DEFORM_CONV_OPSET = 19  # first ONNX opset with DeformConv


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> torch.Tensor:
    """DCNv2 with one offset group and one conv group.

    Args:
        x: ``float[B, C, H, W]`` input.
        offset: ``float[B, 2*K, Ho, Wo]``, ``K = kh * kw``; channel ``2k`` is dy, ``2k+1`` dx.
        mask: ``float[B, K, Ho, Wo]`` modulation (the caller applies the sigmoid).
        weight: ``float[Cout, C, kh, kw]``.
        bias: ``float[Cout]`` or None.

    Returns:
        ``float[B, Cout, Ho, Wo]``.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    k = kh * kw
    offset = offset.reshape(batch, k, 2, out_h, out_w)
    rows = torch.arange(out_h, dtype=x.dtype, device=x.device) * stride - padding
    cols = torch.arange(out_w, dtype=x.dtype, device=x.device) * stride - padding
    ki = torch.arange(kh, dtype=x.dtype, device=x.device).repeat_interleave(kw) * dilation  # [K]
    kj = torch.arange(kw, dtype=x.dtype, device=x.device).repeat(kh) * dilation
    y = rows.view(1, 1, out_h, 1) + ki.view(1, k, 1, 1) + offset[:, :, 0]  # [B, K, Ho, Wo]
    xs = cols.view(1, 1, 1, out_w) + kj.view(1, k, 1, 1) + offset[:, :, 1]
    columns = _bilinear_zero_padded(x, y, xs) * mask.unsqueeze(1)  # [B, C, K, Ho, Wo]
    columns = columns.reshape(batch, channels * k, out_h * out_w)
    out = torch.matmul(weight.reshape(out_channels, channels * k), columns)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    return out.reshape(batch, out_channels, out_h, out_w)


def _bilinear_zero_padded(x: torch.Tensor, y: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sample ``x [B, C, H, W]`` at ``(y, xs) [B, K, Ho, Wo]`` -> ``[B, C, K, Ho, Wo]``; outside corners read 0."""
    batch, channels, height, width = x.shape
    flat = x.reshape(batch, channels, height * width)
    y0 = torch.floor(y)
    x0 = torch.floor(xs)
    ly, lx = y - y0, xs - x0
    hy, hx = 1 - ly, 1 - lx
    out = None
    for dy_, dx_, w in ((0, 0, hy * hx), (0, 1, hy * lx), (1, 0, ly * hx), (1, 1, ly * lx)):
        yc, xc = y0 + dy_, x0 + dx_
        inside = (yc >= 0) & (yc <= height - 1) & (xc >= 0) & (xc <= width - 1)
        index = (yc.clamp(0, height - 1) * width + xc.clamp(0, width - 1)).to(torch.int64)
        values = torch.gather(flat, 2, index.reshape(batch, 1, -1).expand(-1, channels, -1))
        term = values.reshape(batch, channels, *y.shape[1:]) * torch.where(inside, w, 0.0).unsqueeze(1)
        out = term if out is None else out + term
    return out


@torch.library.custom_op("yolact_batch::modulated_deform_conv2d", mutates_args=())
def _deform_conv_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    offset: torch.Tensor,
    bias: torch.Tensor,
    mask: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
) -> torch.Tensor:
    """``modulated_deform_conv2d`` as one opaque op, so the ONNX exporter sees a single node."""
    return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)


@_deform_conv_op.register_fake
def _(x, weight, offset, bias, mask, stride, padding, dilation):
    return x.new_empty(x.shape[0], weight.shape[0], *offset.shape[-2:])


def _deform_conv_symbolic(g, x, weight, offset, bias, mask, stride, padding, dilation):
    """ONNX ``DeformConv`` (opset 19): inputs X, W, offset, B, mask; offsets interleaved (dy, dx)."""
    from torch.onnx import symbolic_helper

    stride = symbolic_helper._get_const(stride, "i", "stride")
    padding = symbolic_helper._get_const(padding, "i", "padding")
    dilation = symbolic_helper._get_const(dilation, "i", "dilation")
    kh, kw = symbolic_helper._get_tensor_sizes(weight)[-2:]
    return g.op(
        "DeformConv", x, weight, offset, bias, mask,
        dilations_i=[dilation, dilation], group_i=1, kernel_shape_i=[kh, kw], offset_group_i=1,
        pads_i=[padding] * 4, strides_i=[stride, stride],
    )  # fmt: skip


def register_onnx_symbolic() -> None:
    """Teach the TorchScript ONNX exporter to write our op as ``DeformConv`` (idempotent)."""
    torch.onnx.register_custom_op_symbolic(
        "yolact_batch::modulated_deform_conv2d", _deform_conv_symbolic, DEFORM_CONV_OPSET
    )


class DCN(nn.Module):
    """The reference's ``DCN`` (DCNv2 with its own offset/mask conv), with its parameter names.

    ``conv_offset_mask`` is a plain conv giving ``3 * K`` channels: the first ``2 * K`` are the
    interleaved offsets, the last ``K`` the modulation logits.

    Args:
        decompose: export as standard ONNX ops (the gathers) instead of ``DeformConv``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        decompose: bool = False,
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.decompose = decompose
        k = kernel_size * kernel_size
        # Registered in the reference's order: weight, bias, then conv_offset_mask.
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * k, kernel_size, stride, padding, dilation)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset_mask(x)
        k = out.shape[1] // 3
        offset, mask = out[:, : 2 * k], torch.sigmoid(out[:, 2 * k :])
        if self.decompose or not torch.onnx.is_in_onnx_export():
            return modulated_deform_conv2d(
                x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation
            )
        return _deform_conv_op(x, self.weight, offset, self.bias, mask, self.stride, self.padding, self.dilation)

"""The Jasper/QuartzNet block (docs/nemo_compatibility.md §4), laid out so its state-dict keys are NeMo's.

A block is R sub-blocks of  [masked (depthwise ->) pointwise conv -> BatchNorm -> ReLU -> Dropout],
the last one stopping after BatchNorm (+ optional squeeze-excitation); a 1x1 conv + BN residual of the
block input is added before the final ReLU -> Dropout.

Masking: every conv sees zeros at frames t >= length, so padding never leaks into valid frames.
The mask is a (B, 1, 1, T) float tensor (1 on valid frames, 0 on padding) built by the caller once per
distinct length vector and handed down; only a strided conv changes the lengths and builds a new one.
Masking multiplies, as NeMo does: 10-20x faster than `where`/`masked_fill` on channels-last tensors.

Layout: activations travel as (B, C, 1, T) in channels-last memory and every 1-D conv runs as a 2-D
conv of height 1. The parameters stay NeMo's Conv1d/BatchNorm1d ones; only the kernels called change:
oneDNN's depthwise conv is 20-40x faster channels-last (docs/benchmarks.md, "CPU kernels"), with identical results.
"""

from __future__ import annotations

import torch
from torch import nn

from quartznet.common.errors import ConfigError
from quartznet.network.masks import time_mask

BN_EPS = 1e-3  # NeMo's BatchNorm1d eps for Jasper blocks
BN_MOMENTUM = 0.1

ACTIVATIONS = {
    "relu": nn.ReLU,
    "selu": nn.SELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "hardtanh": lambda: nn.Hardtanh(0.0, 20.0),  # NeMo's clipped ReLU
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, 1, T) float, 1.0 on valid frames (t < length), 0.0 on padding."""
    return time_mask(lengths, max_len)[:, None, None, :].float()


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, C, 1, T) with its padding frames set to 0, in x's dtype and channels-last layout."""
    return x * mask.to(x.dtype)


def to_frames_layout(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C, 1, T) channels-last, the layout blocks compute in."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def spread_taps(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """(C_out, C_in, 1, K) kernel -> (C_out, C_in, 1, dilation * (K - 1) + 1), dilation - 1 zeros between
    taps: the undilated kernel that computes the dilated one's convolution (gradients reach `weight`)."""
    *rest, taps = weight.shape
    spread = weight.new_zeros(*rest, dilation * (taps - 1) + 1)
    spread[..., ::dilation] = weight
    return spread


class FrameBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d (same parameters, keys and statistics over batch and time) that also takes (B, C, 1, T)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (3, 4):
            raise ValueError(f"expected (B, C, T) or (B, C, 1, T) input, got shape {tuple(input.shape)}")


class MaskedConv1d(nn.Module):
    """Conv1d with 'same' padding that zeroes padding frames of its input first. Key: `conv.weight`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        if stride > 1 and dilation > 1:
            raise ConfigError(f"a conv cannot have both stride ({stride}) and dilation ({dilation}) > 1")
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias,
        )
        self.changes_length = stride > 1 or 2 * padding != dilation * (kernel_size - 1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        (kernel,), (stride,), (padding,), (dilation,) = (
            self.conv.kernel_size, self.conv.stride, self.conv.padding, self.conv.dilation
        )
        return torch.div(lengths + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C_in, 1, T) -> (B, C_out, 1, T')."""
        conv = self.conv
        x = zero_padding(x, mask)
        if self.layout == "conv1d":
            return conv(x.squeeze(2)).unsqueeze(2)
        weight, dilation = conv.weight.unsqueeze(2), conv.dilation[0]  # (C_out, C_in / groups, 1, K)
        if dilation > 1 and conv.groups > 1 and x.device.type == "cpu" and not torch.onnx.is_in_onnx_export():
            # oneDNN has no fast dilated depthwise kernel: a dilated kernel K is the undilated kernel
            # dilation * (K - 1) + 1 with zeros between its taps, the same sums, 4-17x faster forward and
            # 2-8x forward + backward (QuartzNet's C2, bench/bench_dilated_conv.py). Same padding, same lengths.
            weight, dilation = spread_taps(weight, dilation), 1
        return nn.functional.conv2d(
            x, weight, conv.bias,
            stride=(1, conv.stride[0]), padding=(0, conv.padding[0]), dilation=(1, dilation), groups=conv.groups,
        )

    # How the convolution runs; the weights and results are the same either way. "channels_last_2d"
    # (height-1 conv2d on channels-last activations) makes oneDNN's depthwise conv 20-40x faster on
    # CPU (docs/benchmarks.md, "CPU kernels"); "conv1d" is plain Conv1d. bench/bench_gpu.py compares them on a GPU.
    layout: str = "channels_last_2d"


CONV_LAYOUTS = ("channels_last_2d", "conv1d")


def set_conv_layout(module: nn.Module, layout: str) -> None:
    """Run every MaskedConv1d inside `module` in `layout` (one of CONV_LAYOUTS)."""
    if layout not in CONV_LAYOUTS:
        raise ConfigError(f"conv layout must be one of {CONV_LAYOUTS}, got {layout!r}")
    for conv in module.modules():
        if isinstance(conv, MaskedConv1d):
            conv.layout = layout


class SqueezeExcite(nn.Module):
    """Channel gating from the masked time-mean, computed in fp32. Keys: `fc.0.weight`, `fc.2.weight`."""

    def __init__(self, channels: int, reduction_ratio: int, activation: str = "relu"):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction_ratio, bias=False),
            make_activation(activation),
            nn.Linear(channels // reduction_ratio, channels, bias=False),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = zero_padding(x.float(), mask)  # (B, C, 1, T)
            mean = x.sum((2, 3)) / lengths.unsqueeze(1).to(x.dtype)  # (B, C): padding excluded
            gate = torch.sigmoid(self.fc(mean))  # (B, C)
            return x * gate[:, :, None, None]


def conv_bn_layers(
    in_channels: int, out_channels: int, kernel: int, stride: int, dilation: int, separable: bool
) -> list[nn.Module]:
    """[depthwise, pointwise, BN] when separable, else [conv, BN]: NeMo's module order and indices."""
    if separable:
        convs = [
            MaskedConv1d(in_channels, in_channels, kernel, stride, dilation, groups=in_channels),
            MaskedConv1d(in_channels, out_channels, 1),
        ]
    else:
        convs = [MaskedConv1d(in_channels, out_channels, kernel, stride, dilation)]
    return convs + [FrameBatchNorm(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)]


class JasperBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        filters: int,
        repeat: int = 1,
        kernel: int = 11,
        stride: int = 1,
        dilation: int = 1,
        dropout: float = 0.0,
        residual: bool = False,
        separable: bool = False,
        se: bool = False,
        se_reduction_ratio: int = 8,
        activation: str = "relu",
    ):
        super().__init__()
        if residual and stride > 1:
            raise ConfigError("a residual block cannot be strided (its 1x1 residual conv keeps the frame rate)")
        self.mconv = nn.ModuleList()
        channels = in_channels
        for index in range(repeat):
            self.mconv.extend(conv_bn_layers(channels, filters, kernel, stride, dilation, separable))
            if index < repeat - 1:
                self.mconv.extend([make_activation(activation), nn.Dropout(dropout)])
            channels = filters
        if se:
            self.mconv.append(SqueezeExcite(filters, se_reduction_ratio, activation))
        self.res = None
        if residual:  # NeMo nests it twice: res.0.0 is the conv, res.0.1 the BN
            self.res = nn.ModuleList([nn.ModuleList(conv_bn_layers(in_channels, filters, 1, 1, 1, False))])
        self.mout = nn.Sequential(make_activation(activation), nn.Dropout(dropout))

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C_in, 1, T) -> (B, filters, 1, T'), with lengths and padding mask for T'."""
        out, out_lengths, out_mask = x, lengths, mask
        for layer in self.mconv:
            if isinstance(layer, MaskedConv1d):
                out = layer(out, out_mask)
                if layer.changes_length:
                    out_lengths = layer.output_lengths(out_lengths)
                    out_mask = valid_mask(out_lengths, out.shape[-1])
            elif isinstance(layer, SqueezeExcite):
                out = layer(out, out_mask, out_lengths)
            else:
                out = layer(out)
        if self.res is not None:
            res_conv, res_bn = self.res[0]
            out = out + res_bn(res_conv(x, mask))  # residual masked with the block's input lengths
        return self.mout(out), out_lengths, out_mask

"""The Jasper/QuartzNet block (SPEC §4), laid out so its state-dict keys are NeMo's.

A block is R sub-blocks of  [masked (depthwise ->) pointwise conv -> BatchNorm -> ReLU -> Dropout],
the last one stopping after BatchNorm (+ optional squeeze-excitation); a 1x1 conv + BN residual of the
block input is added before the final ReLU -> Dropout.

Masking: every conv sees zeros at frames t >= length, so padding never leaks into valid frames.
The mask is a (B, 1, T) bool tensor built by the caller once per distinct length vector and handed
down; only a strided conv changes the lengths and builds a new one.
"""

from __future__ import annotations

import torch
from torch import nn

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
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, T) bool, True on padding frames (t >= length)."""
    return (torch.arange(max_len, device=lengths.device) >= lengths.unsqueeze(1)).unsqueeze(1)


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
            raise ValueError(f"a conv cannot have both stride ({stride}) and dilation ({dilation}) > 1")
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

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return self.conv(x.masked_fill(pad_mask, 0.0))  # (B, C_in, T) -> (B, C_out, T')


class SqueezeExcite(nn.Module):
    """Channel gating from the masked time-mean, computed in fp32. Keys: `fc.0.weight`, `fc.2.weight`."""

    def __init__(self, channels: int, reduction_ratio: int, activation: str = "relu"):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction_ratio, bias=False),
            make_activation(activation),
            nn.Linear(channels // reduction_ratio, channels, bias=False),
        )

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = x.float().masked_fill(pad_mask, 0.0)  # (B, C, T)
            mean = x.sum(-1) / lengths.unsqueeze(1).to(x.dtype)  # (B, C): padding excluded
            gate = torch.sigmoid(self.fc(mean))  # (B, C)
            return x * gate.unsqueeze(-1)


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
    return convs + [nn.BatchNorm1d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)]


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
            raise ValueError("a residual block cannot be strided (its 1x1 residual conv keeps the frame rate)")
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
        self, x: torch.Tensor, lengths: torch.Tensor, pad_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C_in, T) -> (B, filters, T'), with lengths and padding mask for T'."""
        out, out_lengths, out_mask = x, lengths, pad_mask
        for layer in self.mconv:
            if isinstance(layer, MaskedConv1d):
                out = layer(out, out_mask)
                if layer.changes_length:
                    out_lengths = layer.output_lengths(out_lengths)
                    out_mask = padding_mask(out_lengths, out.shape[-1])
            elif isinstance(layer, SqueezeExcite):
                out = layer(out, out_mask, out_lengths)
            else:
                out = layer(out)
        if self.res is not None:
            res_conv, res_bn = self.res[0]
            out = out + res_bn(res_conv(x, pad_mask))  # residual masked with the block's input lengths
        return self.mout(out), out_lengths, out_mask

"""The convolutional encoder: a stack of Jasper blocks built from a list of block configs.

QuartzNet 5x5 / 10x5 / 15x5, QuartzNet 3x1 / 5x1 and MatchboxNet 3x1x64 / 3x2x64 differ only in that
list, so they are configs (see `conf/model/`), not classes. The list uses NeMo's `jasper:` keys, so a
NeMo YAML's encoder section builds as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from quartznet.common.errors import ConfigError
from quartznet.network.blocks import (
    JasperBlock,
    MaskedConv1d,
    to_frames_layout,
    valid_mask,
)

# NeMo block keys accepted only at the value QuartzNet/MatchboxNet use.
FIXED_BLOCK_KEYS = {
    "groups": 1, "heads": -1, "residual_mode": "add", "residual_dense": False, "stride_last": False,
    "se_context_size": -1, "se_interpolation_mode": "nearest", "normalization": "batch", "norm_groups": -1,
    "future_context": -1, "quantize": False, "residual_panes": [], "conv_mask": True,
}
FIXED_ENCODER_KEYS = {
    "conv_mask": True, "normalization_mode": "batch", "residual_mode": "add", "norm_groups": -1,
    "frame_splicing": 1, "init_mode": "xavier_uniform", "quantize": False,
}


def _check_fixed(where: str, options: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key not in fixed:
            raise ConfigError(f"{where}: unknown config key {key!r}")
        if value is not None and value != fixed[key]:
            raise ConfigError(f"{where}: {key}={value!r} is not supported (only {fixed[key]!r})")


def _single(value: int | Sequence[int], key: str, where: str) -> int:
    """NeMo writes kernel/stride/dilation as one-element lists."""
    if isinstance(value, int):
        return value
    if len(value) != 1:
        raise ConfigError(f"{where}: {key} must hold one value for 1-D convs, got {list(value)}")
    return int(value[0])


def scaled_kernel(kernel: int, factor: float) -> int:
    """NeMo's `kernel_size_factor`: scale, keep >= 1, round even sizes up to odd."""
    size = max(int(kernel * factor), 1)
    return size + 1 if size % 2 == 0 else size


def block_kwargs(
    config: Mapping[str, Any], index: int, activation: str, se: bool = False, se_reduction_ratio: int = 8
) -> dict[str, Any]:
    """One NeMo `jasper:` entry -> JasperBlock keyword arguments; `se*` are the encoder-wide defaults."""
    where = f"encoder.jasper[{index}]"
    config = dict(config)
    kernel = _single(config.pop("kernel", 11), "kernel", where)
    known = {
        "filters": config.pop("filters"),
        "repeat": config.pop("repeat", 3),
        "kernel": scaled_kernel(kernel, config.pop("kernel_size_factor", 1.0)),
        "stride": _single(config.pop("stride", 1), "stride", where),
        "dilation": _single(config.pop("dilation", 1), "dilation", where),
        "dropout": config.pop("dropout", 0.0),
        "residual": config.pop("residual", True),
        "separable": config.pop("separable", False),
        "se": config.pop("se", se),
        "se_reduction_ratio": config.pop("se_reduction_ratio", se_reduction_ratio),
        "activation": activation,
    }
    _check_fixed(where, config, FIXED_BLOCK_KEYS)
    return known


def nemo_encoder_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """Our encoder config -> one NeMo's ConvASREncoder accepts: the encoder-wide `se` and
    `se_reduction_ratio` (ours) are written into every block that does not set its own."""
    section = dict(section)
    defaults = {key: section.pop(key) for key in ("se", "se_reduction_ratio") if key in section}
    section["jasper"] = [defaults | dict(block) for block in section["jasper"]]
    return section


class ConvASREncoder(nn.Module):
    """Masked conv encoder. Keys: `encoder.{block}.mconv.{i}...`, `encoder.{block}.res.0.{0,1}...`.

    `se` / `se_reduction_ratio` here set squeeze-excitation for every block that does not say otherwise
    (`model.encoder.se=true` on the command line turns it on everywhere).
    """

    def __init__(
        self,
        jasper: Sequence[Mapping[str, Any]],
        feat_in: int,
        activation: str = "relu",
        se: bool = False,
        se_reduction_ratio: int = 8,
        **nemo_options: Any,
    ):
        super().__init__()
        _check_fixed("encoder", nemo_options, FIXED_ENCODER_KEYS)
        blocks, channels = [], feat_in
        for index, config in enumerate(jasper):
            kwargs = block_kwargs(config, index, activation, se, se_reduction_ratio)
            blocks.append(JasperBlock(channels, **kwargs))
            channels = kwargs["filters"]
        self.encoder = nn.Sequential(*blocks)
        self.feat_in, self.feat_out = feat_in, channels
        self.apply(xavier_init)

    @property
    def total_stride(self) -> int:
        """Input frames per output frame (2 for QuartzNet: only the first block is strided)."""
        return math.prod(m.conv.stride[0] for m in self.modules() if isinstance(m, MaskedConv1d))

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, feat_in, T) features -> (B, feat_out, T') encodings (not masked past length), (B,) lengths."""
        x, lengths = to_frames_layout(audio_signal), length  # (B, C, 1, T)
        mask = valid_mask(lengths, x.shape[-1])
        for block in self.encoder:
            x, lengths, mask = block(x, lengths, mask)
        return x.squeeze(2), lengths


def xavier_init(module: nn.Module) -> None:
    """NeMo's `init_mode='xavier_uniform'`: conv and linear weights; BatchNorm reset to identity."""
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
    elif isinstance(module, nn.BatchNorm1d):
        module.reset_parameters()

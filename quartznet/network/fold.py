"""BatchNorm folding: an inference copy of a model whose eval-mode BatchNorms live inside the convs.

In eval mode BN is the affine map y = (x - mean) * gamma / sqrt(var + eps) + beta per channel. Every
BN in a Jasper block directly follows a conv (the pointwise conv of a separable sub-block, the plain
conv otherwise, or the 1x1 residual conv), so it folds into that conv exactly:
    W' = W * s[:, None, None],  b' = (b - mean) * s + beta,  s = gamma / sqrt(var + eps).
Masking stays correct: the masks zero a conv's *input* (`MaskedConv1d`), never its output, so the
new bias on padding frames is discarded by the next masked conv just as BN's shift was before.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

from quartznet.network.blocks import FrameBatchNorm, JasperBlock, MaskedConv1d

ModelT = TypeVar("ModelT", bound=nn.Module)


@torch.no_grad()
def fold_conv_batchnorm(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> None:
    """Fold eval-mode `bn` into `conv` in place (computed in float64, stored in the conv's dtype)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"conv has {conv.out_channels} output channels but BatchNorm has {bn.num_features}")
    dtype = conv.weight.dtype
    scale = bn.running_var.double().add(bn.eps).rsqrt()  # (C_out,)
    if bn.affine:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.affine:
        bias = bias + bn.bias.double()
    conv.weight.copy_((conv.weight.double() * scale[:, None, None]).to(dtype))
    conv.bias = nn.Parameter(bias.to(dtype))


def _fold_layers(layers: nn.ModuleList) -> int:
    """Fold each BN of `layers` into the MaskedConv1d right before it, replacing the BN by Identity."""
    folded = 0
    for index in range(1, len(layers)):
        if isinstance(layers[index], FrameBatchNorm):
            conv = layers[index - 1]
            if not isinstance(conv, MaskedConv1d):
                raise ValueError(f"BatchNorm at index {index} does not follow a conv ({type(conv).__name__})")
            fold_conv_batchnorm(conv.conv, layers[index])
            layers[index] = nn.Identity()
            folded += 1
    return folded


def fold_batchnorm(model: ModelT) -> ModelT:
    """A deep copy of `model` in eval mode, every Jasper-block BatchNorm folded into its conv.

    For inference only: the copy has no BatchNorm left to train, so its parameters are frozen
    (requires_grad=False). Outputs equal the eval-mode original up to float rounding. The original
    model is not modified. Raises ValueError if the model has no Jasper blocks to fold.
    """
    folded_model = copy.deepcopy(model).eval()
    folded = 0
    for block in folded_model.modules():
        if isinstance(block, JasperBlock):
            folded += _fold_layers(block.mconv)
            if block.res is not None:
                folded += _fold_layers(block.res[0])
    if folded == 0:
        raise ValueError(f"{type(model).__name__} has no Jasper-block BatchNorm to fold")
    folded_model.requires_grad_(False)
    return folded_model

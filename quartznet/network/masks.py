"""The one rule for which frames of a padded batch are real: frame t of utterance b is valid when
t < lengths[b]. Every mask in the network (features, blocks, heads) comes from here."""

from __future__ import annotations

import torch


def time_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)

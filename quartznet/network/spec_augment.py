"""Training-only augmentation of features, in the model after the preprocessor.

`SpectrogramAugmentation` = SpecAugment frequency and time masks + SpecCutout rectangles (NeMo's config
keys). Masks are drawn per utterance inside its own valid frames, and never fail on clips shorter than a
mask (NeMo's SpecCutout crashes there). Waveform augmentation is the data's: quartznet.data.augment.
"""

from __future__ import annotations

import torch
from torch import nn


def _random_spans(count: int, max_width: torch.Tensor, extent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random [start, start + width) spans per utterance: widths in [0, max_width], inside [0, extent).

    max_width, extent: (B,) -> starts, widths: (B, count). A span wider than the extent is clipped to it.
    """
    batch = extent.shape[0]
    width = (torch.rand(batch, count) * (max_width.unsqueeze(1) + 1)).long()
    width = torch.minimum(width, extent.unsqueeze(1))
    room = (extent.unsqueeze(1) - width + 1).clamp(min=1)
    start = (torch.rand(batch, count) * room).long()
    return start, width


def _span_mask(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """(B, N) spans -> (B, N, size) bool, True inside each span."""
    position = torch.arange(size)
    return (position >= start.unsqueeze(-1)) & (position < (start + width).unsqueeze(-1))


class SpectrogramAugmentation(nn.Module):
    """SpecAugment (Park et al., 2019) + SpecCutout (DeVries & Taylor, 2017) on (B, F, T) features.

    `time_width` may be a fraction (< 1) of each utterance's length, as in NeMo.
    """

    def __init__(
        self,
        freq_masks: int = 0,
        time_masks: int = 0,
        freq_width: int = 10,
        time_width: float = 10,
        rect_masks: int = 0,
        rect_time: int = 5,
        rect_freq: int = 20,
        mask_value: float = 0.0,
        use_vectorized_spec_augment: bool = True,
        use_numba_spec_augment: bool = False,
    ):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.rect_masks, self.rect_time, self.rect_freq = rect_masks, rect_time, rect_freq
        self.mask_value = mask_value

    @torch.no_grad()
    def forward(self, input_spec: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """(B, F, T) features and (B,) valid frames -> (B, F, T) with masked regions set to mask_value."""
        batch, n_freq, n_time = input_spec.shape
        lengths = length.cpu()
        masked = torch.zeros(batch, n_freq, n_time, dtype=torch.bool)
        freq_extent = torch.full((batch,), n_freq)
        if self.freq_masks:
            start, width = _random_spans(self.freq_masks, torch.full((batch,), self.freq_width), freq_extent)
            masked |= _span_mask(start, width, n_freq).any(1).unsqueeze(2)
        if self.time_masks:
            if self.time_width < 1:
                max_width = (lengths.float() * self.time_width).long()
            else:
                max_width = torch.full((batch,), int(self.time_width))
            start, width = _random_spans(self.time_masks, max_width, lengths)
            masked |= _span_mask(start, width, n_time).any(1).unsqueeze(1)
        if self.rect_masks:
            f_start, f_width = _random_spans(self.rect_masks, torch.full((batch,), self.rect_freq), freq_extent)
            t_start, t_width = _random_spans(self.rect_masks, torch.full((batch,), self.rect_time), lengths)
            rectangles = _span_mask(f_start, f_width, n_freq).unsqueeze(3) & _span_mask(
                t_start, t_width, n_time
            ).unsqueeze(2)  # (B, N, F, T)
            masked |= rectangles.any(1)
        return input_spec.masked_fill(masked.to(input_spec.device), self.mask_value)

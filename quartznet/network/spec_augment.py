"""Training-only augmentation.

On features (in the model, after the preprocessor): `SpectrogramAugmentation` = SpecAugment frequency
and time masks + SpecCutout rectangles (NeMo's config keys). Masks are drawn per utterance inside its
own valid frames, and never fail on clips shorter than a mask (NeMo's SpecCutout crashes there).

On waveforms (in the training dataset): `WaveformAugmentation` = speed perturbation, time shift and
white noise, each with its own probability.
"""

from __future__ import annotations

import math

import torch
import torchaudio
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


class WaveformAugmentation:
    """Train-only waveform perturbations on one (L,) utterance at `sample_rate`.

    speed: resample by a factor in [min_speed, max_speed] (tempo and pitch change together, as in
    Ko et al., 2015); shift: move by up to +-shift_ms, zero-filling; white_noise: add Gaussian noise at a
    level in [min_level, max_level] dBFS. Each applies with its own probability (0 = off).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        speed_prob: float = 0.0,
        min_speed: float = 0.9,
        max_speed: float = 1.1,
        shift_prob: float = 0.0,
        min_shift_ms: float = -5.0,
        max_shift_ms: float = 5.0,
        noise_prob: float = 0.0,
        min_level: float = -90.0,
        max_level: float = -46.0,
    ):
        if not 0 < min_speed <= max_speed:
            raise ValueError(f"speed range must satisfy 0 < min_speed <= max_speed, got {min_speed}, {max_speed}")
        self.sample_rate = sample_rate
        self.speed_prob, self.min_speed, self.max_speed = speed_prob, min_speed, max_speed
        self.shift_prob, self.min_shift_ms, self.max_shift_ms = shift_prob, min_shift_ms, max_shift_ms
        self.noise_prob, self.min_level, self.max_level = noise_prob, min_level, max_level

    # The global torch RNG on purpose: DataLoader seeds it differently in every worker.
    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand(()).item()

    @staticmethod
    def _happens(probability: float) -> bool:
        return probability > 0 and torch.rand(()).item() < probability

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        if self._happens(self.speed_prob):
            speed = self._uniform(self.min_speed, self.max_speed)
            # Played `speed` times faster: the same samples heard at rate * speed, resampled back to rate.
            source_rate = int(round(self.sample_rate * speed / 100)) * 100  # a coarse grid keeps resample fast
            if source_rate != self.sample_rate:
                audio = torchaudio.functional.resample(audio, source_rate, self.sample_rate)
        if self._happens(self.shift_prob):
            shift = int(self._uniform(self.min_shift_ms, self.max_shift_ms) * self.sample_rate / 1000)
            if shift and abs(shift) < audio.shape[0]:
                shifted = torch.zeros_like(audio)
                if shift > 0:
                    shifted[shift:] = audio[:-shift]
                else:
                    shifted[:shift] = audio[-shift:]
                audio = shifted
        if self._happens(self.noise_prob):
            level_db = self._uniform(self.min_level, self.max_level)
            noise = torch.randn(audio.shape) * math.pow(10.0, level_db / 20.0)
            audio = audio + noise
        return audio

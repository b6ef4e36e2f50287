"""Training-only augmentation of features, in the model after the preprocessor.

`SpectrogramAugmentation` = SpecAugment frequency and time masks + SpecCutout rectangles (NeMo's config
keys). Masks are drawn per utterance inside its own valid frames, and never fail on clips shorter than a
mask (NeMo's SpecCutout crashes there).

`VocalTractLengthPerturbation` warps each utterance's mel axis: a speaker with a shorter or longer
vocal tract, whose formants sit higher or lower. It runs before SpecAugment.

Waveform augmentation happens before the features: quartznet.network.wave_augment (on the model's
device, BatchWaveformAugmentation) or in the DataLoader workers (WaveformAugmentation).
"""

from __future__ import annotations

import torch
from torch import nn

from quartznet.common.errors import ConfigError


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


class VocalTractLengthPerturbation(nn.Module):
    """VTLP (Jaitly & Hinton, 2013) on (B, n_mels, T) log-mel features.

    With probability `prob` an utterance's frequency axis is warped by a factor alpha drawn from
    [min_warp, max_warp]: f -> alpha * f up to boundary_hz * min(alpha, 1) / alpha, then linearly to the
    Nyquist frequency, so the band stays full (the paper's piecewise-linear warp, boundary 4.8 kHz).
    Output mel bin m then holds what the input had at the frequency that maps onto bin m's centre,
    interpolated linearly between the two neighbouring bins. `centres` are the (n_mels,) filter centre
    frequencies of the front end (AudioToMelSpectrogramPreprocessor.mel_centre_frequencies).
    """

    def __init__(
        self,
        centres: torch.Tensor,
        sample_rate: int = 16000,
        prob: float = 0.0,
        min_warp: float = 0.9,
        max_warp: float = 1.1,
        boundary_hz: float = 4800.0,
    ):
        super().__init__()
        if not 0 <= prob <= 1:
            raise ConfigError(f"vtlp prob must be in [0, 1], got {prob}")
        if not 0 < min_warp <= max_warp:
            raise ConfigError(f"vtlp warp range must satisfy 0 < min_warp <= max_warp, got {min_warp}, {max_warp}")
        if not 0 < boundary_hz < sample_rate / 2:
            raise ConfigError(f"vtlp boundary_hz must lie between 0 and the Nyquist frequency, got {boundary_hz}")
        self.register_buffer("centres", centres.float(), persistent=False)
        self.nyquist = sample_rate / 2
        self.prob, self.min_warp, self.max_warp, self.boundary_hz = prob, min_warp, max_warp, boundary_hz

    def source_frequencies(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B,) warp factors -> (B, n_mels) input frequencies that land on each output centre."""
        alpha = alpha.unsqueeze(1)  # (B, 1)
        knee_out = self.boundary_hz * alpha.clamp(max=1.0)  # where the warped axis bends
        knee_in = knee_out / alpha
        centres = self.centres.unsqueeze(0)  # (1, n_mels)
        below = centres / alpha
        above = self.nyquist - (self.nyquist - centres) * (self.nyquist - knee_in) / (self.nyquist - knee_out)
        return torch.where(centres <= knee_out, below, above)

    @torch.no_grad()
    def forward(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, n_mels, T) -> (B, n_mels, T), warped per utterance; draws come from `generator` (CPU),
        one seeded from the global RNG unless given."""
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        batch, n_mels = features.shape[0], self.centres.shape[0]
        if features.shape[1] != n_mels:
            raise ValueError(f"VTLP: features have {features.shape[1]} bins, the front end {n_mels}")
        warped = torch.rand(batch, generator=generator) < self.prob
        alpha = self.min_warp + (self.max_warp - self.min_warp) * torch.rand(batch, generator=generator)
        if not bool(warped.any()):
            return features
        alpha = torch.where(warped, alpha, torch.ones(()))
        source = self.source_frequencies(alpha.to(self.centres.device))  # (B, n_mels) Hz
        # Fractional bin index of each source frequency, by linear interpolation between the centres.
        upper = torch.searchsorted(self.centres, source.contiguous()).clamp(1, n_mels - 1)  # (B, n_mels)
        lower = upper - 1
        low_f, high_f = self.centres[lower], self.centres[upper]
        weight = ((source - low_f) / (high_f - low_f)).clamp(0.0, 1.0).unsqueeze(2)  # (B, n_mels, 1)
        frames = features.shape[2]
        below = torch.gather(features, 1, lower.unsqueeze(2).expand(-1, -1, frames))  # (B, n_mels, T)
        above = torch.gather(features, 1, upper.unsqueeze(2).expand(-1, -1, frames))
        out = below * (1 - weight) + above * weight
        return torch.where(warped.to(features.device)[:, None, None], out, features)

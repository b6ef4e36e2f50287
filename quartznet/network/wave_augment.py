"""Training-only waveform augmentation of a padded batch, on the model's device, before the features.

`BatchWaveformAugmentation` does what quartznet.data.augment.WaveformAugmentation does per utterance in
the DataLoader workers (speed perturbation, time shift, white noise), but once per batch in the model:
the workers then only decode and collate, and the resampling runs where the model runs (a GPU's
throughput would otherwise need several CPU cores per GPU to keep up).

* speed: one factor per batch, drawn from [min_speed, max_speed] on a 100 Hz grid of source rates
  (as the per-utterance path), applied to the whole padded batch by one resampling call: the
  bucketed batch keeps its low padding and every length scales by the same factor.
* shift: per utterance, up to +-shift_ms inside its own valid samples, zero-filled.
* noise: per utterance, Gaussian at a level in [min_level, max_level] dBFS, on valid samples only.

Every draw comes from one generator per batch, seeded from the global torch RNG as dither and
SpecAugment draw from it: train.py reseeds that RNG before each batch from (seed, rank, epoch, batch)
(quartznet.training.rng.StepSeeding), so a resumed run repeats the same augmentation and every DDP
rank draws its own.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from quartznet.network.masks import time_mask


class BatchWaveformAugmentation(nn.Module):
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
        super().__init__()
        if not 0 < min_speed <= max_speed:
            raise ValueError(f"speed range must satisfy 0 < min_speed <= max_speed, got {min_speed}, {max_speed}")
        for name, value in (("speed_prob", speed_prob), ("shift_prob", shift_prob), ("noise_prob", noise_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.sample_rate = sample_rate
        self.speed_prob, self.min_speed, self.max_speed = speed_prob, min_speed, max_speed
        self.shift_prob, self.min_shift_ms, self.max_shift_ms = shift_prob, min_shift_ms, max_shift_ms
        self.noise_prob, self.min_level, self.max_level = noise_prob, min_level, max_level

    @staticmethod
    def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) audio, (B,) lengths -> augmented (B, L') audio, (B,) lengths. The draws are made on a
        CPU `generator` (one seeded from the global RNG unless given), the signal work on `audio`'s device."""
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        batch = audio.shape[0]
        # The decisions and levels are drawn first, all of them whatever the probabilities say.
        speed_happens, speed = torch.rand((), generator=generator), self._uniform((), self.min_speed, self.max_speed, generator)
        shift_happens = torch.rand(batch, generator=generator) < self.shift_prob
        shift_ms = self._uniform((batch,), self.min_shift_ms, self.max_shift_ms, generator)
        noise_happens = torch.rand(batch, generator=generator) < self.noise_prob
        level_db = self._uniform((batch,), self.min_level, self.max_level, generator)

        if float(speed_happens) < self.speed_prob:
            audio, lengths = self.change_speed(audio, lengths, float(speed))
        if bool(shift_happens.any()):
            shift = (shift_ms * self.sample_rate / 1000).long() * shift_happens  # (B,) samples, 0 = none
            audio = self.shift(audio, lengths, shift.to(audio.device))
        if bool(noise_happens.any()):
            scale = (torch.pow(10.0, level_db / 20.0) * noise_happens).unsqueeze(1)  # (B, 1), 0 where none
            noise = (torch.randn(audio.shape, generator=generator) * scale).to(audio.device)
            audio = audio + noise * time_mask(lengths, audio.shape[1])
        return audio, lengths

    def change_speed(self, audio: torch.Tensor, lengths: torch.Tensor, speed: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Played `speed` times faster: the samples heard at rate * speed, resampled back to the rate."""
        source_rate = int(round(self.sample_rate * speed / 100)) * 100  # a coarse grid keeps the kernel small
        if source_rate == self.sample_rate:
            return audio, lengths
        audio = torchaudio.functional.resample(audio, source_rate, self.sample_rate)
        # torchaudio's output length rule, per utterance: ceil(L * new / old).
        lengths = torch.div(lengths * self.sample_rate + source_rate - 1, source_rate, rounding_mode="floor")
        return audio * time_mask(lengths, audio.shape[1]), lengths  # the resampled padding is not all zero

    @staticmethod
    def shift(audio: torch.Tensor, lengths: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Move each row's valid samples by shift[b] (positive: later), zero-filling; padding stays 0."""
        positions = torch.arange(audio.shape[1], device=audio.device)  # (L,)
        source = positions.unsqueeze(0) - shift.unsqueeze(1)  # (B, L)
        inside = (source >= 0) & (source < lengths.unsqueeze(1)) & (positions < lengths.unsqueeze(1))
        return torch.gather(audio, 1, source.clamp(0, audio.shape[1] - 1)) * inside

"""Training-only waveform augmentation, applied per utterance in the training dataset.

`WaveformAugmentation` = speed perturbation, time shift and white noise, each with its own probability.
Feature augmentation (SpecAugment) is the model's: quartznet.network.spec_augment.

Seeding rule (exact resume): in training, the augmentation of dataset item `index` in epoch `epoch` draws
from its own generator seeded with `item_seed(seed, epoch, index)` (`SeededItems`, which the data module
wraps around the training set). It is a function of those three numbers only, not of which DataLoader
worker loads the item or of how many items that worker loaded before, so a run resumed mid-epoch
(with any number of workers) augments every remaining item as the uninterrupted run does. Used on its
own, `WaveformAugmentation` draws from the global torch RNG, as before.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torchaudio
from torch.utils.data import Dataset

from quartznet.common.errors import ConfigError


def item_seed(*key: int) -> int:
    """A well-mixed 63-bit seed from non-negative ints (e.g. seed, epoch, index): neighbouring keys give
    unrelated streams (numpy's SeedSequence hashing), unlike `seed + index`."""
    state = np.random.SeedSequence([int(k) % 2**64 for k in key]).generate_state(2, np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & (2**63 - 1)


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
            raise ConfigError(f"speed range must satisfy 0 < min_speed <= max_speed, got {min_speed}, {max_speed}")
        self.sample_rate = sample_rate
        self.speed_prob, self.min_speed, self.max_speed = speed_prob, min_speed, max_speed
        self.shift_prob, self.min_shift_ms, self.max_shift_ms = shift_prob, min_shift_ms, max_shift_ms
        self.noise_prob, self.min_level, self.max_level = noise_prob, min_level, max_level
        # Where the random numbers come from: None = the global torch RNG; see `seeded`.
        self.generator: torch.Generator | None = None

    @contextlib.contextmanager
    def seeded(self, *key: int) -> Iterator[WaveformAugmentation]:
        """Within the block, draw from a generator seeded with `item_seed(*key)` (the global RNG is untouched)."""
        previous, self.generator = self.generator, torch.Generator().manual_seed(item_seed(*key))
        try:
            yield self
        finally:
            self.generator = previous

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=self.generator).item()

    def _happens(self, probability: float) -> bool:
        return probability > 0 and torch.rand((), generator=self.generator).item() < probability

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
            noise = torch.randn(audio.shape, generator=self.generator) * math.pow(10.0, level_db / 20.0)
            audio = audio + noise
        return audio


class SeededItems(Dataset):
    """`dataset` read by (epoch, index) keys (`EpochKeyedBatches` makes them): item `index`, augmented by
    `augmentation` (the dataset's own waveform transform) seeded with (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, augmentation: WaveformAugmentation, seed: int):
        self.dataset, self.augmentation, self.seed = dataset, augmentation, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with self.augmentation.seeded(self.seed, epoch, index):
            return self.dataset[index]

"""Training-only waveform augmentation before the features: two drivers over one set of kernels
(quartznet.network.acoustics), with one set of option names.

`WaveformAugmentation` (`data.augment`) perturbs one utterance at a time in the DataLoader workers:
speed, time shift, white noise. `BatchWaveformAugmentation` (`model.waveform_augment`) does the same
once per padded batch in the model, and more: the workers then only decode and collate, and the
resampling runs where the model runs (a GPU's throughput would otherwise need several CPU cores per GPU
to keep up). It adds speaker and channel
variety the workers never had, so that a model trained on a few voices hears more kinds of speech:

  speaker  speed: one factor per batch, drawn from [min_speed, max_speed] on a 100 Hz grid of source
           rates (as the per-utterance path), one resampling call for the padded batch: the bucketed
           batch keeps its low padding and every length scales by the same factor (pitch and tempo).
           tempo: one rate per batch, tempo without pitch (phase vocoder); with speed, pitch and
           tempo vary independently.
           shift: per utterance, up to +-shift_ms inside its own valid samples, zero-filled.
  room     reverberation: per utterance, a room of RT60 in [min_rt60, max_rt60] seconds and a
           direct-to-reverberant ratio in [min_drr_db, max_drr_db] (quartznet.network.acoustics);
           with [min_high_rt60_ratio, max_high_rt60_ratio] below 1, the RT60 falls octave by octave
           to that fraction in the top band (a furnished room's tail is darker than its first echo).
  noise    coloured noise: per utterance, one of `noise_colours` at an SNR in [min_snr_db, max_snr_db].
           noise: per utterance, white noise at a level in [min_level, max_level] dBFS.
  channel  band_limit: per utterance, a band-pass from [min_low_hz, max_low_hz] to
           [min_high_hz, max_high_hz] (telephone: 300-3400 Hz; laptop microphones roll off both ends).
           codec: per utterance, a `codec_bits`-bit mu-law quantiser (G.711-like).
           gain: per utterance, a level change in [min_gain_db, max_gain_db], clipped at full scale.

In that order (a voice, in a room with noise, through a channel). Every `*_prob` is 0 by default:
the module is the identity until a component is switched on. The vocal-tract-length perturbation
works on the mel axis instead: quartznet.network.spec_augment.VocalTractLengthPerturbation.

Every draw comes from one generator per batch, seeded from the global torch RNG as dither and
SpecAugment draw from it: train.py reseeds that RNG before each batch from (seed, rank, epoch, batch)
(quartznet.training.rng.StepSeeding), so a resumed run repeats the same augmentation and every DDP
rank draws its own. Each component has its own sub-generator, so switching one on or off leaves the
others' draws unchanged (ablations compare like with like).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from quartznet.common.errors import ConfigError
from quartznet.common.seeding import item_seed
from quartznet.network import acoustics
from quartznet.network.masks import time_mask

COMPONENTS = ("speed", "tempo", "shift", "room", "coloured_noise", "noise", "band_limit", "codec", "gain")


def check_positive_range(name: str, low: float, high: float) -> None:
    """A ConfigError unless 0 < min_<name> <= max_<name>."""
    if not 0 < low <= high:
        raise ConfigError(f"{name} range must satisfy 0 < min_{name} <= max_{name}, got {low}, {high}")


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
        tempo_prob: float = 0.0,
        min_tempo: float = 0.9,
        max_tempo: float = 1.1,
        room_prob: float = 0.0,
        min_rt60: float = 0.15,
        max_rt60: float = 0.8,
        min_drr_db: float = -3.0,
        max_drr_db: float = 12.0,
        min_high_rt60_ratio: float = 1.0,
        max_high_rt60_ratio: float = 1.0,
        coloured_noise_prob: float = 0.0,
        noise_colours: tuple[str, ...] | list[str] = ("white", "pink", "brown", "blue"),
        min_snr_db: float = 5.0,
        max_snr_db: float = 40.0,
        band_limit_prob: float = 0.0,
        min_low_hz: float = 50.0,
        max_low_hz: float = 400.0,
        min_high_hz: float = 3000.0,
        max_high_hz: float = 7500.0,
        codec_prob: float = 0.0,
        codec_bits: int = 8,
        gain_prob: float = 0.0,
        min_gain_db: float = -20.0,
        max_gain_db: float = 10.0,
    ):
        super().__init__()
        for low, high, name in ((min_speed, max_speed, "speed"), (min_tempo, max_tempo, "tempo"), (min_rt60, max_rt60, "rt60"),
                                (min_high_rt60_ratio, max_high_rt60_ratio, "high_rt60_ratio")):
            check_positive_range(name, low, high)
        if not 0 < min_low_hz <= max_low_hz < min_high_hz <= max_high_hz <= sample_rate / 2:
            raise ConfigError(
                "band limits must satisfy 0 < min_low_hz <= max_low_hz < min_high_hz <= max_high_hz <= sample_rate / 2, "
                f"got {min_low_hz}, {max_low_hz}, {min_high_hz}, {max_high_hz}"
            )
        unknown = sorted(set(noise_colours) - set(acoustics.NOISE_COLOURS))
        if unknown or not noise_colours:
            raise ConfigError(f"noise_colours must be some of {list(acoustics.NOISE_COLOURS)}, got {list(noise_colours)}")
        if not 2 <= codec_bits <= 16:
            raise ConfigError(f"codec_bits must be in [2, 16], got {codec_bits}")
        self.sample_rate = sample_rate
        self.speed_prob, self.min_speed, self.max_speed = speed_prob, min_speed, max_speed
        self.shift_prob, self.min_shift_ms, self.max_shift_ms = shift_prob, min_shift_ms, max_shift_ms
        self.noise_prob, self.min_level, self.max_level = noise_prob, min_level, max_level
        self.tempo_prob, self.min_tempo, self.max_tempo = tempo_prob, min_tempo, max_tempo
        self.room_prob, self.rt60_range, self.drr_range = room_prob, (min_rt60, max_rt60), (min_drr_db, max_drr_db)
        self.high_rt60_ratio_range = (min_high_rt60_ratio, max_high_rt60_ratio)
        self.coloured_noise_prob, self.snr_range = coloured_noise_prob, (min_snr_db, max_snr_db)
        self.noise_exponents = torch.tensor([acoustics.NOISE_COLOURS[colour] for colour in noise_colours])
        self.band_limit_prob = band_limit_prob
        self.low_range, self.high_range = (min_low_hz, max_low_hz), (min_high_hz, max_high_hz)
        self.codec_prob, self.codec_bits = codec_prob, codec_bits
        self.gain_prob, self.gain_range = gain_prob, (min_gain_db, max_gain_db)
        for name in COMPONENTS:
            value = getattr(self, f"{name}_prob")
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}_prob must be in [0, 1], got {value}")

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) audio, (B,) lengths -> augmented (B, L') audio, (B,) lengths. The draws are made on a
        CPU `generator` (one seeded from the global RNG unless given), the signal work on `audio`'s device."""
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        seeds = torch.randint(0, 2**62, (len(COMPONENTS),), generator=generator).tolist()
        draws = {name: torch.Generator().manual_seed(seed) for name, seed in zip(COMPONENTS, seeds)}
        batch = audio.shape[0]

        def happens(name: str, per_utterance: bool = True) -> torch.Tensor:
            """(B,) or () bool: whether `name` applies to each utterance (or to the whole batch)."""
            return torch.rand(batch if per_utterance else (), generator=draws[name]) < getattr(self, f"{name}_prob")

        def uniform(name: str, low: float, high: float, per_utterance: bool = True) -> torch.Tensor:
            return low + (high - low) * torch.rand(batch if per_utterance else (), generator=draws[name])

        # speaker
        if happens("speed", per_utterance=False):
            speed = float(uniform("speed", self.min_speed, self.max_speed, False))
            audio, lengths = acoustics.change_speed(audio, lengths, self.sample_rate, speed)
        if happens("tempo", per_utterance=False):
            rate = float(uniform("tempo", self.min_tempo, self.max_tempo, False))
            audio, lengths = acoustics.time_stretch(audio, lengths, rate)
        shifted = happens("shift")
        if bool(shifted.any()):
            shift_ms = uniform("shift", self.min_shift_ms, self.max_shift_ms)
            shift = acoustics.shift_samples(shift_ms, self.sample_rate) * shifted  # (B,) samples, 0 = none
            audio = acoustics.shift(audio, lengths, shift.to(audio.device))
        # room
        in_room = happens("room")
        if bool(in_room.any()):
            rt60, drr = uniform("room", *self.rt60_range), uniform("room", *self.drr_range)
            # Drawn only when asked for: with one RT60 at every frequency, the room draws do not depend on it.
            darkening = uniform("room", *self.high_rt60_ratio_range) if self.high_rt60_ratio_range != (1.0, 1.0) else None
            responses = acoustics.room_impulse_responses(rt60, drr, self.sample_rate, draws["room"], darkening)
            audio = self.on_rows(
                in_room, audio, lambda rows: acoustics.reverberate(audio[rows], lengths[rows], responses[rows])
            )
        # noise
        coloured = happens("coloured_noise")
        if bool(coloured.any()):
            colour = torch.randint(len(self.noise_exponents), (batch,), generator=draws["coloured_noise"])
            snr = uniform("coloured_noise", *self.snr_range)
            exponents = self.noise_exponents[colour[coloured]]  # the chosen rows' only
            noise = acoustics.coloured_noise(exponents, audio.shape[1], draws["coloured_noise"])
            audio = self.on_rows(
                coloured, audio, lambda rows: acoustics.add_at_snr(audio[rows], lengths[rows], noise, snr[rows])
            )
        noisy = happens("noise")
        if bool(noisy.any()):
            scale = (torch.pow(10.0, uniform("noise", self.min_level, self.max_level) / 20.0) * noisy).unsqueeze(1)
            noise = acoustics.white_noise(audio.shape, scale, draws["noise"]).to(audio.device)  # (B, L), 0 where none
            audio = audio + noise * time_mask(lengths, audio.shape[1])
        # channel
        limited = happens("band_limit")
        if bool(limited.any()):
            low, high = uniform("band_limit", *self.low_range), uniform("band_limit", *self.high_range)
            audio = self.on_rows(limited, audio, lambda rows: acoustics.band_limit(
                audio[rows], lengths[rows], low[rows], high[rows], self.sample_rate))
        coded = happens("codec")
        if bool(coded.any()):
            audio = self.on_rows(
                coded, audio, lambda rows: acoustics.mu_law_quantise(audio[rows], lengths[rows], self.codec_bits)
            )
        louder = happens("gain")
        if bool(louder.any()):
            gain = torch.pow(10.0, uniform("gain", *self.gain_range) / 20.0)
            audio = self.on_rows(
                louder, audio, lambda rows: (audio[rows] * gain[rows].to(audio.device).unsqueeze(1)).clamp(-1.0, 1.0)
            )
        return audio, lengths

    @staticmethod
    def on_rows(
        chosen: torch.Tensor, audio: torch.Tensor, change: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """`audio` with its (B,) `chosen` rows replaced by change(rows), given their indices (CPU): the
        signal work runs on those rows only (a room's FFT convolution is the costliest step here)."""
        rows = chosen.nonzero().squeeze(1)
        changed = audio.clone()
        changed[rows.to(audio.device)] = change(rows)
        return changed


class WaveformAugmentation:
    """The same speaker perturbations for one (L,) utterance at `sample_rate`, in a DataLoader worker
    (`data.augment`; BatchWaveformAugmentation's option names): speed (pitch and tempo together, as in
    Ko et al., 2015), shift by up to +-shift_ms zero-filling, white noise at a level in
    [min_level, max_level] dBFS. Each applies with its own probability (0 = off).

    Draws come from `generator`: the global torch RNG when None, or one seeded per item while
    `seeded(seed, epoch, index)` is active (quartznet.data.datasets.SeededItems: exact resume).
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
        check_positive_range("speed", min_speed, max_speed)
        self.sample_rate = sample_rate
        self.speed_prob, self.min_speed, self.max_speed = speed_prob, min_speed, max_speed
        self.shift_prob, self.min_shift_ms, self.max_shift_ms = shift_prob, min_shift_ms, max_shift_ms
        self.noise_prob, self.min_level, self.max_level = noise_prob, min_level, max_level
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
        """(L,) -> (L',) float32: the batch kernels on a batch of one."""
        length = torch.tensor([audio.shape[0]])
        if self._happens(self.speed_prob):
            speed = self._uniform(self.min_speed, self.max_speed)
            audio = acoustics.change_speed(audio[None], length, self.sample_rate, speed)[0][0]
        if self._happens(self.shift_prob):
            shift = acoustics.shift_samples(self._uniform(self.min_shift_ms, self.max_shift_ms), self.sample_rate)
            if shift and abs(shift) < audio.shape[0]:
                audio = acoustics.shift(audio[None], torch.tensor([audio.shape[0]]), torch.tensor([shift]))[0]
        if self._happens(self.noise_prob):
            level_db = self._uniform(self.min_level, self.max_level)
            audio = audio + acoustics.white_noise(audio.shape, math.pow(10.0, level_db / 20.0), self.generator)
        return audio

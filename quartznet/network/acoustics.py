"""Signal-level simulations of speakers, rooms and channels, on padded (B, L) batches: the kernels of
waveform augmentation.

The building blocks of quartznet.network.wave_augment, whose two drivers (per utterance in the
DataLoader workers, per batch on the model's device) both call them. Each function is deterministic
given its parameters (the randomness lives in the caller), works on any device, and leaves every
utterance's padding (samples at or past its length) at zero.

* change_speed: played faster or slower (pitch and tempo together), one factor for the whole batch,
  on a 100 Hz grid of source rates (speed_source_rate).
* shift: each utterance moved by a number of samples inside its own valid samples, zero-filled.
* white_noise: Gaussian noise at an amplitude.
* time_stretch: tempo without pitch (phase vocoder), one rate for the whole batch.
* room_impulse_responses / reverberate: rooms as exponentially decaying noise tails after a direct
  path (the statistical model of late reverberation: energy decays 60 dB in RT60 seconds), optionally
  faster in the higher octave bands.
* coloured_noise / add_at_snr: white, pink, brown, blue or violet noise at a signal-to-noise ratio.
* band_limit: a microphone or telephone channel as a Butterworth-shaped band-pass.
* mu_law_quantise: the companding quantiser of G.711 telephony, a light codec-like distortion.
"""

from __future__ import annotations

import math

import torch
import torchaudio

from quartznet.network.masks import time_mask

# Spectral slope of each noise colour: power ~ f ** -exponent (white 0, pink 1/f, brown 1/f^2).
NOISE_COLOURS = {"violet": -2.0, "blue": -1.0, "white": 0.0, "pink": 1.0, "brown": 2.0}
# Phase-vocoder STFT for tempo changes: 32 ms windows, 75% overlap at 16 kHz.
STRETCH_N_FFT = 512
STRETCH_HOP = 128
_DECAY_60_DB = math.log(1000.0)  # ln(10^(60/20)): amplitude falls 60 dB over RT60


def fast_fft_length(n: int) -> int:
    """The smallest even 2^a 3^b 5^c >= n. An FFT of the padded batch's own length can be 10x slower when that
    length has a large prime factor (70 ms against 5-10 ms for a batch of 8 x 93k samples on 2 cores)."""
    best = 2 ** max(1, (n - 1).bit_length())
    power_of_5 = 1
    while power_of_5 < best:
        odd = power_of_5
        while odd < best:
            candidate = 2 * odd
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            odd *= 3
        power_of_5 *= 5
    return best


def _valid(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return audio * time_mask(lengths, audio.shape[1])


def mean_power(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B,) mean square over each utterance's valid samples."""
    return (_valid(audio, lengths) ** 2).sum(1) / lengths.clamp(min=1).to(audio.dtype)


def speed_source_rate(sample_rate: int, speed: float) -> int:
    """The rate the samples are read at when played `speed` times faster, on a 100 Hz grid: a coarse grid
    keeps torchaudio's resampling kernel small."""
    return int(round(sample_rate * speed / 100)) * 100


def change_speed(
    audio: torch.Tensor, lengths: torch.Tensor, sample_rate: int, speed: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Played `speed` times faster: the samples heard at speed_source_rate, resampled back to
    `sample_rate`. (B, L) -> (B, ceil(L * rate / source rate)), lengths alike (torchaudio's rule)."""
    source_rate = speed_source_rate(sample_rate, speed)
    if source_rate == sample_rate:
        return audio, lengths
    audio = torchaudio.functional.resample(audio, source_rate, sample_rate)
    lengths = torch.div(lengths * sample_rate + source_rate - 1, source_rate, rounding_mode="floor")
    return _valid(audio, lengths), lengths  # the resampled padding is not all zero


def shift_samples(milliseconds: torch.Tensor | float, sample_rate: int) -> torch.Tensor | int:
    """A shift in milliseconds as whole samples, truncated towards zero."""
    samples = milliseconds * sample_rate / 1000
    return samples.long() if torch.is_tensor(samples) else int(samples)


def shift(audio: torch.Tensor, lengths: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move each row's valid samples by shift[b] (positive: later), zero-filling; padding stays 0."""
    positions = torch.arange(audio.shape[1], device=audio.device)  # (L,)
    source = positions.unsqueeze(0) - shift.unsqueeze(1)  # (B, L)
    inside = (source >= 0) & (source < lengths.unsqueeze(1)) & (positions < lengths.unsqueeze(1))
    return torch.gather(audio, 1, source.clamp(0, audio.shape[1] - 1)) * inside


def white_noise(shape: torch.Size | tuple[int, ...], amplitude: torch.Tensor | float,
                generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise of standard deviation `amplitude` (a number, or one per row broadcast over `shape`)."""
    return torch.randn(shape, generator=generator) * amplitude


def time_stretch(audio: torch.Tensor, lengths: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Played `rate` times faster with the pitch kept: (B, L) -> (B, ceil(L / rate)), lengths scaled alike."""
    if rate == 1.0:
        return audio, lengths
    window = torch.hann_window(STRETCH_N_FFT, device=audio.device)
    spec = torch.stft(audio, STRETCH_N_FFT, STRETCH_HOP, window=window, return_complex=True)  # (B, F, T)
    phase_advance = torch.linspace(0, math.pi * STRETCH_HOP, spec.shape[1], device=audio.device)[..., None]
    stretched = torchaudio.functional.phase_vocoder(spec, rate, phase_advance)
    out_length = math.ceil(audio.shape[1] / rate)
    out = torch.istft(stretched, STRETCH_N_FFT, STRETCH_HOP, window=window, length=out_length)
    new_lengths = torch.ceil(lengths.to(torch.float64) / rate).long().clamp(max=out_length)
    return _valid(out, new_lengths), new_lengths


def room_impulse_responses(
    rt60: torch.Tensor,
    direct_to_reverberant_db: torch.Tensor,
    sample_rate: int,
    generator: torch.Generator,
    high_rt60_ratio: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) RT60 seconds and direct-to-reverberant ratios -> (B, K) impulse responses (K from the longest RT60).

    The direct path is a unit impulse; after it, Gaussian noise decays exponentially, 60 dB over RT60,
    scaled so that its energy is `direct_to_reverberant_db` below the direct path's. With (B,)
    `high_rt60_ratio`, `rt60` is the lowest octave band's and each octave band's tail decays with its own
    RT60, geometrically down to `rt60 * high_rt60_ratio` in the top band: furnishings and air absorb high
    frequencies faster, so a real room's tail darkens as it decays. None: one RT60 at every frequency.
    """
    taps = max(2, int(float(rt60.max()) * sample_rate))
    t = torch.arange(taps, dtype=torch.float32) / sample_rate  # (K,) seconds
    noise = torch.randn(rt60.shape[0], taps, generator=generator)  # (B, K)

    def decaying(band_rt60: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, K) amplitude envelopes
        return torch.exp(-_DECAY_60_DB * t / band_rt60.float().unsqueeze(1).clamp(min=1e-3))

    if high_rt60_ratio is None:
        tail = noise * decaying(rt60)
    else:
        edges = octave_band_edges(sample_rate)
        bands = len(edges) - 1
        spectrum = torch.fft.rfft(noise)  # (B, K // 2 + 1)
        # Each bin's band, the Nyquist bin in the top one: the bands' noises sum back to `noise`.
        band_of_bin = torch.bucketize(torch.fft.rfftfreq(taps, d=1.0 / sample_rate), torch.tensor(edges[1:-1]), right=True)
        tail = torch.zeros_like(noise)
        for band in range(bands):
            band_noise = torch.fft.irfft(spectrum * (band_of_bin == band), n=taps)
            band_rt60 = rt60 * high_rt60_ratio.float() ** (band / max(1, bands - 1))
            tail = tail + band_noise * decaying(band_rt60)
    tail[:, 0] = 0.0
    tail_energy = (tail**2).sum(1, keepdim=True).clamp(min=1e-12)
    tail = tail * torch.sqrt(torch.pow(10.0, -direct_to_reverberant_db.float().unsqueeze(1) / 10) / tail_energy)
    tail[:, 0] = 1.0
    return tail


def octave_band_edges(sample_rate: int) -> list[float]:
    """[0, 250, 500, ..., sample_rate / 2] Hz: below 250 Hz one band, then octaves up to the Nyquist
    frequency (at 16 kHz: 0-250, 250-500, 500-1k, 1k-2k, 2k-4k, 4k-8k)."""
    edges = [0.0, 250.0]
    while edges[-1] * 2 < sample_rate / 2:
        edges.append(edges[-1] * 2)
    return edges + [sample_rate / 2]


def reverberate(audio: torch.Tensor, lengths: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """(B, L) convolved with (B, K) responses, cut at each length and rescaled to its dry power: a room
    changes the sound, not the level (level is its own augmentation)."""
    n = fast_fft_length(audio.shape[1] + responses.shape[1] - 1)  # no wrap-around into the kept samples
    spectrum = torch.fft.rfft(audio, n=n) * torch.fft.rfft(responses.to(audio.device), n=n)
    wet = torch.fft.irfft(spectrum, n=n)[:, : audio.shape[1]]
    wet = _valid(wet, lengths)
    gain = torch.sqrt(mean_power(audio, lengths) / mean_power(wet, lengths).clamp(min=1e-12))
    return wet * gain.unsqueeze(1)


def coloured_noise(exponents: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) spectral exponents (NOISE_COLOURS) -> (B, length) unit-power noise with power ~ f ** -exponent.

    Shaped over a fast FFT length and cut to `length`: a stretch of a longer periodic noise, as coloured."""
    n = fast_fft_length(length)
    white = torch.randn(exponents.shape[0], n, generator=generator)
    spectrum = torch.fft.rfft(white)  # (B, n // 2 + 1)
    frequency = torch.arange(spectrum.shape[1], dtype=torch.float32).clamp(min=1.0)  # DC shaped as the first bin
    spectrum = spectrum * frequency.pow(-exponents.float().unsqueeze(1) / 2)
    noise = torch.fft.irfft(spectrum, n=n)[:, :length]
    return noise / noise.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-12)


def add_at_snr(
    audio: torch.Tensor, lengths: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor
) -> torch.Tensor:
    """(B, L) audio plus (B, L) noise scaled to `snr_db` below each utterance's power (both measured on
    its valid samples), on its valid samples only."""
    noise = _valid(noise.to(audio.device), lengths)
    ratio = mean_power(audio, lengths) / mean_power(noise, lengths).clamp(min=1e-12)
    scale = torch.sqrt(ratio / torch.pow(10.0, snr_db.to(audio.device) / 10))
    return audio + noise * scale.unsqueeze(1)


def band_limit(
    audio: torch.Tensor, lengths: torch.Tensor, low_hz: torch.Tensor, high_hz: torch.Tensor, sample_rate: int,
    order: int = 4,
) -> torch.Tensor:
    """A band-pass with Butterworth magnitude (order `order`, zero phase) from (B,) low_hz to high_hz."""
    n = 1 << (audio.shape[1] - 1).bit_length()  # FFT size, zero padding keeps the filter from wrapping
    spectrum = torch.fft.rfft(audio, n=n)  # (B, n // 2 + 1)
    frequency = torch.fft.rfftfreq(n, d=1.0 / sample_rate).to(audio.device).clamp(min=1e-3)  # (n // 2 + 1,)
    low, high = low_hz.to(audio.device).float().unsqueeze(1), high_hz.to(audio.device).float().unsqueeze(1)
    gain = 1 / torch.sqrt((1 + (low / frequency) ** (2 * order)) * (1 + (frequency / high) ** (2 * order)))
    return _valid(torch.fft.irfft(spectrum * gain, n=n)[:, : audio.shape[1]], lengths)


def mu_law_quantise(audio: torch.Tensor, lengths: torch.Tensor, bits: int) -> torch.Tensor:
    """Through a `bits`-bit mu-law quantiser and back (G.711 telephony uses 8 bits)."""
    channels = 2**bits
    encoded = torchaudio.functional.mu_law_encoding(audio.clamp(-1.0, 1.0), channels)
    return _valid(torchaudio.functional.mu_law_decoding(encoded, channels), lengths)

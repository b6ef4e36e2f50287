"""Resampling memory is bounded whatever the gcd of the two rates (issue 10), without changing the output
for the usual rates, and with the length, time base and block-wise streaming right for the others."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from quartznet.data.audio import (
    EXACT_KERNEL_LIMIT,
    PhaseTableResampler,
    exact_kernel_numel,
    load_audio,
    resampler,
    stream_audio,
)

TARGET = 16000
ODD_RATES = (8001, 4001, 44101, 22051, 7999, 96001)  # gcd 1 with 16000: exact kernels of 10^7-10^9 elements
USUAL_RATES = (8000, 11025, 12000, 22050, 24000, 32000, 44100, 48000, 96000)


def write(path, rate: int, samples: np.ndarray) -> None:
    soundfile.write(path, samples.astype(np.float32), rate, subtype="FLOAT")


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * rate)))


@pytest.mark.parametrize("rate", ODD_RATES + USUAL_RATES)
def test_kernel_size_is_bounded(rate):
    kernel = resampler(rate, TARGET).kernel
    assert kernel.numel() <= EXACT_KERNEL_LIMIT
    assert kernel.numel() * kernel.element_size() <= 2 * 2**20
    if rate in ODD_RATES:  # what torchaudio would have built: at least 60x the bound
        assert exact_kernel_numel(rate, TARGET) > 60 * EXACT_KERNEL_LIMIT
        assert isinstance(resampler(rate, TARGET), PhaseTableResampler)


def test_exact_kernel_numel_matches_torchaudio():
    for rate in USUAL_RATES:
        assert exact_kernel_numel(rate, TARGET) == torchaudio.transforms.Resample(rate, TARGET).kernel.numel()


def test_cache_is_small():
    assert resampler.cache_info().maxsize <= 8


@pytest.mark.parametrize("rate", USUAL_RATES)
def test_usual_rates_are_torchaudio_bit_for_bit(tmp_path, rate):
    samples = noise(1.3, rate, seed=rate)
    write(tmp_path / "a.wav", rate, samples)
    expected = torchaudio.transforms.Resample(rate, TARGET)(torch.from_numpy(samples.astype(np.float32)))
    assert torch.equal(load_audio(tmp_path / "a.wav", TARGET), expected)


@pytest.mark.parametrize("rate", (11025, 22050, 44100))
def test_phase_table_is_torchaudios_filter(rate):
    """Where both exist, the bounded resampler gives torchaudio's exact-kernel output to ~1e-5
    (of a 0.1-rms signal; most of it is torchaudio's float32 phase arithmetic, not the table)."""
    samples = torch.from_numpy(noise(0.8, rate, seed=1).astype(np.float32))
    bounded = PhaseTableResampler(rate, TARGET)
    assert bounded.width == torchaudio.transforms.Resample(rate, TARGET).width
    torch.testing.assert_close(bounded(samples), torchaudio.transforms.Resample(rate, TARGET)(samples),
                               atol=2e-5, rtol=0)


@pytest.mark.parametrize("rate", (8001, 4001, 44101))
def test_length_follows_the_true_rate(tmp_path, rate):
    write(tmp_path / "a.wav", rate, noise(2.8, rate))
    wave = load_audio(tmp_path / "a.wav", TARGET)
    assert abs(wave.numel() - round(2.8 * TARGET)) <= 1
    assert wave.numel() == math.ceil(round(2.8 * rate) * TARGET / rate)  # torchaudio's length rule


@pytest.mark.parametrize("rate, frequency", ((8001, 1000.0), (8001, 3000.0), (44101, 6000.0), (22051, 250.0)))
def test_sine_keeps_its_frequency(tmp_path, rate, frequency):
    """A pure tone comes out at its frequency and phase on the 16 kHz time base of the TRUE rate: treating
    8001 Hz as 8000 Hz would move 3000 Hz by 0.37 Hz and drift by 9 radians over these 4 s.

    The filter is torchaudio's (its transition band starts below the input Nyquist: 3000 Hz from 8 kHz
    comes out 1.5% lower with an image 55 dB down, exactly as torchaudio's exact 8000 Hz kernel does)."""
    seconds = 4.0
    time = np.arange(int(seconds * rate)) / rate
    write(tmp_path / "a.wav", rate, 0.5 * np.sin(2 * np.pi * frequency * time))
    wave = load_audio(tmp_path / "a.wav", TARGET).double()
    edge = TARGET // 10  # away from the zero-padded ends
    inner = wave[edge:-edge]
    # peak FFT bin, zero-padded to 1/64 Hz bins
    padded = torch.nn.functional.pad(inner * torch.hann_window(inner.numel(), dtype=torch.float64),
                                     (0, 64 * TARGET - inner.numel()))
    peak_hz = torch.fft.rfft(padded).abs().argmax().item() * TARGET / padded.numel()
    assert abs(peak_hz - frequency) <= 0.05
    # least-squares fit of sin and cos at exactly `frequency`, output j at j / 16000 s: what is left is
    # tiny, and the phase is the input's (0), so samples sit at the right times all through the clip
    angle = 2 * math.pi * frequency * torch.arange(wave.numel(), dtype=torch.float64)[edge:-edge] / TARGET
    basis = torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)
    sine, cosine = torch.linalg.lstsq(basis, inner[:, None]).solution[:, 0]
    residual = inner - basis @ torch.stack([sine, cosine])
    assert residual.abs().max().item() < 5e-3
    assert abs(math.atan2(cosine.item(), sine.item())) < 1e-4
    assert math.hypot(sine.item(), cosine.item()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("rate", (8001, 44101))
def test_streamed_equals_whole_file(tmp_path, rate):
    path = tmp_path / "long.wav"
    write(path, rate, noise(5.3, rate, seed=rate))
    for offset, duration in ((0.0, None), (1.25, 2.6)):
        whole = load_audio(path, TARGET, offset, duration)
        for block_seconds in (0.7, 2.0, 60.0):
            blocks = list(stream_audio(path, TARGET, offset, duration, block_seconds=block_seconds))
            assert torch.equal(torch.cat(blocks), whole)


def test_phase_table_output_does_not_depend_on_chunking(monkeypatch):
    """Outputs are computed chunk by chunk; the split must not change a single bit."""
    from quartznet.data import audio

    samples = torch.from_numpy(noise(1.1, 8001, seed=3).astype(np.float32))
    bounded = PhaseTableResampler(8001, TARGET)
    whole = bounded(samples)
    monkeypatch.setattr(audio, "OUTPUT_CHUNK", 1000)
    assert torch.equal(bounded(samples), whole)
    assert torch.equal(bounded(samples[None].repeat(2, 1)), whole[None].repeat(2, 1))

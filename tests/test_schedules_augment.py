"""Per-step LR schedules (NeMo's formulas) and training-only augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from quartznet.network.wave_augment import WaveformAugmentation
from quartznet.network.spec_augment import SpectrogramAugmentation
from quartznet.optim.schedulers import build_scheduler


def lr_trace(name: str, steps: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, name, steps, **options)
    trace = []
    for _ in range(steps + 2):
        trace.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return trace


def test_cosine_annealing_with_warmup_steps_and_ratio():
    trace = lr_trace("CosineAnnealing", 100, warmup_steps=10, min_lr=0.001)
    assert trace[0] == pytest.approx(0.1 * 1 / 11)  # NeMo's warmup: (step + 1) / (warmup + 1)
    assert trace[9] == pytest.approx(0.1 * 10 / 11)
    assert trace[10] == pytest.approx(0.1)  # peak right after warmup
    assert trace[55] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert trace[100] == pytest.approx(0.001) and trace[101] == pytest.approx(0.001)  # held at min_lr after the end
    assert lr_trace("CosineAnnealing", 100, warmup_ratio=0.1, min_lr=0.001) == pytest.approx(trace)
    with pytest.raises(ValueError, match="warmup"):
        lr_trace("CosineAnnealing", 100, warmup_steps=10, warmup_ratio=0.1)


def test_polynomial_hold_decay_matches_matchboxnet_schedule():
    trace = lr_trace("PolynomialHoldDecayAnnealing", 200, warmup_ratio=0.05, hold_ratio=0.45, power=2.0, min_lr=0.001)
    assert trace[4] < 0.1 and trace[10] == pytest.approx(0.1) and trace[89] == pytest.approx(0.1)
    assert trace[145] == pytest.approx(0.001 + 0.099 * (1 - 55 / 110) ** 2)
    assert trace[200] == pytest.approx(0.001)


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="CosineAnnealing"):
        lr_trace("Cosine", 10)


def test_spec_augment_never_fails_on_short_clips_and_masks_only_valid_frames():
    torch.manual_seed(0)
    features = torch.randn(3, 64, 200) + 10.0  # never 0 before masking
    lengths = torch.tensor([200, 30, 1])  # 30 and 1 frames: shorter than every time mask and cutout
    in_time = SpectrogramAugmentation(time_masks=2, time_width=25, rect_masks=5, rect_time=120, rect_freq=50)
    for _ in range(20):
        masked = in_time(input_spec=features, length=lengths)
        changed = masked != features
        assert torch.all(masked[changed] == 0.0)
        assert not changed[1, :, 30:].any() and not changed[2, :, 1:].any()  # padding frames untouched
    assert (in_time(input_spec=features, length=lengths)[0] == 0).any()
    # Frequency masks cover whole mel bins, over the full time axis.
    in_frequency = SpectrogramAugmentation(freq_masks=2, freq_width=15)
    changed = in_frequency(input_spec=features, length=lengths) != features
    rows = changed.any(dim=2)  # (B, F)
    assert torch.equal(changed, rows.unsqueeze(2).expand_as(changed)) and rows.sum(1).max() <= 30


def test_waveform_augmentation_speed_shift_and_noise():
    torch.manual_seed(0)
    audio = torch.sin(torch.arange(16000) / 16000 * 2 * math.pi * 440)
    faster = WaveformAugmentation(speed_prob=1.0, min_speed=1.1, max_speed=1.1)(audio)
    assert faster.shape[0] == pytest.approx(16000 / 1.1, abs=20)  # 10% faster: 10% shorter
    shifted = WaveformAugmentation(shift_prob=1.0, min_shift_ms=5.0, max_shift_ms=5.0)(audio)
    assert torch.equal(shifted[80:], audio[:-80]) and torch.all(shifted[:80] == 0)
    noisy = WaveformAugmentation(noise_prob=1.0, min_level=-46.0, max_level=-46.0)(audio)
    noise_rms = (noisy - audio).pow(2).mean().sqrt().item()
    assert 20 * math.log10(noise_rms) == pytest.approx(-46.0, abs=0.5)
    assert torch.equal(WaveformAugmentation()(audio), audio)  # every probability 0: unchanged

"""Batched waveform augmentation on the model's device: shapes, lengths, padding, seeding, identity."""

import pytest
import torch

from conftest import compose, tiny_ctc_config
from quartznet.common.errors import ConfigError
from quartznet.models import CTCModel
from quartznet.network.masks import time_mask
from quartznet.network.wave_augment import BatchWaveformAugmentation, WaveformAugmentation


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([16000, 12000, 7000])
    audio = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    return audio * time_mask(lengths, 16000), lengths


def test_zero_strength_is_the_identity():
    audio, lengths = padded_batch()
    out, out_lengths = BatchWaveformAugmentation()(audio, lengths, seeded(0))
    assert torch.equal(out, audio) and torch.equal(out_lengths, lengths)
    same_speed = BatchWaveformAugmentation(speed_prob=1.0, min_speed=1.0, max_speed=1.0)
    assert torch.equal(same_speed(audio, lengths, seeded(0))[0], audio)


@pytest.mark.parametrize("speed", [0.85, 1.15])
def test_speed_scales_every_length_and_matches_the_per_utterance_resampling(speed):
    audio, lengths = padded_batch()
    augment = BatchWaveformAugmentation(speed_prob=1.0, min_speed=speed, max_speed=speed)
    out, out_lengths = augment(audio, lengths, seeded(0))
    per_utterance = WaveformAugmentation(speed_prob=1.0, min_speed=speed, max_speed=speed)
    for row, length in enumerate(lengths.tolist()):
        expected = per_utterance(audio[row, :length])
        assert out_lengths[row] == expected.shape[0]
        # The same kernel; the batch's zero padding reads as the zeros torchaudio pads with.
        torch.testing.assert_close(out[row, : out_lengths[row]], expected, atol=1e-5, rtol=0)
    assert out.shape[1] == int(out_lengths.max())
    assert not out[~time_mask(out_lengths, out.shape[1])].any()  # padding stays zero


def test_shift_moves_valid_samples_only_and_noise_stays_inside_each_length():
    audio, lengths = padded_batch()
    shifted, same = BatchWaveformAugmentation(shift_prob=1.0, min_shift_ms=5, max_shift_ms=5)(
        audio, lengths, seeded(0))
    assert torch.equal(same, lengths)
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(shifted[row, 80:length], audio[row, : length - 80])
        assert not shifted[row, :80].any() and not shifted[row, length:].any()
    noisy, _ = BatchWaveformAugmentation(noise_prob=1.0, min_level=-30, max_level=-30)(audio, lengths, seeded(0))
    difference = noisy - audio
    assert not difference[~time_mask(lengths, 16000)].any()
    level = 20 * torch.log10(difference[0].std())
    assert -32 < level < -28


def test_the_same_seed_draws_the_same_augmentation_and_another_seed_another():
    audio, lengths = padded_batch()
    augment = BatchWaveformAugmentation(speed_prob=0.5, shift_prob=0.5, noise_prob=0.5)
    first = augment(audio, lengths, seeded(7))
    again = augment(audio, lengths, seeded(7))
    other = augment(audio, lengths, seeded(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape != other[0].shape or not torch.equal(first[0], other[0])


def test_the_model_augments_in_training_only():
    config = tiny_ctc_config() | {"waveform_augment": {"speed_prob": 1.0, "min_speed": 0.9, "max_speed": 0.9,
                                                         "noise_prob": 1.0}}
    model = CTCModel(config)
    audio, lengths = padded_batch()
    model.eval()
    with torch.no_grad():
        _, eval_len, _ = model(input_signal=audio, input_signal_length=lengths)
        model.train()
        _, train_len, _ = model(input_signal=audio, input_signal_length=lengths)
    assert (train_len > eval_len).all()  # 0.9x speed: 11% longer audio, more frames
    assert "waveform_augment" in model.nemo_config()


def test_the_batch_augmentation_runs_at_the_front_ends_rate():
    config = tiny_ctc_config()
    config["preprocessor"]["sample_rate"] = 8000
    config["waveform_augment"] = {"speed_prob": 1.0, "band_limit_prob": 1.0, "max_high_hz": 3800.0}
    assert CTCModel(config).waveform_augmentation.sample_rate == 8000  # telephone audio is augmented as such
    config["waveform_augment"]["sample_rate"] = 16000
    with pytest.raises(ConfigError, match="waveform_augment.sample_rate=16000 but the preprocessor's sample_rate is 8000"):
        CTCModel(config)


def test_fine_tuning_takes_every_augmentation_section_from_its_config(tmp_path):
    from quartznet.training.setup import build_model

    checkpoint = CTCModel(tiny_ctc_config()).save_to(tmp_path / "base.nemo")  # trained without augmentation
    cfg = compose(["experiment=finetune_asr", f"init_from.path={checkpoint}", "+model.waveform_augment.speed_prob=1.0",
                   "+model.vtlp.prob=0.5"])
    model = build_model(cfg)
    assert model.waveform_augmentation.speed_prob == 1.0 and model.vtlp is not None

"""Speaker, room, noise and channel augmentation: shapes, lengths, padding, seeding, identity at zero
strength, and that each one does to the signal what its name says."""

import math

import pytest
import torch

from conftest import tiny_ctc_config
from quartznet.models import CTCModel
from quartznet.network import acoustics
from quartznet.network.features import AudioToMelSpectrogramPreprocessor
from quartznet.network.masks import time_mask
from quartznet.network.spec_augment import VocalTractLengthPerturbation
from quartznet.network.wave_augment import COMPONENTS, BatchWaveformAugmentation

RATE = 16000
# Each new component switched fully on; speed and the rest have their own tests (test_wave_augment.py).
ON = {
    "tempo": {"tempo_prob": 1.0, "min_tempo": 0.8, "max_tempo": 0.8},
    "room": {"room_prob": 1.0},
    "coloured_noise": {"coloured_noise_prob": 1.0},
    "band_limit": {"band_limit_prob": 1.0},
    "codec": {"codec_prob": 1.0},
    "gain": {"gain_prob": 1.0, "min_gain_db": -6.0, "max_gain_db": -6.0},
}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([16000, 12000, 7000])
    audio = torch.randn(3, 16000, generator=seeded(0)) * 0.1
    return audio * time_mask(lengths, 16000), lengths


def tone(hz: float, seconds: float = 1.0) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * hz * torch.arange(int(seconds * RATE)) / RATE)


def level_db(x: torch.Tensor) -> float:
    return float(10 * torch.log10(x.pow(2).mean()))


@pytest.mark.parametrize("component", sorted(ON))
def test_each_component_keeps_padding_zero_and_lengths_consistent(component):
    audio, lengths = padded_batch()
    out, out_lengths = BatchWaveformAugmentation(**ON[component])(audio, lengths, seeded(1))
    assert out.shape[0] == 3 and out.shape[1] == int(out_lengths.max())
    assert not out[~time_mask(out_lengths, out.shape[1])].any()
    assert not torch.equal(out[:, : audio.shape[1]], audio)  # it did something
    if component == "tempo":  # slower: 1 / 0.8 as many samples, the same for every utterance
        assert torch.equal(out_lengths, torch.ceil(lengths / 0.8).long())
    else:
        assert torch.equal(out_lengths, lengths)


@pytest.mark.parametrize("component", sorted(ON))
def test_probability_zero_is_the_identity(component):
    audio, lengths = padded_batch()
    options = ON[component] | {f"{component}_prob": 0.0}
    out, out_lengths = BatchWaveformAugmentation(**options)(audio, lengths, seeded(1))
    assert torch.equal(out, audio) and torch.equal(out_lengths, lengths)


def test_zero_strength_is_the_identity():
    audio, lengths = padded_batch()
    for options, exact in (
        ({"tempo_prob": 1.0, "min_tempo": 1.0, "max_tempo": 1.0}, True),
        ({"gain_prob": 1.0, "min_gain_db": 0.0, "max_gain_db": 0.0}, True),
        # a room with no reverberant energy, noise 200 dB down: the dry signal
        ({"room_prob": 1.0, "min_drr_db": 200.0, "max_drr_db": 200.0}, False),
        ({"coloured_noise_prob": 1.0, "min_snr_db": 200.0, "max_snr_db": 200.0}, False),
    ):
        out, out_lengths = BatchWaveformAugmentation(**options)(audio, lengths, seeded(1))
        assert torch.equal(out_lengths, lengths)
        if exact:
            assert torch.equal(out, audio), options
        else:
            torch.testing.assert_close(out, audio, atol=1e-5, rtol=0)


def test_same_seed_same_draws_and_each_component_draws_on_its_own():
    audio, lengths = padded_batch()
    everything = {key: value for options in ON.values() for key, value in options.items()}
    augment = BatchWaveformAugmentation(**everything)
    first, again, other = (augment(audio, lengths, seeded(seed)) for seed in (3, 3, 4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # Switching the room off leaves the noise the same: noise alone = (room + noise) minus the room's part.
    noise_only = BatchWaveformAugmentation(coloured_noise_prob=1.0)(audio, lengths, seeded(3))[0]
    room_and_noise = BatchWaveformAugmentation(room_prob=1.0, coloured_noise_prob=1.0)(audio, lengths, seeded(3))[0]
    room_only = BatchWaveformAugmentation(room_prob=1.0)(audio, lengths, seeded(3))[0]
    # add_at_snr scales the noise by the signal's power, which the room keeps (reverberate rescales).
    torch.testing.assert_close(noise_only - audio, room_and_noise - room_only, atol=2e-4, rtol=0)


def test_every_component_has_a_probability_and_rejects_one_outside_zero_one():
    for name in COMPONENTS:
        assert getattr(BatchWaveformAugmentation(), f"{name}_prob") == 0.0
        with pytest.raises(ValueError, match=f"{name}_prob"):
            BatchWaveformAugmentation(**{f"{name}_prob": 1.5})
    with pytest.raises(ValueError, match="noise_colours"):
        BatchWaveformAugmentation(noise_colours=["purple"])
    with pytest.raises(ValueError, match="band limits"):
        BatchWaveformAugmentation(min_high_hz=9000.0, max_high_hz=9500.0)


def test_tempo_changes_duration_but_keeps_the_pitch():
    audio = tone(440.0).unsqueeze(0)
    out, out_lengths = acoustics.time_stretch(audio, torch.tensor([RATE]), 0.8)
    assert out.shape[1] == int(out_lengths[0]) == 20000
    peak_hz = torch.fft.rfft(out[0, 2000:18000]).abs().argmax() * RATE / 16000
    assert abs(float(peak_hz) - 440.0) < 5


def test_room_adds_a_decaying_tail_and_keeps_the_power():
    rt60 = torch.tensor([0.3, 0.8])
    responses = acoustics.room_impulse_responses(rt60, torch.tensor([0.0, 0.0]), RATE, seeded(0))
    assert responses.shape == (2, int(0.8 * RATE)) and torch.equal(responses[:, 0], torch.ones(2))
    for row, seconds in enumerate(rt60.tolist()):  # energy 60 dB down after RT60: compare 10 ms windows
        start = responses[row, 1:161].pow(2).mean()
        later = responses[row, int(seconds * RATE / 2) : int(seconds * RATE / 2) + 160].pow(2).mean()
        assert -36 < float(10 * torch.log10(later / start)) < -24  # -30 dB at RT60 / 2
    # 0 dB direct-to-reverberant: the tail carries as much energy as the direct path
    torch.testing.assert_close(responses[:, 1:].pow(2).sum(1), torch.ones(2), rtol=1e-4, atol=0)
    audio, lengths = padded_batch()
    wet = acoustics.reverberate(audio, lengths, acoustics.room_impulse_responses(
        torch.full((3,), 0.5), torch.zeros(3), RATE, seeded(1)))
    torch.testing.assert_close(acoustics.mean_power(wet, lengths), acoustics.mean_power(audio, lengths))


def test_a_darker_room_decays_faster_in_the_high_octaves_only():
    rt60, drr = torch.tensor([0.8, 0.8]), torch.zeros(2)
    one_rt60 = acoustics.room_impulse_responses(rt60, drr, RATE, seeded(4))
    # Every band with the same RT60: the band split sums back to the same tail.
    same = acoustics.room_impulse_responses(rt60, drr, RATE, seeded(4), high_rt60_ratio=torch.ones(2))
    torch.testing.assert_close(same, one_rt60, rtol=0, atol=1e-6)
    darker = acoustics.room_impulse_responses(rt60, drr, RATE, seeded(4), high_rt60_ratio=torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(darker[1], one_rt60[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(darker[:, 1:].pow(2).sum(1), torch.ones(2), rtol=1e-4, atol=0)  # still 0 dB DRR

    def share_above_4khz(response: torch.Tensor, start_s: float) -> float:
        window = response[int(start_s * RATE) : int(start_s * RATE) + 800] * torch.hann_window(800)  # 50 ms
        power = torch.fft.rfft(window).abs().pow(2)
        return float(power[200:].sum() / power.sum())  # bin 200 of 800 samples at 16 kHz = 4 kHz

    # The top band's RT60 is 0.2 s: 0.2 s in, it is 60 dB down while the lowest band is only 15 dB down.
    assert share_above_4khz(darker[0], 0.01) > 0.15 > 0.01 > share_above_4khz(darker[0], 0.2)
    assert 0.3 < share_above_4khz(one_rt60[0], 0.2) < 0.7  # white tail: half the band, half the power


def test_room_darkening_needs_a_valid_range():
    with pytest.raises(ValueError, match="high_rt60_ratio"):
        BatchWaveformAugmentation(room_prob=1.0, min_high_rt60_ratio=0.0, max_high_rt60_ratio=0.5)
    with pytest.raises(ValueError, match="high_rt60_ratio"):
        BatchWaveformAugmentation(room_prob=1.0, min_high_rt60_ratio=0.8, max_high_rt60_ratio=0.5)
    audio, lengths = padded_batch()
    plain = BatchWaveformAugmentation(room_prob=1.0)(audio, lengths, seeded(5))[0]
    dark = BatchWaveformAugmentation(room_prob=1.0, min_high_rt60_ratio=0.3, max_high_rt60_ratio=0.6)
    darkened = dark(audio, lengths, seeded(5))[0]
    assert darkened.shape == plain.shape and not torch.allclose(darkened, plain)
    torch.testing.assert_close(dark(audio, lengths, seeded(5))[0], darkened, rtol=0, atol=0)  # seeded
    assert torch.all(darkened[~time_mask(lengths, audio.shape[1])] == 0)  # padding stays zero


def test_fast_fft_length_is_the_next_even_product_of_2_3_and_5():
    def smooth(n: int) -> bool:
        for prime in (2, 3, 5):
            while n % prime == 0:
                n //= prime
        return n == 1

    for n in range(1, 3000):
        expected = next(m for m in range(max(n, 2), 4 * n + 2) if m % 2 == 0 and smooth(m))
        assert acoustics.fast_fft_length(n) == expected, n
    assert acoustics.fast_fft_length(92799) == 93312  # 8 x 5.8 s of audio and a 0.8 s room: 2^7 3^6


def test_reverberation_is_the_linear_convolution():
    """No wrap-around from the padded FFT length: the first L samples of audio * response, rescaled."""
    audio, lengths = padded_batch()
    responses = acoustics.room_impulse_responses(torch.tensor([0.2, 0.5, 0.8]), torch.zeros(3), RATE, seeded(2))
    direct = torch.stack([
        torch.nn.functional.conv1d(row.view(1, 1, -1), response.flip(0).view(1, 1, -1), padding=response.numel() - 1)
        .view(-1)[: audio.shape[1]] for row, response in zip(audio.double(), responses.double())
    ]) * time_mask(lengths, audio.shape[1])
    wet = acoustics.reverberate(audio, lengths, responses)
    ratio = (wet.double() * direct).sum(1) / direct.pow(2).sum(1)  # the power rescaling, one factor per row
    torch.testing.assert_close(wet.double(), direct * ratio.unsqueeze(1), rtol=0, atol=1e-5)


def test_only_the_chosen_rows_change():
    audio = torch.randn(5, 100)
    before = audio.clone()
    chosen = torch.tensor([True, False, True, True, False])
    seen = []

    def negate(rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.tolist())
        return -audio[rows]

    out = BatchWaveformAugmentation.on_rows(chosen, audio, negate)
    assert seen == [[0, 2, 3]]
    torch.testing.assert_close(out, torch.where(chosen.unsqueeze(1), -audio, audio), rtol=0, atol=0)
    assert torch.equal(audio, before)  # a copy: the batch given is left as it was


@pytest.mark.parametrize("colour", ["white", "pink", "brown", "blue"])
def test_coloured_noise_has_its_slope_and_the_asked_snr(colour):
    exponent = acoustics.NOISE_COLOURS[colour]
    noise = acoustics.coloured_noise(torch.full((8,), exponent), RATE, seeded(0))
    power = torch.fft.rfft(noise).abs().pow(2).mean(0)  # (8001,) per 1 Hz
    low, high = power[100:200].mean(), power[4000:8000].mean()  # 100-200 Hz against 4-8 kHz
    ratio_db = float(10 * torch.log10(low / high))
    expected_db = 10 * exponent * math.log10(6000 / 150)  # f ** -exponent between the band centres
    assert abs(ratio_db - expected_db) < 3
    audio, lengths = padded_batch()
    noisy = acoustics.add_at_snr(audio, lengths, noise[:3], torch.full((3,), 10.0))
    for row, length in enumerate(lengths.tolist()):
        snr = level_db(audio[row, :length]) - level_db((noisy - audio)[row, :length])
        assert abs(snr - 10.0) < 0.01


def test_band_limit_passes_the_band_and_cuts_outside_it():
    signals = torch.stack([tone(100.0), tone(1000.0), tone(6000.0)])
    lengths = torch.full((3,), RATE)
    out = acoustics.band_limit(signals, lengths, torch.full((3,), 300.0), torch.full((3,), 3400.0), RATE)
    change_db = [level_db(out[row, 2000:-2000]) - level_db(signals[row, 2000:-2000]) for row in range(3)]
    # 4th-order Butterworth magnitude: -10 log10(1 + (f / f_c) ** 8) past each edge (-24 dB per octave)
    expected_db = [-10 * math.log10(1 + (300 / 100) ** 8), -0.0, -10 * math.log10(1 + (6000 / 3400) ** 8)]
    assert change_db[1] > -0.1  # in the telephone band
    for measured, expected in zip(change_db, expected_db):
        assert abs(measured - expected) < 1.0


def test_mu_law_is_a_light_distortion_and_gain_clips_at_full_scale():
    audio, lengths = padded_batch()
    coded = acoustics.mu_law_quantise(audio, lengths, 8)
    error_db = level_db(coded[0] - audio[0]) - level_db(audio[0])
    assert -45 < error_db < -25  # 8-bit mu-law: ~38 dB SNR on speech-like levels
    assert not coded[~time_mask(lengths, 16000)].any()
    loud, _ = BatchWaveformAugmentation(gain_prob=1.0, min_gain_db=40.0, max_gain_db=40.0)(audio, lengths, seeded(0))
    assert float(loud.abs().max()) == 1.0


def test_vtlp_moves_formants_with_the_warp_and_is_the_identity_without_one():
    front_end = AudioToMelSpectrogramPreprocessor(normalize=None, dither=0.0)
    centres = front_end.mel_centre_frequencies()
    assert centres.shape == (64,) and bool((centres.diff() > 0).all())
    features, _ = front_end(tone(1000.0).unsqueeze(0), torch.tensor([RATE]))
    peak = int(features[0, :, 10:90].mean(1).argmax())
    for warp, direction in ((1.15, 1), (0.85, -1)):
        warped = VocalTractLengthPerturbation(centres, prob=1.0, min_warp=warp, max_warp=warp)(features, seeded(0))
        moved_to = int(warped[0, :, 10:90].mean(1).argmax())
        assert (moved_to - peak) * direction > 0, (warp, peak, moved_to)
        assert abs(float(centres[moved_to]) - 1000 * warp) < 0.1 * 1000 * warp
    unwarped = VocalTractLengthPerturbation(centres, prob=1.0, min_warp=1.0, max_warp=1.0)(features, seeded(0))
    torch.testing.assert_close(unwarped, features, atol=1e-4, rtol=0)
    assert torch.equal(VocalTractLengthPerturbation(centres, prob=0.0)(features, seeded(0)), features)
    # seeded: the same generator draws the same warps
    vtlp = VocalTractLengthPerturbation(centres, prob=0.5)
    batch = features.repeat(4, 1, 1)
    assert torch.equal(vtlp(batch, seeded(5)), vtlp(batch, seeded(5)))
    assert not torch.equal(vtlp(batch, seeded(5)), vtlp(batch, seeded(6)))


def test_the_model_warps_and_simulates_rooms_in_training_only():
    config = tiny_ctc_config() | {"vtlp": {"prob": 1.0}, "waveform_augment": {"room_prob": 1.0, "gain_prob": 1.0}}
    model = CTCModel(config)
    audio, lengths = padded_batch()
    model.eval()
    with torch.no_grad():
        first = model(input_signal=audio, input_signal_length=lengths)[0]
        second = model(input_signal=audio, input_signal_length=lengths)[0]
        assert torch.equal(first, second)
        model.train()
        torch.manual_seed(0)
        trained = model(input_signal=audio, input_signal_length=lengths)[0]
    assert not torch.allclose(first, trained)
    assert "centres" not in model.state_dict() and not any("vtlp" in key for key in model.state_dict())

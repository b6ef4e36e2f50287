"""Mel and MFCC front ends: docs/nemo_compatibility.md §2 / §3 rules, both mel variants, batching
invariance."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from quartznet.common.errors import ConfigError
from quartznet.network.features import (
    NORMALIZERS,
    AudioToMelSpectrogramPreprocessor,
    AudioToMFCCPreprocessor,
    FeatureStatistics,
    crop_or_pad_frames,
    reflect_pad_per_utterance,
)
from quartznet.long_audio import feature_pieces, normalized_feature_pieces


def speechlike(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    tone = torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t)
    return 0.3 * tone + 0.05 * torch.randn(batch, samples, generator=generator)


def mel(variant: str, **overrides) -> AudioToMelSpectrogramPreprocessor:
    options = {"dither": 0.0, "pad_to": 0, "variant": variant} | overrides
    return AudioToMelSpectrogramPreprocessor(**options).eval()


@pytest.mark.parametrize(("variant", "frames"), [("classic", 16000 // 160 + 1), ("current", 16000 // 160)])
def test_mel_lengths_per_variant(variant, frames):
    features, lengths = mel(variant)(speechlike(1, 16000), torch.tensor([16000]))
    assert lengths.tolist() == [frames]
    assert features.shape == (1, 64, 16000 // 160 + 1)
    assert torch.all(features[0, :, frames:] == 0)


@pytest.mark.parametrize("variant", ["classic", "current"])
def test_mel_alone_equals_in_padded_batch(variant):
    audio = speechlike(3, 24000)
    lengths = torch.tensor([24000, 17123, 5001])
    front_end = mel(variant)
    batched, batched_len = front_end(audio, lengths)
    for i, length in enumerate(lengths.tolist()):
        alone, alone_len = front_end(audio[i : i + 1, :length], torch.tensor([length]))
        assert alone_len.item() == batched_len[i].item()
        torch.testing.assert_close(batched[i, :, : alone.shape[-1]], alone[0], atol=1e-5, rtol=0)


def test_classic_variant_reflects_and_current_zero_pads():
    """Differences between variants sit where docs/nemo_compatibility.md §2 says: STFT edge padding and
    masked pre-emphasis."""
    audio = speechlike(1, 8000)
    classic, _ = mel("classic", normalize=None)(audio, torch.tensor([8000]))
    current, _ = mel("current", normalize=None)(audio, torch.tensor([8000]))
    # Interior frames (whose windows lie inside the signal) agree; the first frame does not.
    torch.testing.assert_close(classic[..., 3:45], current[..., 3:45], atol=1e-4, rtol=0)
    assert (classic[..., 0] - current[..., 0]).abs().max() > 1e-2


def test_classic_matches_torch_reflect_stft_by_hand():
    audio = speechlike(1, 4000)
    front_end = mel("classic", normalize=None)
    ours, _ = front_end(audio, torch.tensor([4000]))
    emphasized = torch.cat([audio[:, :1], audio[:, 1:] - 0.97 * audio[:, :-1]], dim=1)
    spec = torch.stft(
        emphasized, 512, 160, 320, window=torch.hann_window(320, periodic=False), center=True,
        pad_mode="reflect", return_complex=True,
    )
    reference = torch.log(front_end.featurizer.fb @ spec.abs().pow(2) + 2**-24)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-5)


def test_per_feature_normalization_uses_valid_frames_and_unbiased_std():
    features, lengths = mel("current")(speechlike(1, 16000), torch.tensor([16000]))
    valid = features[0, :, : lengths[0]]
    torch.testing.assert_close(valid.mean(-1), torch.zeros(64), atol=1e-4, rtol=0)
    # std of (x - mean) / (std + 1e-5) is std / (std + 1e-5): slightly below 1 with unbiased std.
    assert torch.all(valid.std(-1, unbiased=True) < 1.0) and torch.all(valid.std(-1, unbiased=True) > 0.999)


def test_pad_to_multiple_of_16():
    features, lengths = mel("current", pad_to=16)(speechlike(1, 16000), torch.tensor([16000]))
    assert features.shape[-1] == 112 and lengths.item() == 100
    assert torch.all(features[..., 100:] == 0)


def test_dither_only_in_training():
    front_end = AudioToMelSpectrogramPreprocessor(dither=1e-5, pad_to=0)
    audio, lengths = torch.zeros(1, 8000), torch.tensor([8000])  # silence shows dither most clearly
    front_end.eval()
    first, _ = front_end(audio, lengths)
    second, _ = front_end(audio, lengths)
    assert torch.equal(first, second)
    front_end.train()
    third, _ = front_end(audio, lengths)
    assert not torch.equal(first, third)


def test_unsupported_nemo_option_is_refused():
    with pytest.raises(ConfigError, match="frame_splicing"):  # a user's config error: one line, no traceback
        AudioToMelSpectrogramPreprocessor(frame_splicing=3)
    with pytest.raises(ConfigError, match="no_such_key"):
        AudioToMelSpectrogramPreprocessor(no_such_key=1)
    with pytest.raises(ConfigError, match="features=100000 must be a whole number from 1 to 1024"):
        AudioToMelSpectrogramPreprocessor(features=100_000)  # a filterbank of GBs, refused before it is made
    with pytest.raises(ConfigError, match="n_fft=1048576 must be a whole number from 1 to 16384"):
        AudioToMFCCPreprocessor(n_fft=1 << 20)
    with pytest.raises(ConfigError, match="variant"):
        AudioToMelSpectrogramPreprocessor(variant="newest")


def test_reflect_pad_per_utterance_matches_torch_pad_row_by_row():
    audio = torch.randn(3, 1000)
    lengths = torch.tensor([1000, 700, 300])
    padded = reflect_pad_per_utterance(audio, lengths, 256)
    for i, length in enumerate(lengths.tolist()):
        expected = torch.nn.functional.pad(audio[i : i + 1, :length], (256, 256), mode="reflect")[0]
        assert torch.equal(padded[i, : length + 512], expected)


def test_mfcc_matches_torchaudio_alone_and_in_batch():
    front_end = AudioToMFCCPreprocessor(window_size=0.025).eval()
    reference = torchaudio.transforms.MFCC(
        sample_rate=16000, n_mfcc=64, dct_type=2, norm="ortho", log_mels=True,
        melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 64, "f_min": 0.0,
                   "f_max": 8000.0, "window_fn": torch.hann_window},
    )
    audio = speechlike(2, 16000)
    lengths = torch.tensor([16000, 12345])
    mfcc, frames = front_end(audio, lengths)
    assert frames.tolist() == [100, 78]  # ceil(L / 160)
    for i, length in enumerate(lengths.tolist()):
        expected = reference(audio[i, :length])
        torch.testing.assert_close(mfcc[i, :, : expected.shape[-1]], expected, atol=1e-4, rtol=1e-5)
    assert set(front_end.state_dict()) == {
        "featurizer.dct_mat", "featurizer.MelSpectrogram.spectrogram.window",
        "featurizer.MelSpectrogram.mel_scale.fb",
    }


def test_crop_or_pad_follows_nemo_rule_and_crops_inside():
    features = torch.arange(1, 201, dtype=torch.float32).repeat(2, 3, 1)  # (2, 3, 200): frame t holds t + 1
    frames = torch.tensor([101, 200])
    out = crop_or_pad_frames(features, frames, 128, random_crop=False)
    # 101 frames -> 13 zeros, the frames, 14 zeros (the odd frame goes right)
    assert torch.all(out[0, :, :13] == 0) and torch.all(out[0, :, 114:] == 0)
    assert out[0, 0, 13:114].tolist() == list(range(1, 102))
    assert out[1, 0].tolist() == list(range(37, 165))  # centred crop of 200 frames in evaluation
    torch.manual_seed(0)
    for _ in range(20):
        crop = crop_or_pad_frames(features, frames, 128, random_crop=True)[1, 0]
        start = int(crop[0].item())
        assert 1 <= start <= 73 and crop.tolist() == list(range(start, start + 128))


@pytest.mark.parametrize("mode", ["per_feature", "all_features"])
def test_feature_statistics_of_pieces_normalise_like_the_whole(mode):
    features = 4.0 * torch.randn(1, 64, 5003, generator=torch.Generator().manual_seed(1)) - 9.0  # (1, F, T)
    statistics = FeatureStatistics(mode)
    for piece in features[0].split([1, 700, 2, 3000, 1300], dim=1):
        statistics.update(piece)
    expected = NORMALIZERS[mode](features, torch.tensor([5003]))[0]
    torch.testing.assert_close(statistics.normalize(features[0]), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["classic", "current"])
@pytest.mark.parametrize("samples", [16000 * 9 + 37, 16000 * 3])
def test_feature_pieces_of_a_stream_are_the_whole_recording_features(variant, samples):
    """Log-mels computed piece by piece from a stream of odd-sized blocks equal the whole-file log-mels,
    raw and normalised with whole-file statistics (the two-pass long-audio front end)."""
    preprocessor = mel(variant)
    audio = speechlike(1, samples)[0]
    whole, frames = preprocessor(audio.unsqueeze(0), torch.tensor([samples]), normalize=False)
    normalised, _ = preprocessor(audio.unsqueeze(0), torch.tensor([samples]))
    stream = lambda: audio.split(12345)  # noqa: E731
    for piece_frames in (97, 400, 5000):
        pieces = torch.cat(list(feature_pieces(preprocessor.featurizer, stream(), piece_frames)), dim=1)
        assert pieces.shape == (64, frames.item())
        torch.testing.assert_close(pieces, whole[0, :, : frames.item()], atol=1e-4, rtol=1e-5)
        pieces = torch.cat(list(normalized_feature_pieces(preprocessor.featurizer, stream, piece_frames)), dim=1)
        torch.testing.assert_close(pieces, normalised[0, :, : frames.item()], atol=1e-4, rtol=1e-5)

"""Audio front ends: waveform (B, L) at 16 kHz -> features (B, F, T) plus frame lengths.

Two preprocessors, matching NeMo's numerically (docs/nemo_compatibility.md §2 and §3):

* `AudioToMelSpectrogramPreprocessor` - log-mel features for QuartzNet ASR.
* `AudioToMFCCPreprocessor`           - MFCCs for Speech Commands / MatchboxNet.

Both compute each utterance as if it were alone, whatever padding the batch carries:
where the STFT reflects the signal at its edges, it reflects each utterance at its
own end (one gather, no loop), so batching never changes a valid frame.
Features are always computed in fp32 with autocast off.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torchaudio
from torch import nn

from quartznet.common.errors import ConfigError
from quartznet.network.masks import time_mask

LOG_ZERO_GUARD = 2.0**-24  # NeMo's `log_zero_guard_value` for log-mels
NORMALIZE_EPS = 1e-5  # added to the std in per-feature normalisation (NeMo's CONSTANT)
MFCC_LOG_OFFSET = 1e-6  # torchaudio's MFCC(log_mels=True) offset
MEL_VARIANTS = ("classic", "current")


def reflect_pad_per_utterance(x: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad each row of `x` (B, L) by `pad` samples on both sides, reflecting at 0 and at its own length.

    Equivalent to `F.pad(x[i, :lengths[i]], (pad, pad), mode="reflect")` row by row, laid out in a
    (B, L_max + 2 * pad) tensor; samples further than `pad` past a row's end are zero.
    """
    batch, max_len = x.shape
    source = torch.arange(-pad, max_len + pad, device=x.device).expand(batch, -1)  # (B, L + 2 pad)
    last = (lengths - 1).unsqueeze(1)  # (B, 1)
    source = source.abs()  # reflect at the start
    source = torch.where(source > last, 2 * last - source, source)  # reflect at each end
    beyond = source < 0  # only past `last + pad`, which no valid frame reads
    padded = torch.gather(x, 1, source.clamp(min=0, max=max_len - 1))
    return padded.masked_fill(beyond, 0.0)


def normalize_per_feature(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per utterance and channel: (x - mean) / (unbiased std + 1e-5), statistics over valid frames."""
    valid = time_mask(lengths, x.shape[-1]).unsqueeze(1)  # (B, 1, T)
    count = lengths.view(-1, 1, 1).to(x.dtype)
    mean = x.masked_fill(~valid, 0.0).sum(-1, keepdim=True) / count  # (B, F, 1)
    centered = (x - mean).masked_fill(~valid, 0.0)
    var = centered.pow(2).sum(-1, keepdim=True) / (count - 1)
    std = var.sqrt().nan_to_num(0.0) + NORMALIZE_EPS  # a 1-frame utterance has no std: NeMo uses 0
    return (x - mean) / std


def normalize_all_features(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per utterance: one mean and unbiased std over all channels and valid frames."""
    valid = time_mask(lengths, x.shape[-1]).unsqueeze(1)  # (B, 1, T)
    count = (lengths * x.shape[1]).view(-1, 1, 1).to(x.dtype)
    mean = x.masked_fill(~valid, 0.0).sum((1, 2), keepdim=True) / count
    var = (x - mean).masked_fill(~valid, 0.0).pow(2).sum((1, 2), keepdim=True) / (count - 1)
    return (x - mean) / (var.sqrt().nan_to_num(0.0) + NORMALIZE_EPS)


NORMALIZERS = {"per_feature": normalize_per_feature, "all_features": normalize_all_features}


class FeatureStatistics:
    """Running mean and variance of (F, n) pieces of one recording, so that a recording too long to hold
    is normalised as NORMALIZERS[mode] would normalise it whole: per channel ("per_feature") or over all
    channels ("all_features"). Pieces merge in float64 with Chan et al.'s pairwise update (no
    sum-of-squares cancellation however long the recording)."""

    def __init__(self, mode: str):
        if mode not in NORMALIZERS:
            raise ConfigError(f"normalize must be one of {sorted(NORMALIZERS)}, got {mode!r}")
        self.mode = mode
        self.count = 0
        self.mean = torch.zeros(())
        self.m2 = torch.zeros(())  # sum of squared deviations from the mean

    def update(self, piece: torch.Tensor) -> None:
        """Add a (F, n) piece of frames."""
        x = piece.double().reshape(1, -1) if self.mode == "all_features" else piece.double()
        count = x.shape[1]
        if count == 0:
            return
        mean = x.mean(1)
        m2 = (x - mean.unsqueeze(1)).pow(2).sum(1)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta.pow(2) * self.count * count / total
        self.count = total

    def normalize(self, piece: torch.Tensor) -> torch.Tensor:
        """(F, n) -> (F, n) float32 with the statistics of every piece seen."""
        if self.count == 0:
            raise ValueError("FeatureStatistics.normalize before any update")
        std = (self.m2 / (self.count - 1)).sqrt() if self.count > 1 else torch.zeros_like(self.m2)
        return ((piece.double() - self.mean.unsqueeze(-1)) / (std.unsqueeze(-1) + NORMALIZE_EPS)).float()


def pad_time_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Right-pad the time axis of (B, F, T) with zeros to a multiple of `multiple` (0 = no padding).

    Always one pad of (-T) mod `multiple` frames (0 when T is a multiple already), with no branch on T:
    an ONNX trace then keeps the padding right for every input length."""
    if multiple <= 0:
        return x
    return nn.functional.pad(x, (0, (multiple - x.shape[-1] % multiple) % multiple))


class StftPower(nn.Module):
    """|STFT|^2 of edge-padded audio with torch.stft: (B, L) -> (B, n_fft/2+1, T). The default power
    spectrum of FilterbankFeatures; export swaps in an equivalent that ONNX can trace (no complex)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length

    def forward(self, x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
            window=window, center=False, return_complex=True,
        )
        # Bit-identical to summing view_as_real(spec) ** 2 over its last axis, which reduces an axis of 2 and
        # took ~4% of a demo training step.
        return spec.real.square() + spec.imag.square()


# The largest front ends built (QuartzNet and MatchboxNet: a 512-point FFT, 64 mels): at most ~33 MB of
# filterbank, whatever a config or checkpoint asks for.
MAX_N_FFT, MAX_FEATURES = 1 << 14, 1024


def check_front_end_size(where: str, win_length: int, hop_length: int, n_fft: int, features: dict[str, int]) -> None:
    """A ConfigError naming the key when a front-end size is not a positive whole number or exceeds
    MAX_N_FFT / MAX_FEATURES, or the window is longer than the FFT."""
    for key, value in {"n_fft": n_fft, "window (samples)": win_length, "stride (samples)": hop_length, **features}.items():
        limit = MAX_FEATURES if key in features else MAX_N_FFT
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
            raise ConfigError(f"{where}: {key}={value!r} must be a whole number from 1 to {limit}")
    if win_length > n_fft:
        raise ConfigError(f"{where}: the window ({win_length} samples) is longer than n_fft={n_fft}")


def slaney_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangular mel filters, Slaney's scale and area normalisation (NeMo's librosa
    defaults). On the meta device (a model built for its shapes only, before a checkpoint's weights are
    checked against them) only the shape is made: torchaudio's boolean indexing has no meta kernel."""
    if torch.get_default_device().type == "meta":
        return torch.empty(n_freqs, n_mels)
    return torchaudio.functional.melscale_fbanks(
        n_freqs=n_freqs, f_min=f_min, f_max=f_max, n_mels=n_mels, sample_rate=sample_rate, norm="slaney",
        mel_scale="slaney",
    )


class FilterbankFeatures(nn.Module):
    """Log-mel filterbank features with NeMo's buffers `window` and `fb` (state-dict compatible).

    variant "classic" (NeMo < mid-2025, NGC checkpoints): reflect STFT padding, seq_len = L // hop + 1.
    variant "current" (NeMo >= mid-2025): zero STFT padding, seq_len = L // hop, pre-emphasis masked.

    The one home of the mel math: training, inference, long audio (pieces without normalisation) and
    the ONNX export all run this forward. `power_spectrum` is the pluggable STFT piece (StftPower by
    default; the export sets a traceable one with the same output).
    """

    def __init__(
        self,
        sample_rate: int,
        win_length: int,
        hop_length: int,
        n_fft: int,
        n_mels: int,
        f_min: float,
        f_max: float,
        preemph: float | None,
        dither: float,
        normalize: str | None,
        pad_to: int,
        variant: str,
    ):
        super().__init__()
        if variant not in MEL_VARIANTS:
            raise ConfigError(f"mel variant must be one of {MEL_VARIANTS}, got {variant!r}")
        if normalize is not None and normalize not in NORMALIZERS:
            raise ConfigError(f"normalize must be one of {sorted(NORMALIZERS)} or null, got {normalize!r}")
        self.hop_length, self.n_fft, self.win_length = hop_length, n_fft, win_length
        self.preemph, self.dither, self.normalize, self.pad_to = preemph, dither, normalize, pad_to
        self.variant = variant
        self.sample_rate, self.f_min, self.f_max = sample_rate, f_min, f_max
        self.register_buffer("window", torch.hann_window(win_length, periodic=False))
        # torchaudio gives (n_freqs, n_mels); NeMo stores (1, n_mels, n_freqs) for a batched matmul.
        fb = slaney_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
        self.register_buffer("fb", fb.T.unsqueeze(0).contiguous())
        self.power_spectrum: nn.Module = StftPower(n_fft, hop_length, win_length)

    @property
    def n_mels(self) -> int:
        return self.fb.shape[1]

    def mel_centre_frequencies(self) -> torch.Tensor:
        """(n_mels,) the frequency in Hz at which each mel filter peaks, to 1 Hz (what warping the mel axis
        needs: quartznet.network.spec_augment.VocalTractLengthPerturbation)."""
        n_freqs = int(self.sample_rate // 2) + 1  # a 1 Hz grid
        filters = slaney_filterbank(n_freqs, self.f_min, self.f_max, self.n_mels, self.sample_rate)  # (n_freqs, n_mels)
        return filters.argmax(0).float() * (self.sample_rate / 2) / (n_freqs - 1)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames per utterance from its sample count."""
        if self.variant == "classic":
            return lengths // self.hop_length + 1
        return lengths // self.hop_length

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) samples -> (B, n_mels, T) log-mels, normalised unless `normalize` is False (pieces of a
        long recording are normalised with whole-recording statistics instead, see FeatureStatistics)."""
        x = audio.float()  # (B, L)
        frames = self.frame_lengths(lengths)
        if self.training and self.dither > 0:
            x = x + self.dither * torch.randn_like(x)
        if self.preemph:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemph * x[:, :-1]], dim=1)
            if self.variant == "current":
                x = x.masked_fill(~time_mask(lengths, x.shape[1]), 0.0)
        half = self.n_fft // 2
        if self.variant == "classic":
            x = reflect_pad_per_utterance(x, lengths, half)
        else:  # samples past each length are zero already, so batch padding reads as zero padding
            x = nn.functional.pad(x, (half, half))
        power = self.power_spectrum(x, self.window)  # (B, n_fft/2+1, T)
        mel = torch.matmul(self.fb, power)  # (B, n_mels, T)
        x = torch.log(mel + LOG_ZERO_GUARD)
        if self.normalize and normalize:
            x = NORMALIZERS[self.normalize](x, frames)
        x = x.masked_fill(~time_mask(frames, x.shape[-1]).unsqueeze(1), 0.0)
        return pad_time_to_multiple(x, self.pad_to), frames


class AudioToMelSpectrogramPreprocessor(nn.Module):
    """QuartzNet's front end, taking NeMo's config keys (`window_size` and `window_stride` in seconds)."""

    # NeMo keys accepted only at the value QuartzNet uses; anything else is refused, not ignored.
    FIXED_KEYS = {
        "window": "hann", "log": True, "log_zero_guard_type": "add", "log_zero_guard_value": LOG_ZERO_GUARD,
        "frame_splicing": 1, "mag_power": 2.0, "pad_value": 0.0, "exact_pad": False, "mel_norm": "slaney",
        "stft_exact_pad": False, "stft_conv": False, "nb_augmentation_prob": 0.0, "use_grads": False,
    }
    # NeMo keys that do not change the output (randomness source, legacy options).
    INERT_KEYS = {"rng", "nb_max_freq", "use_torchaudio"}

    def __init__(
        self,
        sample_rate: int = 16000,
        window_size: float = 0.02,
        window_stride: float = 0.01,
        n_window_size: int | None = None,
        n_window_stride: int | None = None,
        n_fft: int | None = None,
        features: int = 64,
        lowfreq: float = 0.0,
        highfreq: float | None = None,
        preemph: float | None = 0.97,
        dither: float = 1e-5,
        normalize: str | None = "per_feature",
        pad_to: int = 16,
        variant: str = "current",
        **nemo_options,
    ):
        super().__init__()
        for key, value in nemo_options.items():
            if key in self.INERT_KEYS:
                continue
            if key not in self.FIXED_KEYS:
                raise ConfigError(f"AudioToMelSpectrogramPreprocessor: unknown config key {key!r}")
            if value is not None and value != self.FIXED_KEYS[key]:
                raise ConfigError(
                    f"AudioToMelSpectrogramPreprocessor: {key}={value!r} is not supported "
                    f"(QuartzNet uses {self.FIXED_KEYS[key]!r})"
                )
        win_length = n_window_size or round(window_size * sample_rate)
        hop_length = n_window_stride or round(window_stride * sample_rate)
        n_fft = n_fft or 2 ** math.ceil(math.log2(win_length))
        check_front_end_size("AudioToMelSpectrogramPreprocessor", win_length, hop_length, n_fft, {"features": features})
        self.sample_rate = sample_rate
        self.featurizer = FilterbankFeatures(
            sample_rate=sample_rate, win_length=win_length, hop_length=hop_length, n_fft=n_fft,
            n_mels=features, f_min=lowfreq, f_max=highfreq or sample_rate / 2, preemph=preemph,
            dither=dither, normalize=normalize, pad_to=pad_to, variant=variant,
        )

    @property
    def n_features(self) -> int:
        return self.featurizer.n_mels

    @property
    def hop_length(self) -> int:
        return self.featurizer.hop_length

    def mel_centre_frequencies(self) -> torch.Tensor:
        return self.featurizer.mel_centre_frequencies()

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.featurizer.frame_lengths(lengths)

    def content_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames that hold an utterance of `lengths` samples (here: its valid frames)."""
        return self.featurizer.frame_lengths(lengths)

    @torch.no_grad()
    def forward(
        self, input_signal: torch.Tensor, length: torch.Tensor, normalize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) samples, (B,) lengths -> (B, n_mels, T) features, (B,) frame lengths."""
        return self.featurizer(input_signal, length, normalize)


def crop_or_pad_frames(
    features: torch.Tensor, frames: torch.Tensor, target: int, random_crop: bool
) -> torch.Tensor:
    """Bring each utterance's `frames[i]` valid frames to exactly `target` frames: (B, F, T) -> (B, F, target).

    Longer: a window of `target` frames (random offset when `random_crop`, else centred).
    Shorter: zero padding on both sides, the odd frame on the right (NeMo's CropOrPad rule).
    Per utterance, so an utterance gives the same result alone or in a padded batch.
    """
    excess = frames - target  # (B,)
    if random_crop:
        crop_offset = (torch.rand(frames.shape, device=frames.device) * (excess + 1).clamp(min=1)).long()
    else:
        crop_offset = excess.clamp(min=0) // 2
    start = torch.where(excess > 0, crop_offset, -(-excess // 2))  # negative start = left padding
    source = start.unsqueeze(1) + torch.arange(target, device=features.device)  # (B, target)
    inside = (source >= 0) & (source < frames.unsqueeze(1))
    index = source.clamp(0, features.shape[-1] - 1).unsqueeze(1).expand(-1, features.shape[1], -1)
    return torch.gather(features, 2, index).masked_fill(~inside.unsqueeze(1), 0.0)


class AudioToMFCCPreprocessor(nn.Module):
    """MatchboxNet's MFCC front end: torchaudio's MFCC module as `featurizer` (NeMo's state-dict keys).

    The STFT is run here rather than inside torchaudio so that each utterance is reflect-padded at its
    own end; the mel filterbank and DCT are torchaudio's. Crop-or-pad to a fixed frame count is the
    model's job (`crop_or_pad_frames`), as in NeMo.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        window_size: float = 0.02,
        window_stride: float = 0.01,
        n_window_size: int | None = None,
        n_window_stride: int | None = None,
        window: str = "hann",
        n_fft: int | None = None,
        lowfreq: float = 0.0,
        highfreq: float | None = None,
        n_mels: int = 64,
        n_mfcc: int = 64,
        dct_type: int = 2,
        norm: str = "ortho",
        log: bool = True,
    ):
        super().__init__()
        if window != "hann":
            raise ConfigError(f"AudioToMFCCPreprocessor: window={window!r} is not supported (use 'hann')")
        if not log:
            raise ConfigError("AudioToMFCCPreprocessor: log=false (dB scaling) is not supported; use log=true")
        win_length = n_window_size or round(window_size * sample_rate)
        self.hop_length = n_window_stride or round(window_stride * sample_rate)
        n_fft = n_fft or 2 ** math.ceil(math.log2(win_length))
        check_front_end_size("AudioToMFCCPreprocessor", win_length, self.hop_length, n_fft,
                             {"n_mels": n_mels, "n_mfcc": n_mfcc})
        self.sample_rate = sample_rate
        # On the meta device (shapes only, see slaney_filterbank) the transform is made on the CPU: its
        # filterbank check reads values. Its buffers are small (check_front_end_size bounds them).
        on_meta = torch.get_default_device().type == "meta"
        with torch.device("cpu") if on_meta else contextlib.nullcontext():
            self.featurizer = torchaudio.transforms.MFCC(
                sample_rate=sample_rate, n_mfcc=n_mfcc, dct_type=dct_type, norm=norm, log_mels=log,
                melkwargs={
                    "n_fft": n_fft, "win_length": win_length,
                    "hop_length": self.hop_length, "n_mels": n_mels, "f_min": lowfreq,
                    "f_max": highfreq or sample_rate / 2, "window_fn": torch.hann_window,
                },
            )

    @property
    def n_features(self) -> int:
        return self.featurizer.n_mfcc

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """NeMo's MFCC length: ceil(L / hop) (the STFT itself yields L // hop + 1 frames)."""
        return (lengths + self.hop_length - 1) // self.hop_length

    @torch.no_grad()
    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, input_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) samples, (B,) lengths -> (B, n_mfcc, L_max // hop + 1) MFCCs, (B,) NeMo frame lengths."""
        mel_spectrogram = self.featurizer.MelSpectrogram
        spectrogram = mel_spectrogram.spectrogram
        x = reflect_pad_per_utterance(input_signal.float(), length, spectrogram.n_fft // 2)
        spec = torch.stft(
            x, spectrogram.n_fft, hop_length=spectrogram.hop_length, win_length=spectrogram.win_length,
            window=spectrogram.window, center=False, return_complex=True,
        )
        mel = mel_spectrogram.mel_scale(spec.abs().pow(2))  # (B, n_mels, T)
        mel = torch.log(mel + MFCC_LOG_OFFSET)
        mfcc = torch.matmul(mel.transpose(1, 2), self.featurizer.dct_mat).transpose(1, 2)
        return mfcc, self.frame_lengths(length)

    def content_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames that hold an utterance of `lengths` samples: all the STFT yields for it on its own
        (NeMo's MFCC length, ceil(L / hop), leaves out the last one)."""
        return lengths // self.hop_length + 1

"""Audio loading through soundfile: WAV / FLAC / OGG, any sample format, mono, resampled to the model rate.

Every way a file can be unusable (missing, unreadable, truncated, empty, non-finite samples) raises
AudioError with the path and a one-line reason, so datasets can skip it, count it and report it.
"""

from __future__ import annotations

import errno
import functools
import io
import math
import os
import stat
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

import numpy as np
import soundfile
import torch
import torchaudio


class AudioError(Exception):
    """An audio file that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def load_audio(
    source: str | os.PathLike | BinaryIO | bytes,
    sample_rate: int = 16000,
    offset: float = 0.0,
    duration: float | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """Read `duration` seconds from `offset` (all when None) as (L,) float32 mono at `sample_rate`.

    `source` is a path, a binary file object or the file's bytes (`name` labels errors for the latter).
    """
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<audio bytes>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        check_audio_file(source)
    try:
        with soundfile.SoundFile(source) as audio_file:
            native_rate = audio_file.samplerate
            frames = _seek(audio_file, name, offset, duration)
            samples = audio_file.read(frames=frames, dtype="float32", always_2d=True)  # (L, channels)
    except AudioError:
        raise
    except READ_ERRORS as error:
        raise _unreadable(name, error) from error
    if samples.shape[0] == 0:
        raise AudioError(name, "no audio samples (empty file or slice)")
    waveform = _mono(samples, name)
    if native_rate != sample_rate:
        waveform = resampler(native_rate, sample_rate)(waveform)
    return waveform


class Resampler(Protocol):
    """What load_audio and stream_audio need from a resampler: (..., L) -> (..., ceil(L * out / in)) with
    output j at input time j * in / out, reading at most `width` input samples either side of that time."""

    kernel: torch.Tensor  # the filter coefficients it holds (for bounding its memory)
    width: int

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor: ...


# torchaudio.transforms.Resample's defaults; the bounded resampler uses the same filter.
LOWPASS_FILTER_WIDTH, ROLLOFF = 6, 0.99
# Largest exact torchaudio kernel (elements, 2 MiB as float32) we build. Its size is
# (out / gcd) x (in / gcd + 2 width): small for the usual rates (11025 Hz, the largest of them, 291,200),
# but 128 M elements and ~4.5 GB peak while building for 8001 Hz, as the rates barely share a factor.
EXACT_KERNEL_LIMIT = 1 << 19
PHASES = 512  # phase table rows of the bounded resampler; linear interpolation between adjacent rows
OUTPUT_CHUNK = 1 << 15  # outputs computed at a time by the bounded resampler (bounds its working memory)


def exact_kernel_numel(native_rate: int, sample_rate: int) -> int:
    """Elements of torchaudio.transforms.Resample(native_rate, sample_rate).kernel, without building it."""
    divisor = math.gcd(native_rate, sample_rate)
    period_in, period_out = native_rate // divisor, sample_rate // divisor
    base_freq = min(period_in, period_out) * ROLLOFF  # torchaudio's arithmetic, for the same width
    width = math.ceil(LOWPASS_FILTER_WIDTH * period_in / base_freq)
    return period_out * (2 * width + period_in)


@functools.lru_cache(maxsize=8)
def resampler(native_rate: int, sample_rate: int) -> Resampler:
    """The resampler for a rate pair, built once (building is most of the cost for short files) and shared
    by load_audio and stream_audio so both give the same samples.

    torchaudio's exact polyphase kernel when it is small (8, 11.025, 22.05, 32, 44.1, 48 kHz ...: today's
    output, bit for bit), else PhaseTableResampler, whose memory does not depend on how the rates divide.
    Each entry is at most EXACT_KERNEL_LIMIT elements (2 MiB), so the cache holds at most 16 MiB of kernels.
    """
    if exact_kernel_numel(native_rate, sample_rate) <= EXACT_KERNEL_LIMIT:
        return torchaudio.transforms.Resample(native_rate, sample_rate)
    return PhaseTableResampler(native_rate, sample_rate)


class PhaseTableResampler:
    """torchaudio's windowed-sinc resampler (Hann window, 6 zero crossings, rolloff 0.99, same cutoff) for
    rate pairs whose exact polyphase kernel would be huge.

    torchaudio precomputes one filter row per output phase: out / gcd rows (16,000 for 8001 -> 16000 Hz).
    Here the filter is tabulated at PHASES + 1 fractional offsets per input sample and linearly
    interpolated between the two nearest, so the table holds (2 width + 1) x (PHASES + 1) floats whatever
    the rates' gcd: 7,695 for 8001 Hz, 17,955 for 44101 Hz. Outputs are within ~6e-7 of the ideal filter
    evaluated in float64 (0.1-rms noise; torchaudio's exact kernels, whose phases it computes in float32,
    are 1e-6 to 5e-6 off for the usual rates and 1.4e-4 for 8001 Hz).
    The time base is exact: output j sits at input time j * native / sample_rate, split into its integer
    and fractional part in integer arithmetic, so the length and speed follow the true rate (no rounding
    of the rate to a nearby ratio) and an output depends only on its own inputs and phase. That is what
    lets stream_audio resample block-wise and get the whole file's samples bit for bit.
    Cost: gathers instead of one strided convolution, ~7 ms per second of 44101 Hz audio on one core,
    some 20-30x torchaudio's; it only runs for rates that would otherwise need hundreds of MB to GBs.
    """

    def __init__(self, native_rate: int, sample_rate: int, phases: int = PHASES) -> None:
        self.native_rate, self.sample_rate, self.phases = native_rate, sample_rate, phases
        # torchaudio's filter argument is (input time - output time) in input samples times base_freq / orig,
        # which is this scale: the cutoff relative to the input Nyquist (rolloff x the lower Nyquist).
        scale = ROLLOFF * min(1.0, sample_rate / native_rate)
        self.width = math.ceil(LOWPASS_FILTER_WIDTH / scale)  # input samples read either side (torchaudio's width)
        # kernel[k + width, p]: weight of input sample n + k for an output at time n + p / phases.
        taps = torch.arange(-self.width, self.width + 1, dtype=torch.float64)[:, None]
        offsets = torch.arange(phases + 1, dtype=torch.float64)[None, :] / phases
        t = (taps - offsets) * scale
        window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))
        kernel = torch.where(t.abs() <= LOWPASS_FILTER_WIDTH, sinc * window * scale, torch.zeros_like(t))
        self.kernel = kernel.to(torch.float32).contiguous()  # (2 width + 1, phases + 1)
        self.slope = (self.kernel[:, 1:] - self.kernel[:, :-1]).contiguous()  # per-row step to the next phase

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        """(..., L) float -> (..., ceil(L * sample_rate / native_rate)) float32, torchaudio's output length."""
        shape, length = waveform.shape[:-1], waveform.shape[-1]
        outputs = -(-length * self.sample_rate // self.native_rate)
        # Zeros beyond both ends, as torchaudio pads: input n + k is padded[n + k + width].
        flat = waveform.reshape(-1, length).to(torch.float32)
        padded = torch.nn.functional.pad(flat, (self.width, self.width + 1))
        result = torch.empty(padded.shape[0], outputs, dtype=torch.float32)
        for start in range(0, outputs, OUTPUT_CHUNK):
            index = torch.arange(start, min(start + OUTPUT_CHUNK, outputs), dtype=torch.int64)
            # Input time of output j: j * native / sample_rate = base + remainder / sample_rate, exactly.
            position = index * self.native_rate  # int64: exact far beyond any recording's length
            base = torch.div(position, self.sample_rate, rounding_mode="floor")
            phase = (position - base * self.sample_rate).to(torch.float64) * self.phases / self.sample_rate
            row = phase.floor().to(torch.int64)
            fraction = (phase - row).to(torch.float32)
            # One tap at a time: the working memory is a few vectors of OUTPUT_CHUNK, and every output is
            # computed by the same elementwise float ops in the same order wherever it falls in a chunk or
            # a call, so stream_audio's blocks equal the whole file's samples exactly.
            total = torch.zeros(padded.shape[0], index.numel())
            for tap in range(2 * self.width + 1):
                weight = self.kernel[tap][row] + self.slope[tap][row] * fraction
                total += weight * padded[:, tap:][:, base]  # input base - width + tap
            result[:, start : start + index.numel()] = total
        return result.reshape(*shape, outputs)


READ_ERRORS = (soundfile.LibsndfileError, RuntimeError, ValueError, OSError)


def check_audio_file(path: str | os.PathLike) -> None:
    """AudioError unless `path` is a regular file (or a link to one): file not found, a broken symbolic
    link (and where it points), a symbolic link loop, or not a file (a folder)."""
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            return
        reason = "not a file (a folder?)"
    except OSError as error:
        if error.errno == errno.ELOOP:
            reason = "symbolic link loop"
        elif os.path.islink(path):
            reason = f"broken symbolic link (to {os.readlink(path)})"
        else:
            reason = "file not found"
    raise AudioError(path, reason)


def _unreadable(name: str, error: Exception) -> AudioError:
    return AudioError(name, f"unreadable audio ({str(error).strip() or type(error).__name__})")


def _seek(audio_file: soundfile.SoundFile, name: str, offset: float, duration: float | None) -> int:
    """Move to `offset` seconds; returns the frames to read for `duration` (-1: to the end)."""
    start = int(round(offset * audio_file.samplerate))
    if start > audio_file.frames:
        raise AudioError(name, f"offset {offset} s is past the end ({audio_file.frames / audio_file.samplerate:.2f} s)")
    audio_file.seek(start)
    return -1 if duration is None else int(round(duration * audio_file.samplerate))


def _mono(samples: np.ndarray, name: str) -> torch.Tensor:
    """(L, channels) -> (L,) float32 channel mean, refusing NaN and infinite samples."""
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(name, "audio contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(mono))


class RollingBuffer:
    """Positions [start, end) of a stream of tensors joined along their last axis: filled on demand from
    the stream and trimmed from the left, so a loop over a long stream holds only what it still needs."""

    def __init__(self, pieces: Iterable[torch.Tensor], empty: torch.Tensor):
        self.pieces = iter(pieces)
        self.data, self.start, self.ended = empty, 0, False

    @property
    def end(self) -> int:
        return self.start + self.data.shape[-1]

    def fill_to(self, position: int) -> None:
        """Read pieces until `position` is buffered or the stream ends (then `ended` is True)."""
        while not self.ended and self.end < position:
            piece = next(self.pieces, None)
            self.ended = piece is None
            if piece is not None:
                self.data = torch.cat([self.data, piece], dim=-1)

    def slice(self, first: int, last: int) -> torch.Tensor:
        return self.data[..., first - self.start : last - self.start]

    def drop_before(self, position: int) -> None:
        position = max(position, self.start)
        self.data, self.start = self.data[..., position - self.start :], position


def stream_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    offset: float = 0.0,
    duration: float | None = None,
    block_seconds: float = 30.0,
) -> Iterator[torch.Tensor]:
    """`load_audio` for recordings too long to hold: yields (n,) float32 mono blocks at `sample_rate`
    (about `block_seconds` each) whose concatenation is load_audio's waveform, reading one block at a time.

    Resampling is done per block with enough input on each side that every output sample sees exactly
    the input the whole-file resampler gives it (the windowed-sinc kernel reads `resampler(...).width`,
    a few dozen, input samples either side). Blocks start on multiples of the rate ratio's input period
    (at most one second), so output sample phases line up with the whole file's. Errors (also ones found
    mid-file) raise AudioError like load_audio.
    """
    name = str(path)
    check_audio_file(path)
    try:
        with soundfile.SoundFile(path) as audio_file:
            native_rate = audio_file.samplerate
            remaining = _seek(audio_file, name, offset, duration)
            divisor = math.gcd(native_rate, sample_rate)
            period_in, period_out = native_rate // divisor, sample_rate // divisor  # inputs -> outputs, exactly
            block = period_in * max(1, round(block_seconds * native_rate / period_in))

            def read(frames: int) -> torch.Tensor:
                nonlocal remaining
                wanted = frames if remaining < 0 else min(frames, remaining)
                samples = audio_file.read(frames=wanted, dtype="float32", always_2d=True)
                if remaining >= 0:
                    remaining -= samples.shape[0]
                return _mono(samples, name) if samples.shape[0] else torch.zeros(0)

            if native_rate == sample_rate:
                emitted = False
                while (piece := read(block)).numel():
                    emitted = True
                    yield piece
                if not emitted:
                    raise AudioError(name, "no audio samples (empty file or slice)")
                return
            # Both resamplers (torchaudio's exact one and PhaseTableResampler) read at most `width` input
            # samples either side of an output; context is twice that, in whole input periods. Output j sits
            # at input time j * period_in / period_out in both, so a segment starting on a multiple of
            # period_in puts its outputs exactly on the whole file's output grid.
            resample = resampler(native_rate, sample_rate)
            context = period_in * math.ceil(2 * resample.width / period_in)

            def pieces() -> Iterator[torch.Tensor]:
                while (piece := read(block)).numel():
                    yield piece

            buffer = RollingBuffer(pieces(), torch.zeros(0))  # input samples; output is made for [done, ...)
            done = 0
            while not buffer.ended or done < buffer.end:
                buffer.fill_to(done + block + context)
                if buffer.end == 0:
                    raise AudioError(name, "no audio samples (empty file or slice)")
                stop = buffer.end if buffer.ended else done + block
                first = max(0, done - context)
                last = buffer.end if buffer.ended else stop + context
                resampled = resample(buffer.slice(first, last))
                begin = (done - first) // period_in * period_out
                yield resampled[begin:] if buffer.ended else resampled[begin : begin + (stop - done) // period_in * period_out]
                done = stop
                buffer.drop_before(max(0, done - context))
    except AudioError:
        raise
    except READ_ERRORS as error:
        raise _unreadable(name, error) from error


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio from the file header, without decoding."""
    check_audio_file(path)
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(path, f"unreadable audio header ({error})") from error
    return info.frames / info.samplerate

"""Audio loading through soundfile: WAV / FLAC / OGG, any sample format, mono, resampled to the model rate.

Every way a file can be unusable (missing, unreadable, truncated, empty, non-finite samples) raises
AudioError with the path and a one-line reason, so datasets can skip it, count it and report it.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise AudioError(name, "file not found")
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


@functools.lru_cache(maxsize=16)
def resampler(native_rate: int, sample_rate: int) -> torchaudio.transforms.Resample:
    """torchaudio's windowed-sinc resampler with its kernel built once per rate pair (building it is
    most of the cost for short files), shared by load_audio and stream_audio so both give the same samples."""
    return torchaudio.transforms.Resample(native_rate, sample_rate)


READ_ERRORS = (soundfile.LibsndfileError, RuntimeError, ValueError, OSError)


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
    the input the whole-file resampler gives it (torchaudio's windowed-sinc kernel is a few dozen input
    samples wide). Blocks start on multiples of the rate ratio's input period, so output sample phases
    line up with the whole file's. Errors (also ones found mid-file) raise AudioError like load_audio.
    """
    name = str(path)
    if not Path(path).is_file():
        raise AudioError(name, "file not found")
    try:
        with soundfile.SoundFile(path) as audio_file:
            native_rate = audio_file.samplerate
            remaining = _seek(audio_file, name, offset, duration)
            divisor = math.gcd(native_rate, sample_rate)
            period_in, period_out = native_rate // divisor, sample_rate // divisor  # inputs -> outputs, exactly
            block = period_in * max(1, round(block_seconds * native_rate / period_in))
            # torchaudio's resampler reads `width` input samples either side of an output (its defaults:
            # 6 zero crossings, rolloff 0.99); context is twice that, in whole input periods.
            width = math.ceil(6 * period_in / (0.99 * min(period_in, period_out)))
            context = period_in * math.ceil(2 * width / period_in)
            resample = resampler(native_rate, sample_rate)

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
            # buffer holds input samples [buffer_start, ...); output is produced for input [done, ...)
            buffer, buffer_start, done, ended = torch.zeros(0), 0, 0, False
            while not ended or done < buffer_start + buffer.numel():
                while not ended and buffer_start + buffer.numel() < done + block + context:
                    piece = read(block)
                    ended = piece.numel() == 0
                    buffer = torch.cat([buffer, piece])
                end_of_input = buffer_start + buffer.numel()
                if end_of_input == 0:
                    raise AudioError(name, "no audio samples (empty file or slice)")
                stop = end_of_input if ended else done + block
                first = max(0, done - context)
                last = end_of_input if ended else stop + context
                resampled = resample(buffer[first - buffer_start : last - buffer_start])
                begin = (done - first) // period_in * period_out
                yield resampled[begin:] if ended else resampled[begin : begin + (stop - done) // period_in * period_out]
                done = stop
                keep_from = max(0, done - context)
                buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
    except AudioError:
        raise
    except READ_ERRORS as error:
        raise _unreadable(name, error) from error


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio from the file header, without decoding."""
    if not Path(path).is_file():
        raise AudioError(path, "file not found")
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(path, f"unreadable audio header ({error})") from error
    return info.frames / info.samplerate

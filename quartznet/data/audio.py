"""Audio loading through soundfile: WAV / FLAC / OGG, any sample format, mono, resampled to the model rate.

Every way a file can be unusable (missing, unreadable, truncated, empty, non-finite samples) raises
AudioError with the path and a one-line reason, so datasets can skip it, count it and report it.
"""

from __future__ import annotations

import io
import os
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
            start = int(round(offset * native_rate))
            if start > audio_file.frames:
                raise AudioError(name, f"offset {offset} s is past the end ({audio_file.frames / native_rate:.2f} s)")
            audio_file.seek(start)
            frames = -1 if duration is None else int(round(duration * native_rate))
            samples = audio_file.read(frames=frames, dtype="float32", always_2d=True)  # (L, channels)
    except AudioError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError) as error:
        raise AudioError(name, f"unreadable audio ({str(error).strip() or type(error).__name__})") from error
    if samples.shape[0] == 0:
        raise AudioError(name, "no audio samples (empty file or slice)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(name, "audio contains NaN or infinite samples")
    waveform = torch.from_numpy(np.ascontiguousarray(mono))
    if native_rate != sample_rate:
        waveform = torchaudio.functional.resample(waveform, native_rate, sample_rate)
    return waveform


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio from the file header, without decoding."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(path, f"unreadable audio header ({error})") from error
    return info.frames / info.samplerate

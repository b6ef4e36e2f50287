"""From an Utterance to its audio file, and the background noises of the keyword corpus.

The engine's samples are resampled to 16 kHz and scaled to the utterance's peak; an ASR sentence gets
its pauses, a keyword its place in a 1 s clip; seeded white noise goes under both, and the file is
written as 16-bit FLAC or WAV, renamed into place only when complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from data_prep.common import progress
from data_prep.engines import ESPEAK_RATE, Utterance, speak, synthesise

SAMPLE_RATE = 16000  # of every file the corpora hold


def finish(samples: np.ndarray, utterance: Utterance, rate: int = ESPEAK_RATE) -> np.ndarray:
    """Resample from `rate` to 16 kHz and scale to the utterance's peak level."""
    audio = torchaudio.functional.resample(torch.from_numpy(samples), rate, SAMPLE_RATE).numpy()
    return audio * (utterance.peak / max(float(np.abs(audio).max()), 1e-6))


def add_noise(audio: np.ndarray, utterance: Utterance, reference: np.ndarray) -> np.ndarray:
    """White noise `snr_db` below the RMS of `reference` (the speech), seeded per utterance; none at snr_db=inf."""
    rms = float(np.sqrt(np.mean(reference**2))) if reference.size else 0.0
    noise = np.random.default_rng(utterance.noise_seed).standard_normal(audio.shape[0]).astype(np.float32)
    return np.clip(audio + noise * rms * 10 ** (-utterance.snr_db / 20), -1.0, 1.0)


def trim_silence(samples: np.ndarray, margin: int = 400) -> np.ndarray:
    """Cut espeak-ng's leading and trailing silence (below 2% of the peak), keeping `margin` samples."""
    loud = np.flatnonzero(np.abs(samples) > 0.02 * np.abs(samples).max())
    if loud.size == 0:
        return samples
    return samples[max(loud[0] - margin, 0) : loud[-1] + margin]


def write_audio(path: Path, audio: np.ndarray, file_format: str) -> None:
    """16-bit audio, renamed into place only when complete (a rerun trusts any file it finds)."""
    partial = path.with_name(path.name + ".partial")
    soundfile.write(str(partial), audio, SAMPLE_RATE, subtype="PCM_16", format=file_format)
    partial.replace(path)


def render_sentence(utterance: Utterance) -> None:
    """The sentence between its leading and trailing pauses, over the utterance's noise floor."""
    samples, rate = speak(utterance)
    speech = finish(samples, utterance, rate)
    pauses = [np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
              for seconds in (utterance.leading_pause, utterance.trailing_pause)]
    audio = np.concatenate([pauses[0], speech, pauses[1]])
    write_audio(Path(utterance.path), add_noise(audio, utterance, speech), "FLAC")


def render_keyword(utterance: Utterance) -> None:
    """One word placed at the utterance's offset in exactly 1 s of audio.

    A few slow variants overrun 1 s at low rates; they are said faster rather than cut off.
    """
    speech = trim_silence(synthesise(utterance))
    while speech.shape[0] > ESPEAK_RATE and utterance.rate < 450:
        utterance = replace(utterance, rate=round(utterance.rate * 1.25))
        speech = trim_silence(synthesise(utterance))
    word = finish(speech, utterance)[:SAMPLE_RATE]
    clip = np.zeros(SAMPLE_RATE, dtype=np.float32)
    start = round(utterance.clip_offset * (SAMPLE_RATE - word.shape[0]))
    clip[start : start + word.shape[0]] = word
    write_audio(Path(utterance.path), add_noise(clip, utterance, word), "WAV")


def render_all(render: Callable[[Utterance], None], utterances: Sequence[Utterance], jobs: int, desc: str) -> None:
    """Render the utterances whose file does not exist yet.

    Threads suffice to use every core: the synthesis runs in espeak-ng child processes, and numpy,
    torch and libsndfile release the GIL; each call depends only on its Utterance, so the order
    of completion cannot change the output.
    """
    missing = [utterance for utterance in utterances if not Path(utterance.path).exists()]
    for utterance in missing:
        Path(utterance.path).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for _ in progress(pool.map(render, missing), total=len(missing), desc=desc, unit="utt"):
            pass


def coloured_noise(rng: np.random.Generator, kind: str, length: int) -> np.ndarray:
    """White, pink (1/f power), brown (1/f^2) noise or mains hum, peak 0.5."""
    if kind == "hum":
        t = np.arange(length) / SAMPLE_RATE
        signal = sum(np.sin(2 * np.pi * 50 * h * t) / h for h in (1, 2, 3, 5)) + 0.05 * rng.standard_normal(length)
    else:
        spectrum = np.fft.rfft(rng.standard_normal(length))
        frequency = np.maximum(np.fft.rfftfreq(length, 1 / SAMPLE_RATE), 20.0)  # no boost below 20 Hz
        spectrum *= {"white": 1.0, "pink": frequency**-0.5, "brown": frequency**-1.0}[kind]
        signal = np.fft.irfft(spectrum, length)
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)

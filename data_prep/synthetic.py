"""The embedded default data: synthesised speech, so the project runs end to end offline.

  asr  an ASR corpus in LibriSpeech layout (LibriSpeech/{train,dev,test}/<speaker>/<chapter>/...flac
       and .trans.txt), then manifests {train,dev,test}.json through data_prep.librispeech.
       Sentences are random sequences of 2-6 words (--min-words, --max-words) from
       data_prep/wordlist.txt; every sentence is used once, so dev and test sentences never occur in train.
  kws  a Speech Commands-like corpus in the official layout (<word>/<speaker>_nohash_<n>.wav, 1 s at
       16 kHz) with all 35 v2 keywords, a few other words, _background_noise_/ and
       validation_list.txt / testing_list.txt, then manifests through data_prep.speech_commands
       (v2_*.json for the 35 words, subset12_*.json for the 12-class task).

A speaker is an espeak-ng English voice (accent) with a voice variant. The variants are split by seed
into train / dev / test groups, so dev and test speakers are voices the train set never heard. Each
utterance gets its own speaking rate, pitch, volume and a little white noise, is resampled from
espeak-ng's 22050 Hz to 16 kHz mono and saved as 16-bit FLAC (asr) or WAV (kws). ASR sentences also get
pauses of their own length before and after, over a noise floor that varies down to digital silence.

The ASR corpus can also mix in voices made from recordings of real people (`--engines
espeak,flite,festival`): flite's kal, kal16, awb, rms and slt, and festival's kal_diphone, ked_diphone
and cmu_us_slt_arctic_hts (Debian: flite, festival, festvox-kallpc16k, festvox-kdlpc16k,
festvox-us-slt-hts). Their speakers are the recorded people: one person is held out for dev and one for
test from every engine at once (flite's slt and festival's slt are the same woman), and each split draws
its utterances evenly from the engines that have voices in it. `accented` adds four more people: the
speakers of festival's Italian and Finnish voices (festvox-italp16k, festvox-itapc16k, festvox-suopuhe-lj,
festvox-suopuhe-mv) reading English with their accent, through festival's English front end
(data_prep/accents.py). The default, espeak-ng alone, makes the same corpus as before the option existed.

`--vocabulary N` draws the sentences from the N most frequent words of festival's Wall Street Journal
lexicon (Debian: festlex-poslex) instead of the built-in 270-word list, weighted by the square root
of their frequency: a model trained on it has to spell words, not recognise a closed set.
`--numbers F` puts a spoken number into a fraction F of the sentences, at a random place: a digit
string ("two nine three four zero") or an amount ("three hundred forty two"). The WSJ text behind the
lexicon writes numbers as digits, so its list barely has number words ("ten" ranks 4,951st, "twenty"
is missing), while people say numbers all the time.
`--word-order pos-trigram` (with `--vocabulary`) puts the words in the order of English: a sequence of
part-of-speech tags from festival's tag trigram of the same WSJ text, each tag spoken by a word of the
vocabulary ("the systems of many written sales"), so function words come as often as in text and the
synthesisers phrase the sentence as English; the default, random, draws every word on its own.

Output depends only on the settings, the seed and the engine versions (recorded in <out>/corpus.json):
the same command gives the same bytes. Work runs on all cores, and a rerun only makes what is missing.

    python -m data_prep.synthetic asr --out data/synthetic_asr
    python -m data_prep.synthetic asr --out data/mixed_asr --engines espeak,flite,festival
    python -m data_prep.synthetic asr --out data/voices_asr --engines espeak,flite,festival --vocabulary 5000 \
        --numbers 0.25
    python -m data_prep.synthetic kws --out data/synthetic_kws --seed 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
import torch
import torchaudio

from data_prep import accents, librispeech, speech_commands
from data_prep.common import (
    PrepError,
    parse_args_with_debug,
    prep_errors,
    progress,
    run_main,
)
from quartznet.common.cli import at_least, fraction

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
WORDLIST = Path(__file__).with_name("wordlist.txt")
# Festival's part-of-speech lexicon from the Wall Street Journal (Debian: festlex-poslex, installed with
# festival's English voices): a word list with frequencies, for corpora with a broad vocabulary.
WSJ_LEXICON = Path("/usr/share/festival/dicts/wsj.wp39.poslexR")
# Its companion, festival's part-of-speech trigram of the same text (the tagger's model): counts of tag
# triples, which give sentences the word order of English (`--word-order pos-trigram`).
WSJ_POS_TRIGRAM = Path("/usr/share/festival/dicts/wsj.wp39.tri.ngrambin")
RANDOM_ORDER, TAG_ORDER = "random", "pos-trigram"  # the values of --word-order
WORD_ORDERS = (RANDOM_ORDER, TAG_ORDER)
CORPUS_FILE = "corpus.json"

# English voices (accents) of espeak-ng, see `espeak-ng --voices=en`; the mbrola ones need extra packages.
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# The ASR corpus defaults to one accent: every accent says the same spelling with other sounds, and
# the CPU demo must learn the corpus in minutes. All accents: `--accents all`.
ASR_ACCENTS = ("en-us",)
# Voice variants (`espeak-ng --voices=variant`, by file name) that sound like a person speaking. Left
# out: the whispers, effect voices (Demonic, announcer), "fast" (a speed test), "Mr serious" (a space
# in its file name), the robot voices (robosoft*, UniRobot, anikaRobot), the Klatt-synthesiser family
# (klatt*, another synthesis method), croak and Tweaky, and RicishayMax*, kaukovalta and Marco: a model
# trained on the others transcribed these at 88-101% WER against 23-33% for the rest (measured on a
# held-out set), i.e. they are voice effects more than voices.
VARIANTS = (
    "Alex Alicia Andrea Andy Annie AnxiousAndy Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee Mario Michael "
    "Mike Nguyen Storm adam anika antonio aunty belinda benjamin boris caleb david ed edward edward2 f1 f2 f3 "
    "f4 f5 grandma grandpa gustave iven iven2 iven3 iven4 john linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo max michel "
    "miguel norbert pablo paul pedro quincy rob robert sandro shelby steph steph2 steph3 travis victor zac"
).split()
HELD_OUT_VARIANTS = 10  # variants per held-out group (dev, test); the rest are train voices
# Words of the kws corpus that are not keywords: the "unknown" class of the 12-class task draws on them too.
KWS_OTHER_WORDS = ("apple", "water", "paper", "garden", "music", "window", "yellow", "coffee")
NOISE_SECONDS = 30
# Pauses around each ASR sentence and its noise floor. Real recordings start and end with pauses of
# varying length, some over a digital-silence floor; a model that only ever heard speech from the first
# frame invents letters in such a pause. Pauses are u**3 * max seconds (mostly short, a fifth of the
# leading ones over 0.5 s: the mean adds ~0.4 s to a ~1.7 s sentence, which the demo's CPU budget
# affords); CLEAN_FRACTION of the sentences get no noise at all, the others white noise at ASR_SNR_DB.
MAX_LEADING_PAUSE = 1.0
MAX_TRAILING_PAUSE = 0.5
CLEAN_FRACTION = 0.1
ASR_SNR_DB = (20.0, 50.0)


# --------------------------------------------------------------------------------------------- espeak-ng


def espeak_version() -> str:
    """The installed espeak-ng version; PrepError with the install command when it is missing."""
    if shutil.which("espeak-ng") is None:
        raise PrepError(
            "espeak-ng is not installed (not found on PATH); the synthetic corpora are made with it. Install it with "
            "`sudo apt-get install espeak-ng` (or `make espeak`) and rerun"
        )
    output = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", output)
    return match.group(1) if match else output.strip()


def available_speakers(accents: Sequence[str] = VOICES) -> tuple[list[str], list[str]]:
    """(voices, variants) of `accents` / VARIANTS that this espeak-ng has: it silently falls back on unknown ones."""
    voices_listing = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    languages = {line.split()[1] for line in voices_listing.splitlines()[1:] if len(line.split()) > 1}
    variant_listing = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    files = set(re.findall(r"!v/(\S+)", variant_listing))
    unknown = sorted(set(accents) - set(VOICES))
    if unknown:
        raise PrepError(f"unknown accents {unknown}; choose from {', '.join(VOICES)}")
    voices = [voice for voice in accents if voice in languages]
    variants = [variant for variant in VARIANTS if variant in files]
    if not voices or len(variants) < 2 * HELD_OUT_VARIANTS + 1:
        raise PrepError(
            f"espeak-ng lacks the English voices/variants this corpus uses (found {len(voices)} voices, "
            f"{len(variants)} variants); install a recent espeak-ng (`sudo apt-get install espeak-ng`)"
        )
    return voices, variants


def speaker_groups(seed: int, voices: Sequence[str], variants: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """(voice, variant) speakers of the train / dev / test groups; the groups share no variant."""
    shuffled = list(variants)
    random.Random(f"{seed}-variants").shuffle(shuffled)
    groups = {
        "test": shuffled[:HELD_OUT_VARIANTS],
        "dev": shuffled[HELD_OUT_VARIANTS : 2 * HELD_OUT_VARIANTS],
        "train": shuffled[2 * HELD_OUT_VARIANTS :],
    }
    return {
        group: [(voice, variant) for variant in sorted(names) for voice in voices] for group, names in groups.items()
    }


@dataclass(frozen=True)
class Utterance:
    """Everything that determines one audio file; rendering it is a pure function of these fields."""

    path: str
    text: str
    voice: str
    variant: str
    rate: int  # words per minute
    pitch: int  # espeak-ng 0..99
    peak: float  # peak level after normalisation
    snr_db: float  # white noise below the speech RMS
    noise_seed: int
    clip_offset: float = 0.0  # kws only: where the word starts in its 1 s clip, as a fraction of the free room
    leading_pause: float = 0.0  # asr only: seconds of noise floor before and after the sentence
    trailing_pause: float = 0.0
    engine: str = "espeak"  # one of ENGINE_NAMES


def synthesise(utterance: Utterance) -> np.ndarray:
    """espeak-ng's float32 samples at 22050 Hz for the utterance's text, voice, rate and pitch."""
    voice = f"{utterance.voice}+{utterance.variant}"
    # Amplitude 50 (of 200) keeps the loud variants from clipping; levels are normalised afterwards.
    command = ["espeak-ng", "--stdout", "-v", voice, "-s", str(utterance.rate), "-p", str(utterance.pitch), "-a", "50"]
    command.append(utterance.text)
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise PrepError(
            f"espeak-ng failed for {utterance.path} ({' '.join(command)}): {result.stderr.decode().strip()}"
        )
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    if rate != ESPEAK_RATE:
        raise PrepError(f"espeak-ng wrote {rate} Hz audio, expected {ESPEAK_RATE} Hz")
    return samples


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


def random_prosody(rng: random.Random, rates: tuple[int, int]) -> dict:
    return {
        "rate": rng.randint(*rates),
        "pitch": rng.randint(20, 80),
        "peak": round(rng.uniform(0.3, 0.9), 4),
        "snr_db": round(rng.uniform(20.0, 40.0), 2),
        "noise_seed": rng.getrandbits(32),
    }


def claim_output(out: Path, description: dict) -> None:
    """Record the settings in <out>/corpus.json, refusing a folder that holds a corpus made otherwise.

    This is what makes resuming safe: files found on disk were made with exactly these settings.
    """
    out.mkdir(parents=True, exist_ok=True)
    record = out / CORPUS_FILE
    text = json.dumps(description, indent=1, sort_keys=True) + "\n"
    if record.exists() and record.read_text(encoding="utf-8") != text:
        raise PrepError(
            f"{out} holds a corpus made with other settings (or other synthesiser versions), see {record}; "
            "use a new --out or delete that folder"
        )
    partial = record.with_name(record.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(record)


# --------------------------------------------------------------------------------------------- recorded voices
# espeak-ng is a formant synthesiser: its voices are rules, none of them a person, and a model trained on
# them alone fails on people. flite and festival voices are made from recordings of real speakers.

ENGINE_NAMES = ("espeak", "flite", "festival", "accented")  # the canonical order: corpora record engines in it
DEFAULT_ENGINES = ("espeak",)
# Recorded people per held-out group (dev, test). There are only five people behind all the English
# recorded voices (nine with the accented ones), so each held-out group gets one and training keeps the rest.
HELD_OUT_PERSONS = 1
# Rate and pitch are drawn on espeak-ng's scales (words per minute, 0..99) for every utterance. A recorded
# voice keeps its own pace and pitch, so the draws become changes relative to them: REFERENCE_RATE (the
# middle of the ASR range, 130-200) is the voice's own pace, and PITCH_SPAN pitch steps make an octave,
# so the drawn 20..80 moves a voice by up to 0.2 octave (2.4 semitones) either way.
REFERENCE_RATE = 165
PITCH_SPAN = 150
# Pitch moves by reading the samples as if recorded at a shifted rate; rounding that rate to a multiple
# of RATE_STEP Hz keeps torchaudio's resampling kernel small (its size follows rate / gcd(rate, 16000)).
RATE_STEP = 100


class Speaker(NamedTuple):
    """One voice of a corpus. `person` is who it sounds like: held-out groups never share a person."""

    engine: str
    voice: str
    variant: str  # espeak-ng's voice variant; "" for recorded voices
    person: str


class RecordedEngine:
    """A synthesiser whose voices are made from recordings of people; subclasses say how to run it."""

    name: str
    program: str  # the executable that synthesises
    packages: tuple[str, ...]  # Debian packages that bring the program and its voices
    voices: dict[str, str]  # voice -> the person recorded for it, in the order speakers are listed

    def require(self) -> None:
        if shutil.which(self.program) is None:
            raise PrepError(
                f"{self.name} is not installed (`{self.program}` not found on PATH); install it with "
                f"`sudo apt-get install {' '.join(self.packages)}` (or `make speech-tools`) and rerun"
            )

    def version(self) -> str:
        raise NotImplementedError

    def installed_voices(self) -> set[str]:
        raise NotImplementedError

    def command(self, voice: str, text: str, stretch: float, wav: Path) -> tuple[list[str], bytes | None]:
        """The command line (and its standard input) that writes `text` in `voice` to `wav`, `stretch` times slower."""
        raise NotImplementedError

    def speakers(self) -> list[Speaker]:
        """This engine's voices that are installed; an engine without any is an error naming its packages."""
        self.require()
        installed = self.installed_voices()
        voices = [voice for voice in self.voices if voice in installed]
        if not voices:
            raise PrepError(
                f"{self.name} has none of the voices {', '.join(self.voices)}; install them with "
                f"`sudo apt-get install {' '.join(self.packages)}` (or `make speech-tools`)"
            )
        return [Speaker(self.name, voice, "", self.voices[voice]) for voice in voices]

    def synthesise(self, utterance: Utterance) -> tuple[np.ndarray, int]:
        """Mono float32 samples and the rate to read them at: the native rate times the pitch shift.

        Reading samples faster raises pitch and formants together, like a smaller speaker, and shortens
        them by the same factor; the engine is asked for speech that much slower to keep the drawn pace.
        """
        shift = 2 ** ((utterance.pitch - 50) / PITCH_SPAN)
        stretch = REFERENCE_RATE / utterance.rate * shift
        with tempfile.TemporaryDirectory(prefix=f"synthetic-{self.name}-") as folder:
            wav = Path(folder) / "speech.wav"
            try:
                self.render(utterance.voice, utterance.text, stretch, wav)
            except PrepError as error:
                raise PrepError(f"{self.name} failed for {utterance.path}: {error}") from None
            if not wav.is_file() or wav.stat().st_size <= 44:
                raise PrepError(
                    f"{self.name} wrote no audio for {utterance.path} ({utterance.voice}: {utterance.text!r})"
                )
            samples, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
        return samples.mean(axis=1), max(RATE_STEP, round(rate * shift / RATE_STEP) * RATE_STEP)

    def render(self, voice: str, text: str, stretch: float, wav: Path) -> None:
        """Write `text` in `voice` to `wav`, `stretch` times slower; PrepError with the engine's message if it fails."""
        command, stdin = self.command(voice, text, stretch, wav)
        result = subprocess.run(command, input=stdin, capture_output=True, check=False)
        # festival reports Scheme errors on stderr but still exits with 0
        if result.returncode != 0 or b"ERROR" in result.stderr:
            raise PrepError(f"({' '.join(command)}): {result.stderr.decode(errors='replace').strip()}")

    def close(self) -> None:
        """Stop any synthesiser processes kept between utterances."""


def scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalSession:
    """One `festival --pipe` process that speaks utterance after utterance.

    Starting festival and loading a voice takes ~0.5 s on a 2-core host, speaking a sentence ~0.05-0.1 s,
    so a worker thread can keep one process instead of starting `text2wave` per utterance. For the HTS
    voice the audio is byte for byte text2wave's: the same `tts_file` over the text in a file, every
    setting applied again before each utterance, and each of the text's utterances saved as RIFF in turn.
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace",
        )
        self.requests = 0

    def speak(self, settings: str, text: str, wav: Path) -> None:
        """`text` after the Scheme `settings`, into `wav`; PrepError with festival's messages if it fails."""
        text_file = wav.with_name(wav.name + ".txt")
        text_file.write_text(text, encoding="utf-8")
        parts = wav.with_name(wav.name + ".part")
        # tts_file splits the text into utterances and runs the hooks on each: every one is saved to its own
        # numbered file, joined below (text2wave appends their samples to one file).
        save = (f"(lambda (utt) (begin (utt.save.wave utt (format nil \"%s%d\" {scheme_string(str(parts))} "
                f"quartznet-parts) 'riff) (set! quartznet-parts (+ quartznet-parts 1))))")
        messages = self.run(f"{settings} (set! quartznet-parts 0) (set! tts_hooks (list utt.synth {save}))"
                            f" (tts_file {scheme_string(str(text_file))} nil)")
        # festival reports Scheme errors on stderr but goes on reading
        if any("ERROR" in message for message in messages):
            raise PrepError(f"(festival: {settings}): {' '.join(messages)[-2000:]}")
        text_file.unlink()
        files = sorted(wav.parent.glob(parts.name + "*"), key=lambda path: int(path.name[len(parts.name):]))
        if len(files) == 1:
            files[0].replace(wav)
        elif files:
            pieces = [soundfile.read(str(path), dtype="int16") for path in files]
            soundfile.write(str(wav), np.concatenate([samples for samples, _ in pieces]), pieces[0][1], subtype="PCM_16")
            for path in files:
                path.unlink()

    def run(self, script: str) -> list[str]:
        """Evaluate `script`; the lines festival wrote to stderr meanwhile. PrepError if festival has exited."""
        self.requests += 1
        marker = f"quartznet-done-{self.requests}"
        try:
            self.process.stdin.write(f'{script}\n(format stderr "%s\\n" "{marker}")\n')
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # reported below, with what festival said
        messages = []
        while line := self.process.stderr.readline():
            if line.strip() == marker:
                return messages
            messages.append(line.strip())
        raise PrepError(f"festival exited with status {self.process.wait()}: {' '.join(messages)[-2000:]}")

    def close(self) -> None:
        try:
            self.process.stdin.close()  # festival --pipe exits at the end of its input
        except BrokenPipeError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Flite(RecordedEngine):
    name, program, packages = "flite", "flite", ("flite",)
    # awb_time only speaks the time of day; kal and kal16 are the same man at 8 and 16 kHz.
    voices = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}

    def version(self) -> str:
        self.require()
        # flite prints its version and then exits with status 1
        output = subprocess.run(["flite", "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"version:\s*(\S+)", output)
        return match.group(1) if match else output.strip()

    def installed_voices(self) -> set[str]:
        # flite falls back on kal for an unknown -voice without a word, so voices are checked here first.
        output = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout
        return set(output.partition(":")[2].split())

    def command(self, voice: str, text: str, stretch: float, wav: Path) -> tuple[list[str], bytes | None]:
        return ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.4f}", "-t", text, "-o", str(wav)], None


class Festival(RecordedEngine):
    name, program = "festival", "text2wave"
    packages = ("festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
    # kal_diphone is flite's kal again and cmu_us_slt_arctic_hts flite's slt: the same recorded people.
    voices = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}

    def version(self) -> str:
        self.require()
        output = subprocess.run(["festival", "--version"], capture_output=True, text=True, check=True).stdout
        match = re.search(r"System:\s*([\w.]+)", output)
        return match.group(1) if match else output.strip()

    def installed_voices(self) -> set[str]:
        listing = subprocess.run(
            ["festival", "--pipe"], input="(print (voice.list))\n", capture_output=True, text=True, check=True
        ).stdout
        return set(re.findall(r"[\w-]+", listing))

    def __init__(self) -> None:
        self._local = threading.local()  # each worker thread's FestivalSession, for HTS voices
        self._sessions: list[FestivalSession] = []
        self._lock = threading.Lock()

    @staticmethod
    def settings(voice: str, stretch: float) -> str:
        """Scheme that selects `voice` at `stretch` times its own duration, whatever was set before it."""
        settings = f"(voice_{voice}) (Parameter.set 'Duration_Stretch {stretch:.4f})"
        if voice.endswith("_hts"):  # HTS voices ignore Duration_Stretch; hts_engine's -r is a speed (1/stretch)
            # Selecting the voice resets its engine parameters, so the speed is not added to the last one's.
            settings += f' (set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / stretch:.4f}))))'
        return settings

    def command(self, voice: str, text: str, stretch: float, wav: Path) -> tuple[list[str], bytes | None]:
        return ["text2wave", "-eval", f"(begin {self.settings(voice, stretch)})", "-o", str(wav)], text.encode()

    def render(self, voice: str, text: str, stretch: float, wav: Path) -> None:
        # A diphone voice's last few milliseconds depend on what the process spoke before (10 of the 667
        # diphone utterances of the recipe's corpus came out different), an HTS voice's do not: diphone voices
        # get a fresh text2wave each, HTS voices one festival process per worker thread.
        if not voice.endswith("_hts"):
            super().render(voice, text, stretch, wav)
            return
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = FestivalSession()
            with self._lock:
                self._sessions.append(session)
        try:
            session.speak(self.settings(voice, stretch), text, wav)
        except PrepError:
            self._local.session = None  # a fresh process for the next utterance, whatever state this one is in
            with self._lock:
                self._sessions.remove(session)
            session.close()
            raise

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()


class AccentedFestival(Festival):
    """English read by the people behind festival's Italian and Finnish voices (data_prep/accents.py):
    four more recorded persons, each with an accent."""

    name, program = "accented", "festival"
    packages = ("festival", "festvox-kallpc16k", "festvox-italp16k", "festvox-itapc16k", "festvox-suopuhe-lj",
                "festvox-suopuhe-mv")
    voices = {voice: accent.person for voice, accent in accents.VOICES.items()}

    def installed_voices(self) -> set[str]:
        installed = super().installed_voices()
        if accents.FRONT_END_VOICE not in installed:
            raise PrepError(
                f"{self.name} reads English through festival's {accents.FRONT_END_VOICE} voice, which is not "
                "installed; install it with `sudo apt-get install festvox-kallpc16k` (or `make speech-tools`)"
            )
        return installed

    def render(self, voice: str, text: str, stretch: float, wav: Path) -> None:
        try:
            accents.speak_with_accent(voice, text, stretch, wav)
        except accents.FestivalError as error:
            raise PrepError(f"festival ({voice}): {error}") from None


RECORDED_ENGINES: dict[str, RecordedEngine] = {"flite": Flite(), "festival": Festival(), "accented": AccentedFestival()}


def speak(utterance: Utterance) -> tuple[np.ndarray, int]:
    """The utterance's samples from its engine, with the rate to read them at."""
    if utterance.engine == "espeak":
        return synthesise(utterance), ESPEAK_RATE
    return RECORDED_ENGINES[utterance.engine].synthesise(utterance)


def canonical_engines(engines: Sequence[str]) -> tuple[str, ...]:
    """`engines` checked and in ENGINE_NAMES order, so the same set always makes the same corpus."""
    unknown = sorted(set(engines) - set(ENGINE_NAMES))
    if unknown or not engines:
        raise PrepError(f"unknown engines {unknown}; choose from {', '.join(ENGINE_NAMES)}")
    return tuple(name for name in ENGINE_NAMES if name in engines)


def engine_versions(engines: Sequence[str]) -> dict[str, str]:
    """corpus.json's version entries; each engine's check names its install command when it is missing."""
    versions = {"espeak_ng": espeak_version()} if "espeak" in engines else {}
    return versions | {name: RECORDED_ENGINES[name].version() for name in engines if name in RECORDED_ENGINES}


def person_groups(seed: int, speakers: Sequence[Speaker]) -> dict[str, list[Speaker]]:
    """Recorded speakers of the train / dev / test groups, split by person across all engines at once."""
    persons = sorted({speaker.person for speaker in speakers})
    if len(persons) < 2 * HELD_OUT_PERSONS + 1:
        raise PrepError(
            f"the recorded voices installed are only {len(persons)} people ({', '.join(persons)}); held-out dev "
            f"and test need {2 * HELD_OUT_PERSONS + 1}: install more voices (`make speech-tools`) or add an engine"
        )
    random.Random(f"{seed}-persons").shuffle(persons)
    held = {
        "test": persons[:HELD_OUT_PERSONS],
        "dev": persons[HELD_OUT_PERSONS : 2 * HELD_OUT_PERSONS],
        "train": persons[2 * HELD_OUT_PERSONS :],
    }
    return {group: [s for s in speakers if s.person in names] for group, names in held.items()}


def engine_groups(seed: int, accents: Sequence[str], engines: Sequence[str]) -> dict[str, list[Speaker]]:
    """The speakers of every ASR split: espeak-ng's variants and the recorded people are held out separately.

    One pool would rarely put any of the five recorded people in dev or test beside 70 espeak-ng
    variants; separate quotas make every held-out split hear a person no training voice was made from.
    """
    groups: dict[str, list[Speaker]] = {split: [] for split in ASR_SPLITS}
    if "espeak" in engines:
        voices, variants = available_speakers(accents)
        for split, pairs in speaker_groups(seed, voices, variants).items():
            groups[split] += [Speaker("espeak", voice, variant, variant) for voice, variant in pairs]
    recorded = [
        speaker for name in engines if name in RECORDED_ENGINES for speaker in RECORDED_ENGINES[name].speakers()
    ]
    if recorded:
        for split, speakers in person_groups(seed, recorded).items():
            groups[split] += speakers
    return groups


def pick_speaker(rng: random.Random, group: Sequence[Speaker], engines: Sequence[str]) -> Speaker:
    """A speaker of the group. Mixed corpora first pick an engine evenly, or espeak-ng's ~50 training
    voices would drown the handful of recorded ones; an espeak-only corpus draws as it always did."""
    if tuple(engines) == DEFAULT_ENGINES:
        return rng.choice(group)
    engine = rng.choice([name for name in engines if any(s.engine == name for s in group)])
    return rng.choice([speaker for speaker in group if speaker.engine == engine])


def speaker_record(speaker: Speaker, split: str, engines: Sequence[str]) -> dict[str, str]:
    """corpus.json's entry for a speaker; espeak-only corpora keep their original entries."""
    record = {"voice": speaker.voice, "variant": speaker.variant, "split": split}
    if tuple(engines) != DEFAULT_ENGINES:
        record |= {"engine": speaker.engine, "person": speaker.person}
    return record


# --------------------------------------------------------------------------------------------- ASR corpus

ASR_SPLITS = ("train", "dev", "test")
CHAPTERS = {"train": 1, "dev": 2, "test": 3}  # one chapter per speaker and split


def load_words(path: Path = WORDLIST) -> list[str]:
    words = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    bad = [word for word in words if not re.fullmatch(r"[a-z']+", word)]
    if bad or len(set(words)) != len(words):
        raise PrepError(f"{path}: words must be unique and in lowercase a-z and apostrophe only (bad: {bad[:5]})")
    return words


_LEXICON_ENTRY = re.compile(r'^\("(?P<word>[^"]*)" \((?P<tags>.*)\) \(\) \)$')
_LEXICON_TAG = re.compile(r"\((?P<tag>\S+) (?P<log_p>-?[\d.]+)\)")


def lexicon_entries(path: Path = WSJ_LEXICON) -> list[tuple[str, list[tuple[str, float]]]]:
    """Festival's WSJ lexicon as (word, [(part-of-speech tag, ln P(word | tag)), ...]), numeric tags left out."""
    if not path.is_file():
        raise PrepError(
            f"{path} not found: --vocabulary needs festival's WSJ lexicon; install it with "
            "`sudo apt-get install festlex-poslex` (or `make speech-tools`) and rerun"
        )
    entries = []
    for line in path.read_text(encoding="latin-1").splitlines():
        match = _LEXICON_ENTRY.match(line.strip())
        if match:
            tags = [(tag["tag"], float(tag["log_p"])) for tag in _LEXICON_TAG.finditer(match["tags"])]
            entries.append((match["word"], [(tag, log_p) for tag, log_p in tags if tag.isalpha()]))
    return entries


def lexicon_vocabulary(size: int, path: Path = WSJ_LEXICON) -> tuple[list[str], list[float]]:
    """The `size` most frequent lowercase words (a-z, apostrophe) of festival's WSJ lexicon, and weights to
    draw them with: the square root of their frequency (common words come up often, rare ones still do).

    Each entry lists ln P(word | tag) per part-of-speech tag. A tag's rarest word was seen once, so
    count(tag) = 1 / min P(word | tag), and a word's count is the sum of P(word | tag) * count(tag) over
    its tags (they come out as integers to within 0.05 for 98% of the entries). Tags with a single word
    ("of", existential "there") have no rarest word; their words get the most frequent word's count.
    Capitalised entries (names), tokens with other characters, WSJ's negation token "n't" and entries
    under numeric pseudo-tags are left out.
    """
    entries = lexicon_entries(path)
    rarest: dict[str, float] = {}
    sizes: dict[str, int] = defaultdict(int)
    for _, tags in entries:
        for tag, log_p in tags:
            rarest[tag] = min(rarest.get(tag, 0.0), log_p)
            sizes[tag] += 1
    counts: dict[str, float] = defaultdict(float)
    single: set[str] = set()
    for word, tags in entries:
        for tag, log_p in tags:
            if sizes[tag] == 1:
                single.add(word)
            else:
                counts[word] += np.exp(log_p - rarest[tag])
    for word in single:
        counts[word] = max(counts.values())
    usable = (word for word in counts if re.fullmatch(r"[a-z]+('[a-z]+)?", word) and word != "n't")
    ranked = sorted(usable, key=lambda w: (-counts[w], w))
    if len(ranked) < size:
        raise PrepError(f"{path}: only {len(ranked)} usable words, asked for --vocabulary {size}")
    words = ranked[:size]
    return words, [float(np.sqrt(counts[word])) for word in words]


def unique_sentences(
    rng: random.Random, words: Sequence[str], count: int, min_words: int, max_words: int,
    weights: Sequence[float] | None = None,
) -> list[str]:
    """`count` distinct sentences of min_words-max_words words drawn from `words` (uniformly, or by `weights`)."""

    def draw() -> str:
        length = rng.randint(min_words, max_words)
        if weights is None:  # the built-in list's draws, unchanged: existing corpora stay byte-identical
            return " ".join(rng.choice(words) for _ in range(length))
        return " ".join(rng.choices(words, weights, k=length))

    return distinct(draw, count, count * 20, f"{min_words}-{max_words} words from {len(words)} words")


def distinct(draw: Callable[[], str | None], count: int, attempts: int, what: str) -> list[str]:
    """The first `count` distinct sentences of up to `attempts` draws (None: a draw that gave none)."""
    sentences: dict[str, None] = {}  # insertion-ordered set
    for _ in range(attempts):
        sentence = draw()
        if sentence is not None:
            sentences[sentence] = None
            if len(sentences) == count:
                return list(sentences)
    raise PrepError(f"cannot make {count} distinct sentences of {what}")


def pos_trigram(path: Path = WSJ_POS_TRIGRAM) -> tuple[list[str], np.ndarray]:
    """Festival's tag trigram: (tags, counts) with counts[a, b, c] the (smoothed) count of tag c after a, b.

    The file is speech_tools' binary n-gram: a line "NgramBin_2 3", the history tags and the predicted
    tags (one line each, the same list), then big-endian float64 counts of every (a, b) history in order,
    c fastest, where a negative value -k stands for k - 1 zero counts in a row.
    """
    if not path.is_file():
        raise PrepError(
            f"{path} not found: --word-order pos-trigram needs festival's WSJ tag trigram; install it with "
            "`sudo apt-get install festlex-poslex` (or `make speech-tools`) and rerun"
        )
    header, history_tags, predicted_tags, body = path.read_bytes().split(b"\n", 3)
    tags = history_tags.decode("ascii").split()
    if header.split() != [b"NgramBin_2", b"3"] or predicted_tags.split() != history_tags.split() or len(body) % 8:
        raise PrepError(f"{path}: not a speech_tools binary trigram of one tag set (header {header[:40]!r})")
    counts: list[float] = []
    for value in np.frombuffer(body, dtype=">f8").tolist():
        counts.extend([0.0] * (int(-value) - 1) if value < 0 else [value])
    if len(counts) != len(tags) ** 3:
        raise PrepError(f"{path}: {len(counts)} counts for {len(tags)} tags, expected {len(tags) ** 3}")
    return tags, np.array(counts).reshape(len(tags), len(tags), len(tags))


# Tags of the trigram that end a phrase (punctuation) and that attach to the word before ('s, ').
PHRASE_END_TAG, POSSESSIVE_TAG = "punc", "pos"


def tagged_sentences(
    rng: random.Random, words: Sequence[str], count: int, min_words: int, max_words: int,
    lexicon: Path = WSJ_LEXICON, trigram: Path = WSJ_POS_TRIGRAM,
) -> list[str]:
    """`count` distinct sentences with the word order of English: a tag sequence from festival's WSJ tag
    trigram, started after punctuation and ended at the next punctuation once min_words are out (longer
    than max_words: drawn again), each tag spoken by one of `words` with weight sqrt(P(word | tag)), as
    the random order weights words by the square root of their frequency. Function words come out as
    often as in text ("of" 1.8% of the words against 0.6% in random order; measured on 4,000 sentences)
    and next to the words they go with, which the synthesisers then speak with English phrasing."""
    tags, counts = pos_trigram(trigram)
    vocabulary = set(words)
    spoken: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for word, word_tags in lexicon_entries(lexicon):
        if word in vocabulary:
            for tag, log_p in word_tags:
                spoken[tag].append((word, float(np.exp(log_p / 2))))
    usable = np.array([tag in spoken or tag in (PHRASE_END_TAG, POSSESSIVE_TAG) for tag in tags])
    # Cumulative weights, so that each draw is a bisection; tags without a word of the vocabulary never come up.
    cumulative = np.cumsum(counts * usable, axis=-1).tolist()
    choices = {
        tag: ([word for word, _ in options], np.cumsum([weight for _, weight in options]).tolist())
        for tag, options in spoken.items()
    }
    start = tags.index(PHRASE_END_TAG)

    def draw() -> str | None:
        history, sentence = (start, start), []
        while len(sentence) <= max_words:
            row = cumulative[history[0]][history[1]]
            if row[-1] == 0:
                return None
            tag = rng.choices(range(len(tags)), cum_weights=row)[0]
            if tags[tag] == PHRASE_END_TAG:
                if len(sentence) >= min_words:
                    return " ".join(sentence)
            elif tags[tag] == POSSESSIVE_TAG:
                if sentence:
                    sentence[-1] += "'" if sentence[-1].endswith("s") else "'s"
            else:
                options, weights = choices[tags[tag]]
                sentence.append(rng.choices(options, cum_weights=weights)[0])
            history = (history[1], tag)
        return None

    return distinct(draw, count, count * 50, f"{min_words}-{max_words} words in tag order")


_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DIGIT_STRING_LENGTHS = (1, 7)  # spoken digit strings: codes, phone numbers
AMOUNT_DIGITS = 4  # spoken amounts: below 10,000


def spoken_cardinal(value: int) -> str:
    """0 <= value < 1,000,000 as words, American style without "and": 342 -> "three hundred forty two"."""
    if not 0 <= value < 1_000_000:
        raise ValueError(f"spoken_cardinal covers 0-999999, got {value}")
    if value < 20:
        return _UNITS[value]
    if value < 100:
        tens, unit = divmod(value, 10)
        return _TENS[tens] + (f" {_UNITS[unit]}" if unit else "")
    size, name = (100, "hundred") if value < 1000 else (1000, "thousand")
    high, rest = divmod(value, size)
    return f"{spoken_cardinal(high)} {name}" + (f" {spoken_cardinal(rest)}" if rest else "")


def spoken_number(rng: random.Random) -> str:
    """A digit string or an amount, half and half; amounts have 1 to AMOUNT_DIGITS digits, equally often."""
    if rng.random() < 0.5:
        return " ".join(_UNITS[rng.randrange(10)] for _ in range(rng.randint(*DIGIT_STRING_LENGTHS)))
    return spoken_cardinal(rng.randrange(10 ** rng.randint(1, AMOUNT_DIGITS)))


def add_numbers(sentences: Sequence[str], fraction: float, seed: int) -> list[str]:
    """Insert a spoken number at a random place into a `fraction` of the sentences. The draws have their
    own seeded stream, so every other draw of a corpus (sentences, voices, prosody) stays as without it."""
    rng = random.Random(f"numbers-{seed}")
    result = []
    for sentence in sentences:
        if rng.random() < fraction:
            words = sentence.split()
            words.insert(rng.randint(0, len(words)), spoken_number(rng))
            sentence = " ".join(words)
        result.append(sentence)
    return result


def plan_asr(
    out: Path,
    seed: int,
    sizes: dict[str, int],
    min_words: int,
    max_words: int,
    accents: Sequence[str] = ASR_ACCENTS,
    engines: Sequence[str] = DEFAULT_ENGINES,
    vocabulary: int = 0,
    numbers: float = 0.0,
    word_order: str = RANDOM_ORDER,
) -> tuple[list[Utterance], dict]:
    """The utterances of every split, and the speakers (LibriSpeech id -> voice, variant, split, and in
    corpora of several engines engine and person)."""
    engines = canonical_engines(engines)
    groups = engine_groups(seed, accents, engines)
    speaker_ids = {
        speaker: 100 + index for index, speaker in enumerate(s for split in ASR_SPLITS for s in groups[split])
    }
    rng = random.Random(seed)
    words, weights = lexicon_vocabulary(vocabulary) if vocabulary else (load_words(), None)
    if word_order == TAG_ORDER:
        sentences = tagged_sentences(rng, words, sum(sizes.values()), min_words, max_words)
    else:
        sentences = unique_sentences(rng, words, sum(sizes.values()), min_words, max_words, weights)
    sentences = iter(add_numbers(sentences, numbers, seed))
    utterances, counters = [], defaultdict(int)
    for split in ASR_SPLITS:
        for _ in range(sizes[split]):
            chosen = pick_speaker(rng, groups[split], engines)
            speaker, chapter = speaker_ids[chosen], CHAPTERS[split]
            index = counters[(speaker, chapter)]
            counters[(speaker, chapter)] += 1
            path = out / "LibriSpeech" / split / str(speaker) / str(chapter) / f"{speaker}-{chapter}-{index:04d}.flac"
            prosody = random_prosody(rng, (130, 200))
            clean = rng.random() < CLEAN_FRACTION
            prosody["snr_db"] = float("inf") if clean else round(rng.uniform(*ASR_SNR_DB), 2)
            utterance = Utterance(
                str(path), next(sentences), chosen.voice, chosen.variant, **prosody,
                leading_pause=round(rng.random() ** 3 * MAX_LEADING_PAUSE, 3),
                trailing_pause=round(rng.random() ** 3 * MAX_TRAILING_PAUSE, 3),
                engine=chosen.engine,
            )
            utterances.append(utterance)
    speakers = {
        str(speaker_ids[speaker]): speaker_record(speaker, split, engines)
        for split in ASR_SPLITS
        for speaker in groups[split]
    }
    return utterances, speakers


def write_transcripts(utterances: Sequence[Utterance]) -> None:
    """`<speaker>-<chapter>.trans.txt` next to the FLACs, upper case like LibriSpeech's."""
    chapters: dict[Path, list[str]] = defaultdict(list)
    for utterance in utterances:
        path = Path(utterance.path)
        chapters[path.parent].append(f"{path.stem} {utterance.text.upper()}")
    for folder, lines in chapters.items():
        target = folder / f"{folder.parent.name}-{folder.name}.trans.txt"
        partial = target.with_name(target.name + ".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(target)


def generate_asr(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    train: int = 2400,
    dev: int = 200,
    test: int = 200,
    min_words: int = 2,
    max_words: int = 6,
    accents: Sequence[str] = ASR_ACCENTS,
    engines: Sequence[str] = DEFAULT_ENGINES,
    vocabulary: int = 0,
    numbers: float = 0.0,
    word_order: str = RANDOM_ORDER,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Make (or finish) the ASR corpus and its manifests; returns split -> manifest. `vocabulary` > 0 draws
    sentences from that many words of festival's WSJ lexicon instead of data_prep/wordlist.txt; `numbers`
    is the fraction of sentences that get a spoken number; `word_order` "pos-trigram" orders the words
    as English does (`tagged_sentences`, needs `vocabulary`), "random" draws each word on its own."""
    out = Path(out)
    sizes = {"train": train, "dev": dev, "test": test}
    if not 1 <= min_words <= max_words:
        raise PrepError(f"need 1 <= --min-words <= --max-words, got {min_words} and {max_words}")
    engines = canonical_engines(engines)
    versions = engine_versions(engines)
    if vocabulary < 0:
        raise PrepError(f"--vocabulary must be 0 (the built-in word list) or a word count, got {vocabulary}")
    if not 0.0 <= numbers <= 1.0:
        raise PrepError(f"--numbers is a fraction of the sentences, from 0 to 1; got {numbers}")
    if word_order not in WORD_ORDERS:
        raise PrepError(f"--word-order must be one of {', '.join(WORD_ORDERS)}; got {word_order!r}")
    if word_order == TAG_ORDER and not vocabulary:
        raise PrepError("--word-order pos-trigram tags the words of festival's WSJ lexicon: give --vocabulary N too")
    utterances, speakers = plan_asr(
        out.absolute(), seed, sizes, min_words, max_words, accents, engines, vocabulary, numbers, word_order
    )
    settings = {"corpus": "asr", "seed": seed, "sizes": sizes, "min_words": min_words, "max_words": max_words,
                "accents": list(accents), "max_pauses": [MAX_LEADING_PAUSE, MAX_TRAILING_PAUSE], "pause_power": 3,
                "clean_fraction": CLEAN_FRACTION, "snr_db": list(ASR_SNR_DB)}
    if engines != DEFAULT_ENGINES:  # recorded only when used, so existing espeak-only corpora stay valid
        settings |= {"engines": list(engines), "held_out_persons": HELD_OUT_PERSONS,
                     "reference_rate": REFERENCE_RATE, "pitch_span": PITCH_SPAN}
    if vocabulary:  # likewise
        settings |= {"vocabulary": {"source": WSJ_LEXICON.name, "words": vocabulary, "weights": "sqrt(frequency)"}}
    if word_order != RANDOM_ORDER:  # likewise
        settings |= {"word_order": {"source": WSJ_POS_TRIGRAM.name, "weights": "sqrt(P(word | tag))"}}
    if numbers:  # likewise
        settings |= {"numbers": {"fraction": numbers, "digit_strings": list(DIGIT_STRING_LENGTHS),
                                 "amounts_below": 10**AMOUNT_DIGITS}}
    claim_output(out, {"settings": settings, **versions, "speakers": speakers})
    try:
        render_all(render_sentence, utterances, jobs or os.cpu_count() or 1, "synthesise asr")
    finally:
        for engine in RECORDED_ENGINES.values():
            engine.close()
    write_transcripts(utterances)
    manifests = {}
    for split in ASR_SPLITS:
        manifests[split] = out / f"{split}.json"
        count = librispeech.convert_split(out / "LibriSpeech" / split, manifests[split])
        print(f"{split}: {count} utterances -> {manifests[split]}")
    return manifests


# --------------------------------------------------------------------------------------------- KWS corpus

KWS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # speaker group -> Speech Commands split


def speaker_code(voice: str, variant: str) -> str:
    """An 8-hex-digit speaker id like the dataset's, stable for a voice across runs and seeds."""
    return f"{zlib.crc32(f'{voice}+{variant}'.encode()):08x}"


def plan_kws(out: Path, seed: int, counts: dict[str, int], repeats: int) -> tuple[list[Utterance], dict]:
    """Every speaker of a split says every word `repeats` times; returns the utterances and speakers."""
    voices, variants = available_speakers()
    groups = speaker_groups(seed, voices, variants)
    rng = random.Random(seed)
    words = sorted({*speech_commands.LABELS["v2"], *KWS_OTHER_WORDS})
    utterances, speakers = [], {}
    for group, split in KWS_SPLITS.items():
        if counts[split] > len(groups[group]):
            raise PrepError(
                f"{counts[split]} {split} speakers asked for, but only {len(groups[group])} voices are held for it"
            )
        for voice, variant in sorted(rng.sample(groups[group], counts[split])):
            code = speaker_code(voice, variant)
            if code in speakers:
                raise PrepError(
                    f"speaker id {code} of {voice}+{variant} collides with {speakers[code]}; use another --seed"
                )
            speakers[code] = {"voice": voice, "variant": variant, "split": split}
            for word in words:
                for repeat in range(repeats):
                    path = out / word / f"{code}_nohash_{repeat}.wav"
                    prosody = random_prosody(rng, (150, 220))  # brisk enough for every word to fit in 1 s
                    utterances.append(Utterance(str(path), word, voice, variant, clip_offset=rng.random(), **prosody))
    return utterances, speakers


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


def write_background(out: Path, seed: int) -> None:
    folder = out / speech_commands.BACKGROUND
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for kind in ("white", "pink", "brown", "hum"):
        noise = coloured_noise(
            rng, kind, NOISE_SECONDS * SAMPLE_RATE
        )  # drawn in order, so each file is seed-determined
        target = folder / f"{kind}_noise.wav"
        if not target.exists():
            write_audio(target, noise, "WAV")


def write_split_lists(out: Path, utterances: Sequence[Utterance], speakers: dict) -> None:
    for split, name in speech_commands.SPLIT_LISTS.items():
        lines = sorted(
            f"{Path(u.path).parent.name}/{Path(u.path).name}"
            for u in utterances
            if speakers[Path(u.path).name.split("_")[0]]["split"] == split
        )
        partial = out / f"{name}.partial"
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        partial.replace(out / name)


def generate_kws(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    train_speakers: int = 96,
    val_speakers: int = 12,
    test_speakers: int = 12,
    repeats: int = 1,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Make (or finish) the keyword corpus and its manifests; returns task_split -> manifest."""
    out = Path(out)
    counts = {"train": train_speakers, "validation": val_speakers, "test": test_speakers}
    version = espeak_version()
    utterances, speakers = plan_kws(out.absolute(), seed, counts, repeats)
    settings = {"corpus": "kws", "seed": seed, "speakers": counts, "repeats": repeats}
    claim_output(out, {"settings": settings, "espeak_ng": version, "speakers": speakers})
    render_all(render_keyword, utterances, jobs or os.cpu_count() or 1, "synthesise kws")
    write_background(out, seed)
    write_split_lists(out, utterances, speakers)
    return speech_commands.write_manifests(out, out, "v2", seed=seed)


# --------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    corpora = parser.add_subparsers(dest="corpus", required=True, metavar="{asr,kws}")
    asr = corpora.add_parser("asr", help="LibriSpeech-like sentences (train/dev/test)")
    kws = corpora.add_parser("kws", help="Speech Commands-like keywords")
    for command in (asr, kws):
        command.add_argument(
            "--out", type=Path, required=True, help="output folder (resumed if it holds the same corpus)"
        )
        command.add_argument("--seed", type=int, default=0, help="seed of everything random (default: %(default)s)")
        command.add_argument(
            "--jobs", type=at_least(1), default=None, help="parallel syntheses (default: the number of CPU cores)"
        )
    asr.add_argument("--train-utterances", type=at_least(1), default=2400, help="default: %(default)s")
    asr.add_argument("--dev-utterances", type=at_least(1), default=200, help="default: %(default)s")
    asr.add_argument("--test-utterances", type=at_least(1), default=200, help="default: %(default)s")
    asr.add_argument("--min-words", type=at_least(1), default=2, help="shortest sentence (default: %(default)s)")
    asr.add_argument("--max-words", type=at_least(1), default=6, help="longest sentence (default: %(default)s)")
    asr.add_argument(
        "--accents", type=lambda text: VOICES if text == "all" else tuple(text.split(",")), default=ASR_ACCENTS,
        help=f"comma-separated espeak-ng English voices, or 'all' ({', '.join(VOICES)}; default: {','.join(ASR_ACCENTS)})",
    )
    asr.add_argument(
        "--engines", type=lambda text: ENGINE_NAMES if text == "all" else tuple(text.split(",")),
        default=DEFAULT_ENGINES,
        help=f"comma-separated synthesisers, or 'all' ({', '.join(ENGINE_NAMES)}; "
        f"default: {','.join(DEFAULT_ENGINES)})",
    )
    asr.add_argument(
        "--vocabulary", type=at_least(0), default=0,
        help="draw sentences from the N most frequent words of festival's WSJ lexicon (festlex-poslex) instead "
        "of the built-in 270-word list (default: 0, the built-in list)",
    )
    asr.add_argument(
        "--numbers", type=fraction, default=0.0,
        help="fraction of the sentences that get a spoken number, a digit string or an amount (default: 0)",
    )
    asr.add_argument(
        "--word-order", choices=WORD_ORDERS, default=RANDOM_ORDER,
        help="random: every word drawn on its own; pos-trigram: in the order of English, from festival's WSJ "
        "part-of-speech trigram (with --vocabulary; default: %(default)s)",
    )
    kws.add_argument("--train-speakers", type=at_least(1), default=96, help="default: %(default)s")
    kws.add_argument("--val-speakers", type=at_least(1), default=12, help="default: %(default)s")
    kws.add_argument("--test-speakers", type=at_least(1), default=12, help="default: %(default)s")
    kws.add_argument("--repeats", type=at_least(1), default=1, help="times each speaker says each word (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parse_args_with_debug(parser, argv)
    if args.corpus == "asr" and args.max_words < args.min_words:
        parser.error(f"argument --max-words: must be >= --min-words ({args.min_words}), got {args.max_words}")
    with prep_errors(args.debug, as_program=argv is None):
        if args.corpus == "asr":
            generate_asr(
                args.out,
                seed=args.seed,
                train=args.train_utterances,
                dev=args.dev_utterances,
                test=args.test_utterances,
                min_words=args.min_words,
                max_words=args.max_words,
                accents=args.accents,
                engines=args.engines,
                vocabulary=args.vocabulary,
                numbers=args.numbers,
                word_order=args.word_order,
                jobs=args.jobs,
            )
        else:
            generate_kws(
                args.out,
                seed=args.seed,
                train_speakers=args.train_speakers,
                val_speakers=args.val_speakers,
                test_speakers=args.test_speakers,
                repeats=args.repeats,
                jobs=args.jobs,
            )


if __name__ == "__main__":
    run_main(main)

"""The speech synthesisers of the synthetic corpora, and the voices each has.

espeak-ng speaks every English accent with a choice of voice variants; flite and festival have voices
recorded from real people; `accented` is festival reading English in the voices of its Italian and
Finnish speakers (data_prep/accents.py). An Utterance says what to say, in which voice and how;
`speak` gives its samples from its engine, with the rate to read them at.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile

from data_prep import accents
from data_prep.common import PrepError

ESPEAK_RATE = 22050
# English voices (accents) of espeak-ng, see `espeak-ng --voices=en`; the mbrola ones need extra packages.
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
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
ENGINE_NAMES = ("espeak", "flite", "festival", "accented")  # the canonical order: corpora record engines in it
DEFAULT_ENGINES = ("espeak",)


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


class Speaker(NamedTuple):
    """One voice of a corpus. `person` is who it sounds like: held-out groups never share a person."""

    engine: str
    voice: str
    variant: str  # espeak-ng's voice variant; "" for recorded voices
    person: str


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


# --------------------------------------------------------------------------------------------- recorded voices
# espeak-ng is a formant synthesiser: its voices are rules, none of them a person, and a model trained on
# them alone fails on people. flite and festival voices are made from recordings of real speakers.

# Rate and pitch are drawn on espeak-ng's scales (words per minute, 0..99) for every utterance. A recorded
# voice keeps its own pace and pitch, so the draws become changes relative to them: REFERENCE_RATE (the
# middle of the ASR range, 130-200) is the voice's own pace, and PITCH_SPAN pitch steps make an octave,
# so the drawn 20..80 moves a voice by up to 0.2 octave (2.4 semitones) either way.
REFERENCE_RATE = 165
PITCH_SPAN = 150
# Pitch moves by reading the samples as if recorded at a shifted rate; rounding that rate to a multiple
# of RATE_STEP Hz keeps torchaudio's resampling kernel small (its size follows rate / gcd(rate, 16000)).
RATE_STEP = 100


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


# --------------------------------------------------------------------------------------------- every engine


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

"""A dev set of real human speech without downloads: recordings from Debian's pocketsphinx-testdata.

The synthetic corpora (data_prep/synthetic.py) are all machine voices; this manifest checks a model on
people. Only these parts of the package are read, each with the reference transcripts it ships:

  cards/     5 WAVs, transcripts in cards.transcription
  goforward.raw, numbers.raw, something.raw
  tidigits/  recordings (.raw / .wav), transcripts in tidigits.lsn

Two recordings have no transcript file but a known text, used as their reference:
  goforward.raw       "go forward ten meters": the hypothesis pocketsphinx's own unit tests require
                      for it (test/unit and the Python tests, and the goforward.gram grammar beside it)
  tidigits/dhd.2934z  TIDIGITS names a recording after its digits ("2934z": two nine three four zero;
                      "o" is oh, "z" zero, a trailing "a"/"b" only counts takes), as tidigits.lsn does
                      for man.ah.2934za

Transcripts are Sphinx reference files (`*.transcription`, `*.lsn`: "<s> text </s> (utterance-id)") in
the recording's own folder; an id names the audio file without its extension. `*.hyp` and `*.match`
files are decoder output, not references, and are never used. A recording without a reference
transcript is left out and listed, and so are transcribed utterances without audio (tidigits ships most
of its utterances as MFCC features only).

The package's librivox/ folder is reserved for an independent check: it is refused, never read.

`.raw` files are 16 kHz 16-bit little-endian mono PCM without a header; they become WAVs with the same
samples. Other audio is copied when it is already 16 kHz 16-bit mono WAV, else converted to that.
Texts are lowercased to the model alphabet (a-z, space, apostrophe), digits spelt as words.

    python -m data_prep.real_speech --out data/real_dev     # -> data/real_dev/real_dev.json
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from data_prep.common import (
    PrepError,
    parse_args_with_debug,
    prep_errors,
    run_main,
    save_manifest,
)
from quartznet.data.audio import audio_duration, load_audio
from quartznet.data.text import CharTokenizer
from quartznet.network.heads import LABELS

PACKAGE = "pocketsphinx-testdata"
DEFAULT_ROOT = Path("/usr/share/pocketsphinx/test/data")  # from `dpkg -L pocketsphinx-testdata`
RESERVED = "librivox"
SAMPLE_RATE = 16000
MANIFEST = "real_dev.json"
AUDIO_DIR = "audio"
# Reference transcripts; decoder outputs (.hyp, .match) sit beside them and must not be mistaken for them.
TRANSCRIPT_PATTERNS = ("*.transcription", "*.lsn")
# Texts known without a transcript file (see the module docstring): audio path in the package -> text.
KNOWN_TEXTS = {"goforward.raw": "go forward ten meters"}
# A TIDIGITS utterance name ends in its digit string, then an optional take letter: "dhd.2934z", "man.ah.35oa".
_TIDIGITS_NAME = re.compile(r"\.(?P<digits>[0-9oz]*[0-9][0-9oz]*?)[ab]?$")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Source:
    """A folder of the package (relative to its root, "" for the root itself) and the audio it may give."""

    folder: str
    audio: tuple[str, ...]  # glob patterns inside `folder`, never recursive


# The allow-list: nothing else in the package is read.
SOURCES = (
    Source("cards", ("*.wav",)),
    Source("", ("goforward.raw", "numbers.raw", "something.raw")),
    Source("tidigits", ("*.raw", "*.wav")),
)


@dataclass(frozen=True)
class Recording:
    audio: Path
    utterance: str  # the id transcripts use: the file name without its extension
    text: str  # as the transcript has it


@dataclass
class Collection:
    """The usable recordings, and what was left out with the reason (printed in the summary)."""

    recordings: list[Recording]
    left_out: list[str]


# --------------------------------------------------------------------------------------------- safety


def refuse_reserved(path: Path) -> Path:
    """`path` unchanged, or PrepError when it lies in (or resolves into) the reserved librivox folder."""
    if any(part.lower() == RESERVED for part in (*path.parts, *path.resolve().parts)):
        raise PrepError(
            f"{path}: the package's {RESERVED}/ folder is reserved for an independent check and must not be read"
        )
    return path


def package_root(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The package's data folder; PrepError naming the package and its install command when it is missing."""
    root = refuse_reserved(Path(root))
    if not root.is_dir():
        raise PrepError(
            f"{PACKAGE} is not installed ({root} not found); install it with "
            f"`sudo apt-get install {PACKAGE}` (or `make speech-tools`) and rerun"
        )
    return root


# --------------------------------------------------------------------------------------------- transcripts

# "<s> ten of clubs </s> (001)" or "one one one (man.ah.111a)"; a score after the id is tolerated.
_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()\s]+)(?:\s+-?\d+)?\)\s*$")
_MARKUP = re.compile(r"<[^>]*>")  # <s>, </s>, <sil>: sentence and silence markers, not words


def parse_transcript(path: Path) -> dict[str, str]:
    """utterance id -> text of one Sphinx transcript file (ids are file names, so only their last part counts)."""
    texts: dict[str, str] = {}
    for number, line in enumerate(refuse_reserved(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise PrepError(f"{path}:{number}: not a '<text> (<utterance id>)' transcript line: {line.strip()!r}")
        utterance = match["id"].rsplit("/", 1)[-1]
        text = " ".join(_MARKUP.sub(" ", match["text"]).split())
        if texts.get(utterance, text) != text:
            raise PrepError(f"{path}:{number}: {utterance} has two different transcripts")
        texts[utterance] = text
    return texts


def folder_transcripts(folder: Path) -> dict[str, tuple[str, Path]]:
    """utterance id -> (text, transcript file) from every reference transcript directly in `folder`."""
    found: dict[str, tuple[str, Path]] = {}
    for pattern in TRANSCRIPT_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            for utterance, text in parse_transcript(path).items():
                if utterance in found and found[utterance][0] != text:
                    raise PrepError(f"{utterance}: {found[utterance][1]} and {path} disagree on its transcript")
                found[utterance] = (text, path)
    return found


def spell_digits(text: str) -> str:
    """Digit strings read digit by digit, as TIDIGITS says them: "2934z" -> "two nine three four zero".

    In TIDIGITS names "o" is "oh" and "z" is "zero"; they count as digits only inside a token that has a
    real digit, so words like "zoo" are left alone.
    """

    def spell(token: re.Match) -> str:
        letters = {"o": "oh", "z": "zero"}
        return " ".join(DIGIT_WORDS[int(char)] if char.isdigit() else letters[char.lower()] for char in token[0])

    return re.sub(r"\b(?=[0-9oz]*[0-9])[0-9oz]+\b", spell, text, flags=re.IGNORECASE)


def normalise_text(text: str, tokenizer: CharTokenizer) -> str:
    """The transcript in the model alphabet; the tokenizer counts what it drops, for the summary."""
    return tokenizer.normalize(spell_digits(text.lower()))


# --------------------------------------------------------------------------------------------- collection


def source_audio(root: Path, source: Source) -> list[Path]:
    folder = root / source.folder
    files = {path for pattern in source.audio for path in folder.glob(pattern) if path.is_file()}
    return [refuse_reserved(path) for path in sorted(files)]


def text_without_transcript(root: Path, path: Path) -> str | None:
    """The known text of a recording the package ships no transcript for, or None (see KNOWN_TEXTS)."""
    relative = path.relative_to(root).as_posix()
    if relative in KNOWN_TEXTS:
        return KNOWN_TEXTS[relative]
    match = _TIDIGITS_NAME.search(path.stem) if relative.startswith("tidigits/") else None
    return spell_digits(match["digits"]) if match else None


def collect(root: Path) -> Collection:
    """The allowed recordings that have a reference transcript; the rest is listed in `left_out`."""
    recordings, left_out = [], []
    for source in SOURCES:
        folder = refuse_reserved(root / source.folder)
        transcripts = folder_transcripts(folder) if folder.is_dir() else {}
        audio = source_audio(root, source) if folder.is_dir() else []
        for path in audio:
            utterance = path.stem
            text = transcripts[utterance][0] if utterance in transcripts else text_without_transcript(root, path)
            if text is not None:
                recordings.append(Recording(path, utterance, text))
            else:
                left_out.append(f"{path.relative_to(root)}: no transcript in the package")
        with_audio = {path.stem for path in audio}
        silent = sorted(set(transcripts) - with_audio)
        if silent:
            features = sum((folder / f"{utterance}.mfc").is_file() for utterance in silent)
            where = sorted({transcripts[utterance][1].relative_to(root).as_posix() for utterance in silent})
            left_out.append(
                f"{', '.join(where)}: {len(silent)} transcribed utterances have no audio "
                f"({features} of them only MFCC features, .mfc)"
            )
    return Collection(recordings, left_out)


# --------------------------------------------------------------------------------------------- audio


def read_raw(path: Path) -> np.ndarray:
    """The int16 samples of a headerless 16-bit little-endian mono PCM file."""
    size = path.stat().st_size
    if size % 2:
        raise PrepError(f"{path}: {size} bytes is not a whole number of 16-bit samples; the file is truncated")
    return np.fromfile(path, dtype="<i2")


def is_target_wav(path: Path) -> bool:
    """Already what the manifest wants (16 kHz, mono, 16-bit WAV): copied byte for byte."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return False
    return (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", SAMPLE_RATE, 1)


def convert(source: Path, target: Path) -> None:
    """`source` as a 16 kHz mono 16-bit WAV at `target`, renamed into place only when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    if source.suffix.lower() == ".raw":
        soundfile.write(str(partial), read_raw(source), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    elif is_target_wav(source):
        shutil.copyfile(source, partial)
    else:  # load_audio resamples and downmixes (and names the file when it is unreadable)
        samples = load_audio(source, SAMPLE_RATE).numpy()
        soundfile.write(str(partial), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    partial.replace(target)


def target_path(out: Path, root: Path, recording: Recording) -> Path:
    """<out>/audio/<the recording's folder in the package>/<id>.wav: ids stay unique across folders."""
    relative = recording.audio.parent.relative_to(root)
    return out / AUDIO_DIR / relative / f"{recording.utterance}.wav"


# --------------------------------------------------------------------------------------------- build


def build(out: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """Convert the usable recordings into `out` and write `out`/real_dev.json; returns the manifest."""
    root, out = package_root(root), Path(out)
    collection = collect(root)
    if not collection.recordings:
        raise PrepError(f"{root}: no recording with a transcript found; is this {PACKAGE}'s data folder?")
    tokenizer = CharTokenizer(LABELS)
    rows = []
    for recording in collection.recordings:
        target = target_path(out, root, recording)
        convert(recording.audio, target)
        text = normalise_text(recording.text, tokenizer)
        if not text:
            raise PrepError(f"{recording.audio}: its transcript {recording.text!r} is empty in the model alphabet")
        rows.append({"audio_filepath": target, "duration": audio_duration(target), "text": text})
    manifest = save_manifest(out / MANIFEST, rows)
    print_summary(manifest, rows, collection.left_out, tokenizer)
    return manifest


def print_summary(manifest: Path, rows: Sequence[dict], left_out: Sequence[str], tokenizer: CharTokenizer) -> None:
    minutes = sum(row["duration"] for row in rows) / 60
    words = sum(len(row["text"].split()) for row in rows)
    print(f"{len(rows)} files, {minutes:.2f} minutes, {words} words -> {manifest}")
    for reason in left_out:
        print(f"left out: {reason}")
    if tokenizer.dropped:
        print(tokenizer.dropped_summary())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.real_speech",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--out", type=Path, required=True, help=f"output folder (audio/ and {MANIFEST})")
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help=f"{PACKAGE}'s data folder (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parse_args_with_debug(parser, argv)
    with prep_errors(args.debug, as_program=argv is None):
        build(args.out, args.root)


if __name__ == "__main__":
    run_main(main)

"""Google Speech Commands v1 (30 words) / v2 (35 words) -> NeMo classification manifests.

Sources: the official archive (downloaded with resume), a local archive (`--archive`) or an
extracted folder (`--extracted`, used in place). The split follows the dataset's own lists:
`validation_list.txt` and `testing_list.txt`; every other clip of a word folder is train. Labels are
the folder names. Two tasks are written into `--out`:

  <version>_{train,validation,test}.json   all words of the version (docs/nemo_compatibility.md §5)
  subset12_{train,validation,test}.json    yes no up down left right on off stop go, every other word
                                           as "unknown", and "silence": 1 s clips cut from
                                           _background_noise_/*.wav into <out>/_silence_/<split>/

As in TensorFlow's reference pipeline for the 12-class task, "unknown" is a seeded sample of the
other words' clips and "silence" is background noise at random volumes; each counts a percentage of
the split's keyword clips (--unknown-percent, --silence-percent; 10 by default). Each noise file is
cut into disjoint regions per split (first 80% train, then 10% validation, 10% test), so no noise
is shared between splits.

    python -m data_prep.speech_commands --version v2 --out data/speech_commands_v2
    python -m data_prep.speech_commands --version v1 --out data/sc_v1 --archive speech_commands_v0.01.tar.gz
"""

from __future__ import annotations

import argparse
import math
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from data_prep.common import (
    PrepError,
    add_preparer_options,
    check_md5,
    download,
    extract_tar,
    extraction_marker,
    parse_args_with_debug,
    prep_errors,
    progress,
    run_main,
    save_manifest,
)
from quartznet.common.cli import at_least
from quartznet.data.audio import audio_duration

URLS = {
    "v1": "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    "v2": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
LABELS = {  # docs/nemo_compatibility.md §5; v2 in NeMo's order
    "v1": (
        "bed bird cat dog down eight five four go happy house left marvin nine no off on one right seven sheila six "
        "stop three tree two up wow yes zero"
    ).split(),
    "v2": (
        "visual wow learn backward dog two left happy nine go up bed stop one zero tree seven on four bird right eight "
        "no six forward house marvin sheila five off three down cat follow yes"
    ).split(),
}
SUBSET_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "unknown", "silence"
SUBSET_LABELS = (*SUBSET_WORDS, UNKNOWN, SILENCE)
SPLITS = ("train", "validation", "test")
SPLIT_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
BACKGROUND = "_background_noise_"
SILENCE_DIR = "_silence_"  # a leading underscore, like _background_noise_, so it is never taken for a word
SILENCE_REGIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


@dataclass(frozen=True)
class Clip:
    path: Path
    word: str


def word_folders(root: Path) -> list[str]:
    """The word folders of a dataset root (everything but `_background_noise_` and other `_`/`.` folders)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def split_clips(root: str | os.PathLike) -> dict[str, list[Clip]]:
    """Every clip of every word folder, by split, from the dataset's validation/testing lists."""
    root = Path(root)
    listed: dict[str, str] = {}
    for split, name in SPLIT_LISTS.items():
        path = root / name
        if not path.is_file():
            raise PrepError(
                f"{path} not found; is {root} a Speech Commands folder (it needs {' and '.join(SPLIT_LISTS.values())})?"
            )
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            relative = line.strip()
            if not relative:
                continue
            if not (root / relative).is_file():
                raise PrepError(
                    f"{path}:{number}: {root / relative} is missing; the copy is incomplete - extract it again"
                )
            listed[relative] = split
    clips: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    for word in word_folders(root):
        for audio in sorted((root / word).glob("*.wav")):
            clips[listed.get(f"{word}/{audio.name}", "train")].append(Clip(audio, word))
    return clips


def region(frames: int, split: str) -> tuple[int, int]:
    """[start, stop) samples of a noise file of `frames` samples that give this split's silence."""
    low, high = SILENCE_REGIONS[split]
    return int(frames * low), int(frames * high)


def clip_starts(frames: int, rate: int, split: str, count: int) -> list[int]:
    """Starts of `count` 1 s clips spread evenly over the split's region, overlapping when it is short."""
    start, stop = region(frames, split)
    if count == 1:
        return [start]
    return [start + round(index * (stop - start - rate) / (count - 1)) for index in range(count)]


def cut_silence(root: Path, out: Path, split: str, count: int, seed: int) -> list[Path]:
    """`count` 1 s clips of background noise at random volumes, written to <out>/_silence_/<split>/.

    Clips go round-robin over the noise files whose region for this split holds at least 1 s.
    """
    noises = []
    for noise in sorted((root / BACKGROUND).glob("*.wav")):
        info = soundfile.info(str(noise))
        start, stop = region(info.frames, split)
        if stop - start >= info.samplerate:
            noises.append((noise, info.frames, info.samplerate))
    if count and not noises:
        raise PrepError(
            f"{root / BACKGROUND}: no noise file long enough for {split} silence clips (each split needs 1 s "
            "of a file: 10 s files at least); add noise WAVs or pass --silence-percent 0"
        )
    starts = {
        noise: clip_starts(frames, rate, split, len(range(position, count, len(noises))))
        for position, (noise, frames, rate) in enumerate(noises)
    }
    rng = random.Random(f"{seed}-silence-{split}")
    folder = out / SILENCE_DIR / split
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        noise, _, rate = noises[index % len(noises)]
        samples, _ = soundfile.read(str(noise), start=starts[noise][index // len(noises)], frames=rate, dtype="float32")
        # Silence in use is quiet: scale the noise by a random volume in [0, 1] (TensorFlow's reference does too).
        volume = rng.random()
        target = folder / f"{index:05d}_{noise.stem}.wav"
        partial = target.with_name(target.name + ".partial")
        soundfile.write(str(partial), (samples * volume).astype(np.float32), rate, subtype="PCM_16", format="WAV")
        partial.replace(target)
        written.append(target)
    for stale in set(folder.glob("*.wav")) - set(written):  # clips of an earlier run with other settings
        stale.unlink()
    return written


def manifest_names(version: str, subset: bool) -> list[str]:
    tasks = [version, "subset12"] if subset else [version]
    return [f"{task}_{split}.json" for task in tasks for split in SPLITS]


def write_manifests(
    root: str | os.PathLike,
    out: str | os.PathLike,
    version: str,
    *,
    subset: bool = True,
    unknown_percent: float = 10.0,
    silence_percent: float = 10.0,
    seed: int = 0,
    jobs: int = 8,
) -> dict[str, Path]:
    """Write the task manifests (and silence clips) of a dataset root into `out`; returns name -> manifest."""
    root, out = Path(root), Path(out)
    labels = LABELS[version]
    missing = sorted(set(labels) - set(word_folders(root)))
    if missing:
        raise PrepError(
            f"{root}: no folder for {', '.join(missing)}; Speech Commands {version} has {len(labels)} word folders - "
            "is this the other version (--version) or an incomplete copy?"
        )
    clips = split_clips(root)
    everything = [clip.path for split in SPLITS for clip in clips[split]]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        durations = dict(
            zip(
                everything,
                progress(pool.map(audio_duration, everything), total=len(everything), desc="durations", unit="file"),
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in SPLITS:
        rows = [
            {"audio_filepath": c.path, "duration": durations[c.path], "label": c.word}
            for c in clips[split]
            if c.word in labels
        ]
        written[f"{version}_{split}"] = save_manifest(out / f"{version}_{split}.json", rows)
        print(f"{version} {split}: {len(rows)} clips, {len(labels)} classes")
    if subset:
        for split in SPLITS:
            known = [clip for clip in clips[split] if clip.word in SUBSET_WORDS]
            others = [clip for clip in clips[split] if clip.word not in SUBSET_WORDS]
            unknown_count = min(len(others), math.ceil(len(known) * unknown_percent / 100))
            unknown = sorted(
                random.Random(f"{seed}-unknown-{split}").sample(others, unknown_count), key=lambda c: c.path
            )
            silence = cut_silence(root, out, split, math.ceil(len(known) * silence_percent / 100), seed)
            rows = [{"audio_filepath": c.path, "duration": durations[c.path], "label": c.word} for c in known]
            rows += [{"audio_filepath": c.path, "duration": durations[c.path], "label": UNKNOWN} for c in unknown]
            rows += [{"audio_filepath": path, "duration": audio_duration(path), "label": SILENCE} for path in silence]
            written[f"subset12_{split}"] = save_manifest(out / f"subset12_{split}.json", rows)
            print(f"subset12 {split}: {len(known)} keyword, {len(unknown)} unknown, {len(silence)} silence clips")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.speech_commands",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--version", choices=sorted(URLS), required=True, help="v1: 30 words, v2: 35 words")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder: manifests, silence clips, and the extracted dataset"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--archive", type=Path, metavar="TAR_GZ", help="a local copy of the official archive, extracted into --out"
    )
    source.add_argument(
        "--extracted",
        type=Path,
        metavar="DIR",
        help="an extracted dataset folder (with validation_list.txt), used in place",
    )
    parser.add_argument("--md5", help="expected MD5 of the archive (no official checksum is published)")
    parser.add_argument("--url", help="download from this URL instead of the official one for --version")
    parser.add_argument("--no-subset", action="store_true", help="skip the 12-class task")
    parser.add_argument(
        "--unknown-percent",
        type=at_least(0, float),
        default=10.0,
        help="unknown clips per 100 keyword clips, per split (default: %(default)s)",
    )
    parser.add_argument(
        "--silence-percent",
        type=at_least(0, float),
        default=10.0,
        help="silence clips per 100 keyword clips, per split (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the unknown sample and silence volumes (default: %(default)s)"
    )
    add_preparer_options(parser, "the downloaded archive")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parse_args_with_debug(parser, argv)
    with prep_errors(args.debug, as_program=argv is None):
        subset = not args.no_subset
        if all((args.out / name).exists() for name in manifest_names(args.version, subset)) and not args.force:
            print(f"{args.out}: manifests exist, nothing to do (--force rewrites them)")
            return
        args.out.mkdir(parents=True, exist_ok=True)
        root, downloaded = args.out, None
        if args.extracted is not None:
            root = args.extracted
            if not root.is_dir():
                raise PrepError(f"folder not found: {root}")
        else:
            archive = args.archive
            if archive is None:
                url = args.url or URLS[args.version]
                downloaded = archive = args.out / "downloads" / url.rsplit("/", 1)[-1]
                if not extraction_marker(archive, args.out).exists():
                    download(url, archive, md5=args.md5)
            elif args.md5 and not extraction_marker(archive, args.out).exists():
                check_md5(archive, args.md5)
            extract_tar(archive, args.out)
        write_manifests(
            root,
            args.out,
            args.version,
            subset=subset,
            unknown_percent=args.unknown_percent,
            silence_percent=args.silence_percent,
            seed=args.seed,
            jobs=args.jobs,
        )
        if args.delete_archives and downloaded is not None and downloaded.exists():
            downloaded.unlink()


if __name__ == "__main__":
    run_main(main)

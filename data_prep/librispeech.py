"""LibriSpeech -> NeMo manifests, one per split (`<out>/<split>.json`).

Sources: the official OpenSLR archives (downloaded with resume and checksum check), local archives
(`--archive`), or an already extracted folder (`--extracted`). The `*.trans.txt` layout
`LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` becomes JSON lines
`{"audio_filepath", "duration", "text"}` with lowercased text and durations read from the FLAC
headers; the audio is used as it is (no re-encoding).

Rerunning is cheap: a split whose manifest exists is skipped (`--force` rewrites it), a finished
download or extraction is not repeated, and an interrupted download resumes.

    python -m data_prep.librispeech --out data/librispeech --splits dev-clean test-clean
    python -m data_prep.librispeech --out data/librispeech --archive ~/Downloads/train-clean-100.tar.gz
    python -m data_prep.librispeech --out data/librispeech --extracted /datasets/LibriSpeech
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
from quartznet.data.audio import audio_duration

SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other")
MIRROR = "https://www.openslr.org/resources/12"
# The publisher's checksums (https://www.openslr.org/resources/12/md5sum.txt).
MD5 = {
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
}
TRANSCRIPTS = "*/*/*.trans.txt"  # <speaker>/<chapter>/<speaker>-<chapter>.trans.txt under a split folder


def find_split_dirs(root: str | os.PathLike) -> dict[str, Path]:
    """Split folders (name -> path) under `root`: a folder holding `LibriSpeech/`, `LibriSpeech/`, or one split."""
    root = Path(root)
    if not root.is_dir():
        raise PrepError(f"folder not found: {root}")
    if next(root.glob(TRANSCRIPTS), None) is not None:
        return {root.name: root}
    splits = {}
    for parent in (root / "LibriSpeech", root):
        if parent.is_dir():
            for folder in sorted(parent.iterdir()):
                if folder.is_dir() and next(folder.glob(TRANSCRIPTS), None) is not None:
                    splits.setdefault(folder.name, folder)
    return splits


def convert_split(split_dir: str | os.PathLike, manifest: str | os.PathLike, jobs: int = 8) -> int:
    """Write the manifest of one split folder; returns the number of utterances.

    Every transcript line must have its FLAC next to it; a missing one means an incomplete copy, which
    is an error rather than a smaller corpus.
    """
    split_dir = Path(split_dir)
    transcripts = sorted(split_dir.glob(TRANSCRIPTS))
    if not transcripts:
        raise PrepError(f"{split_dir}: no {TRANSCRIPTS} files; is this a LibriSpeech split folder?")
    audio_files, texts = [], []
    for transcript in transcripts:
        for number, line in enumerate(transcript.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utterance, _, text = line.strip().partition(" ")
            audio = transcript.parent / f"{utterance}.flac"
            if not audio.is_file():
                raise PrepError(
                    f"{transcript}:{number}: {utterance} has no audio ({audio} is missing); the copy is incomplete - "
                    "extract the archive again"
                )
            audio_files.append(audio)
            texts.append(text.strip().lower())
    # Header reads are I/O bound; threads overlap them on network file systems.
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        durations = list(
            progress(
                pool.map(audio_duration, audio_files),
                total=len(audio_files),
                desc=f"{split_dir.name} durations",
                unit="file",
            )
        )
    rows = (
        {"audio_filepath": audio, "duration": duration, "text": text}
        for audio, duration, text in zip(audio_files, durations, texts)
    )
    save_manifest(manifest, rows)
    return len(audio_files)


def convert_all(root: Path, out: Path, splits: Sequence[str] | None, force: bool, jobs: int) -> dict[str, Path]:
    """Manifests for the split folders found under `root` (only `splits` when given); returns split -> manifest."""
    found = find_split_dirs(root)
    if splits:
        missing = [split for split in splits if split not in found]
        if missing:
            raise PrepError(f"{root}: no split folder for {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        found = {split: found[split] for split in splits}
    if not found:
        raise PrepError(f"{root}: no LibriSpeech split folders (expected LibriSpeech/<split>/{TRANSCRIPTS})")
    manifests = {}
    for split, folder in found.items():
        manifest = out / f"{split}.json"
        if manifest.exists() and not force:
            print(f"{split}: {manifest} exists, skipped (--force rewrites it)")
        else:
            count = convert_split(folder, manifest, jobs=jobs)
            print(f"{split}: {count} utterances -> {manifest}")
        manifests[split] = manifest
    return manifests


def prepare_downloads(args: argparse.Namespace) -> None:
    splits = args.splits or list(SPLITS)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise PrepError(f"unknown split(s) {', '.join(unknown)}; LibriSpeech has {', '.join(SPLITS)}")
    if args.md5 and len(splits) != 1:
        raise PrepError("--md5 names one archive: use it with a single --splits value")
    download_dir = args.download_dir or args.out / "downloads"
    for split in splits:
        manifest = args.out / f"{split}.json"
        if manifest.exists() and not args.force:
            print(f"{split}: {manifest} exists, skipped (--force rewrites it)")
            continue
        archive = download_dir / f"{split}.tar.gz"
        if not extraction_marker(archive, args.out).exists():
            download(f"{args.mirror.rstrip('/')}/{split}.tar.gz", archive, md5=args.md5 or MD5[split])
            extract_tar(archive, args.out)
        convert_all(args.out, args.out, [split], force=True, jobs=args.jobs)
        if args.delete_archives and archive.exists():
            archive.unlink()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.librispeech",
        description=__doc__.split("\n\n")[0]
        + " Downloads the official archives unless --archive or --extracted is given.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder: manifests, and the extracted audio under LibriSpeech/"
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        metavar="SPLIT",
        help=f"splits to prepare (default: all of {', '.join(SPLITS)} when downloading; every split found otherwise)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--archive", type=Path, nargs="+", metavar="TAR_GZ", help="local archive(s), extracted into --out"
    )
    source.add_argument(
        "--extracted",
        type=Path,
        metavar="DIR",
        help="an extracted copy (holding LibriSpeech/, or LibriSpeech/ itself); used in place",
    )
    parser.add_argument(
        "--md5", help="expected MD5 of the single archive (the official ones are built in for downloads)"
    )
    parser.add_argument("--mirror", default=MIRROR, help="base URL of the archives (default: %(default)s)")
    parser.add_argument("--download-dir", type=Path, help="where downloads go (default: OUT/downloads)")
    add_preparer_options(parser, "each downloaded archive")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parse_args_with_debug(parser, argv)
    with prep_errors(args.debug, as_program=argv is None):
        args.out.mkdir(parents=True, exist_ok=True)
        if args.extracted is not None:
            convert_all(args.extracted, args.out, args.splits, args.force, args.jobs)
        elif args.archive is not None:
            if args.md5 and len(args.archive) != 1:
                raise PrepError("--md5 names one archive: give a single --archive")
            for archive in args.archive:
                if not extraction_marker(archive, args.out).exists():
                    if args.md5:
                        check_md5(archive, args.md5)
                    extract_tar(archive, args.out)
            convert_all(args.out, args.out, args.splits, args.force, args.jobs)
        else:
            prepare_downloads(args)


if __name__ == "__main__":
    run_main(main)

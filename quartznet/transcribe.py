"""Transcribe audio files, folders or manifests with a CTC model: JSON lines with the text and, on request,
word timestamps from the CTC frames.

Files longer than `chunk_seconds` are streamed from disk through the encoder in overlapping windows with
memory that does not grow with the file (quartznet.long_audio); the stitched log-probs are decoded once.

    python -m quartznet.transcribe model.nemo audio/ more.flac manifest.json --timestamps --output out.jsonl

Rows are written as they are ready (`iter_transcriptions`): to stdout, flushed, or to `<output>.partial`,
renamed onto `--output` when every input is done. Options, inputs, the output folder and the device are
checked before the model is loaded; an unreadable audio file is skipped with a note; anything else wrong
ends the run with one `error: ...` line (exit 1; `--debug` for the traceback). Ctrl-C keeps the finished
rows in `<output>.partial`, leaves an existing `--output` as it was, and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import soundfile
import torch
from tqdm import tqdm

from quartznet.common.cli import DEVICE_HELP, at_least, resolve_device
from quartznet.common.errors import ConfigError, InputError, UserError, user_errors
from quartznet.common.outputs import JsonLinesOutput, StdoutRows, check_rows_output
from quartznet.data.audio import AudioError, audio_duration, load_audio, stream_audio
from quartznet.data.manifest import audio_path_field, manifest_rows, seconds_field
from quartznet.long_audio import chunked_log_probs
from quartznet.network.heads import Decode, ctc_token_runs

if TYPE_CHECKING:  # the models pull in Lightning; at run time a model is passed in
    from quartznet.models import CTCModel

MANIFEST_SUFFIXES = {".json", ".jsonl"}
LONG_FILE_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} s of audio [{elapsed}<{remaining}]"


@dataclass(frozen=True)
class AudioItem:
    """One thing to transcribe: a file, or a slice of it when a manifest gives offset/duration."""

    path: str
    offset: float = 0.0
    duration: float | None = None


def audio_suffixes() -> set[str]:
    """File endings of every format this soundfile build reads (wav, flac, ogg, mp3, ...)."""
    return {"." + name.lower() for name in soundfile.available_formats()} | {".oga", ".opus"}


def _manifest_items(path: Path) -> list[AudioItem]:
    # Transcription manifests need no `text` or `duration`; a given `duration` is always honoured (it
    # may cut a file short with or without an offset). Rows are read and checked as everywhere else.
    items = []
    for where, row in manifest_rows(path):
        audio = audio_path_field(row, where, path)
        offset = seconds_field(row, "offset", where) or 0.0
        duration = seconds_field(row, "duration", where, positive=True)
        items.append(AudioItem(str(audio), offset, duration))
    return items


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[AudioItem]:
    """Audio files as given, folders searched recursively for audio files, manifests read line by line."""
    suffixes = audio_suffixes()
    items: list[AudioItem] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            # Links that lead nowhere are listed too: they are reported and counted as skipped, not lost.
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and (p.is_file() or p.is_symlink()))
            if not found:
                raise InputError(f"{path}: no audio files ({', '.join(sorted(suffixes))}) in this folder")
            items.extend(AudioItem(str(p)) for p in found)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            if not path.is_file():
                raise InputError(f"{path}: manifest not found")
            items.extend(_manifest_items(path))
        elif not path.exists():  # a typo on the command line: say so before any work (manifest rows are skipped)
            raise InputError(f"{path}: file not found; check the path (give audio files, folders or .json manifests)")
        else:  # a broken audio file is reported and skipped at loading, like any bad file
            items.append(AudioItem(str(path)))
    if not items:
        raise InputError(f"{', '.join(str(raw) for raw in inputs)}: no inputs to transcribe (empty manifest?)")
    return items


@contextlib.contextmanager
def inference_settings(model: CTCModel) -> Iterator[None]:
    """Eval mode while transcribing; the model's own mode comes back afterwards, so transcribing in the
    middle of training changes nothing. (Feature padding, pad_to, needs no change: outputs are cut to
    each utterance's valid frames, which padding never alters.)"""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def frame_seconds(model: CTCModel) -> float:
    """Seconds per output frame (20 ms for QuartzNet)."""
    return model.preprocessor.hop_length * model.encoder.total_stride / model.preprocessor.sample_rate


def word_timestamps(best: Sequence[int], model: CTCModel, seconds_per_frame: float) -> list[dict[str, Any]]:
    """Words of the greedy path with their times: a word starts at the first frame of its first letter
    and ends after the last frame of its last one; the space label separates words."""
    vocabulary = model.vocabulary
    words: list[dict[str, Any]] = []
    letters: list[str] = []
    start = end = 0
    for token, first, stop in zip(*(t.tolist() for t in ctc_token_runs(torch.as_tensor(best), model.blank_id))):
        if vocabulary[token] == " ":
            if letters:
                words.append({"word": "".join(letters), "start": start, "end": end})
                letters = []
            continue
        if not letters:
            start = first
        letters.append(vocabulary[token])
        end = stop
    if letters:
        words.append({"word": "".join(letters), "start": start, "end": end})
    for word in words:
        word["start"] = round(word["start"] * seconds_per_frame, 3)
        word["end"] = round(word["end"] * seconds_per_frame, 3)
    return words


def _result(model: CTCModel, item: AudioItem, log_probs: torch.Tensor, timestamps: bool, decode: Decode) -> dict[str, Any]:
    """JSON row for one file from its (T', V+1) log-probs (valid frames only). Word times always come
    from the best path (greedy), whatever `decode` is."""
    length = torch.tensor([log_probs.shape[0]])
    row: dict[str, Any] = {"audio_filepath": item.path, "text": decode(log_probs.unsqueeze(0), length)[0]}
    if timestamps:
        row["words"] = word_timestamps(log_probs.argmax(-1).tolist(), model, frame_seconds(model))
    return row


def _seconds(item: AudioItem) -> float:
    """The item's length from the file header, without decoding (AudioError if unreadable)."""
    available = audio_duration(item.path) - item.offset
    return available if item.duration is None else min(item.duration, available)


def _check_finite(log_probs: torch.Tensor, item: AudioItem) -> None:
    if not bool(torch.isfinite(log_probs).all()):
        raise UserError(
            f"{item.path}: the model gave NaN/Inf log-probabilities (its audio was finite): the model is broken; "
            "check its weights (a diverged training run?) or use an earlier checkpoint"
        )


def iter_transcriptions(
    model: CTCModel,
    paths: Sequence[str | os.PathLike | AudioItem],
    batch_size: int = 16,
    timestamps: bool = False,
    chunk_seconds: float = 20.0,
    overlap_seconds: float = 2.0,
    progress: bool = False,
    errors: list[AudioError] | None = None,
    decode: Decode | None = None,
) -> Iterator[dict[str, Any]]:
    """`transcribe`, one row at a time: each `{"audio_filepath", "text"[, "words"]}` is yielded, in input
    order, as soon as its batch (or its chunked long file) is done, so a caller can write it at once.

    The model is in eval and inference mode only while it runs, never while the generator is suspended.
    Unreadable files (and ones whose samples are NaN/Inf) are skipped and their AudioError appended to
    `errors`; NaN/Inf log-probabilities from finite audio mean a broken model: a UserError naming the file.
    """
    decode = decode or model.decode
    if batch_size < 1 or chunk_seconds <= 0 or overlap_seconds < 0:
        raise ConfigError("batch_size must be >= 1, chunk_seconds > 0 and overlap_seconds >= 0")
    items = [p if isinstance(p, AudioItem) else AudioItem(str(p)) for p in paths]
    errors = [] if errors is None else errors
    sample_rate = model.preprocessor.sample_rate
    pending: list[tuple[AudioItem, torch.Tensor]] = []  # short files waiting for a full batch
    with tqdm(items, desc="transcribing", unit="file", disable=not progress, file=sys.stderr) as files:
        for item in files:
            try:
                seconds = _seconds(item)
                if seconds > chunk_seconds:
                    yield from _batch_rows(model, pending, timestamps, decode)  # keep the output in input order
                    yield _long_file_row(model, item, seconds, chunk_seconds, overlap_seconds, batch_size, timestamps,
                                         decode, progress)
                    continue
                audio = load_audio(item.path, sample_rate, offset=item.offset, duration=item.duration)
                if not bool(torch.isfinite(audio).all()):
                    raise AudioError(item.path, "holds NaN/Inf samples; the file is damaged")
            except AudioError as error:
                errors.append(error)
                continue
            pending.append((item, audio))
            if len(pending) == batch_size:
                yield from _batch_rows(model, pending, timestamps, decode)
        yield from _batch_rows(model, pending, timestamps, decode)


def _batch_rows(model: CTCModel, pending: list[tuple[AudioItem, torch.Tensor]], timestamps: bool,
                decode: Decode) -> list[dict[str, Any]]:
    """The rows of the short files in `pending` (emptied), run through the model together, padded:
    outputs do not depend on the padding."""
    if not pending:
        return []
    device = next(model.parameters()).device
    lengths = torch.tensor([audio.shape[0] for _, audio in pending], device=device)
    batch = torch.nn.utils.rnn.pad_sequence([audio for _, audio in pending], batch_first=True).to(device)
    rows = []
    with inference_settings(model), torch.inference_mode():
        log_probs, encoded_len, _ = model(input_signal=batch, input_signal_length=lengths)
        for row, (item, _) in enumerate(pending):
            valid = log_probs[row, :encoded_len[row]].cpu()
            _check_finite(valid, item)
            rows.append(_result(model, item, valid, timestamps, decode))
    pending.clear()
    return rows


def _long_file_row(model: CTCModel, item: AudioItem, seconds: float, chunk_seconds: float, overlap_seconds: float,
                   batch_size: int, timestamps: bool, decode: Decode, progress: bool) -> dict[str, Any]:
    """The row of a file longer than `chunk_seconds`, streamed from disk in overlapping chunks, with a bar
    of its own in seconds of audio."""
    sample_rate = model.preprocessor.sample_rate

    def blocks() -> Iterator[torch.Tensor]:
        return stream_audio(item.path, sample_rate, item.offset, item.duration)

    with tqdm(total=round(seconds), desc=Path(item.path).name, unit="s", leave=False, disable=not progress,
              file=sys.stderr, bar_format=LONG_FILE_BAR) as bar, inference_settings(model), torch.inference_mode():
        log_probs = chunked_log_probs(model, blocks, chunk_seconds, overlap_seconds, batch_size, advance=bar.update)
        _check_finite(log_probs, item)
        return _result(model, item, log_probs, timestamps, decode)


def transcribe(
    model: CTCModel,
    paths: Sequence[str | os.PathLike | AudioItem],
    batch_size: int = 16,
    timestamps: bool = False,
    chunk_seconds: float = 20.0,
    overlap_seconds: float = 2.0,
    progress: bool = False,
    errors: list[AudioError] | None = None,
    decode: Decode | None = None,
) -> list[dict[str, Any]]:
    """One `{"audio_filepath", "text"[, "words"]}` per readable input, in input order.

    `paths` are audio files (folders and manifests are expanded by `expand_inputs`). Unreadable files are
    skipped; pass a list as `errors` to receive their AudioError (path and reason). Files longer than
    `chunk_seconds` go through `chunked_log_probs` with `overlap_seconds` of context on each side.
    `decode` turns log-probs into text: the model's greedy decoding unless given (e.g. a
    `quartznet.decoding.BeamSearchDecoder(...).decode`). `iter_transcriptions` yields the same rows one
    at a time.
    """
    return list(iter_transcriptions(model, paths, batch_size=batch_size, timestamps=timestamps,
                                    chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
                                    progress=progress, errors=errors, decode=decode))


def transcribe_texts(model: CTCModel, paths: Sequence[str | os.PathLike], batch_size: int = 4, **options: Any) -> list[str]:
    """Greedy texts of audio files, in order (what NeMo's `model.transcribe(paths)` returns); an unreadable
    file raises its AudioError. `options` go to `transcribe` (chunk_seconds, overlap_seconds, ...)."""
    errors: list[AudioError] = []
    rows = transcribe(model, paths, batch_size=batch_size, errors=errors, **options)
    if errors:  # a list of texts has no place for a missing one: fail rather than shift the others
        raise errors[0]
    return [row["text"] for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transcribe", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a CTC model: .nemo or Lightning .ckpt")
    parser.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or .json/.jsonl manifests")
    parser.add_argument("--batch-size", type=at_least(1), default=16)
    parser.add_argument("--timestamps", action="store_true", help="add word start/end times in seconds")
    parser.add_argument("--output", help="write JSON lines here (streamed to OUTPUT.partial, renamed when done) "
                                         "instead of printing them")
    parser.add_argument("--chunk-seconds", type=at_least(0, float, strictly=True), default=20.0,
                        help="longer files are transcribed in chunks")
    parser.add_argument("--overlap-seconds", type=at_least(0, float), default=2.0,
                        help="context on each side of a chunk")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    beam = parser.add_argument_group("beam search (docs/recipes.md); greedy unless --beam-size or --lm is given")
    beam.add_argument("--beam-size", type=at_least(1), help="beams to keep (default 32 once beam search is on)")
    beam.add_argument("--lm", help="KenLM n-gram (ARPA or binary), e.g. from python -m data_prep.build_lm")
    beam.add_argument("--lexicon", help="lexicon file: only its words are output (python -m quartznet.decoding lexicon)")
    beam.add_argument("--lm-weight", type=float, default=0.5)
    beam.add_argument("--word-score", type=float, default=0.0)
    args = parser.parse_args(argv)

    state: dict[str, Any] = {"done": 0, "total": 0, "where": None}

    def interrupted() -> str:
        if state["where"] is None:
            return "interrupted before transcribing began; nothing was written"
        return (f"interrupted after {state['done']} of {state['total']} inputs; "
                f"finished rows are in {state['where']}")

    with user_errors(args.debug, interrupted=interrupted, also=(AudioError,)):
        return _run(args, state)


def _run(args: argparse.Namespace, state: dict[str, Any]) -> int:
    # Everything that can be checked without the model is checked first: a mistake costs no loading time.
    device = resolve_device(args.device)
    items = expand_inputs(args.inputs)
    state["total"] = len(items)
    for option, value in (("--lm", args.lm), ("--lexicon", args.lexicon)):
        if value is not None and not Path(value).is_file():
            raise UserError(f"{option} {value}: file not found (an LM: python -m data_prep.build_lm; "
                            "a lexicon: python -m quartznet.decoding lexicon)")
    # An output is never one of the inputs: the model, a manifest, an audio file, the LM or lexicon.
    inputs = [args.model, *args.inputs, *(item.path for item in items), args.lm, args.lexicon]
    if args.output:
        check_rows_output(args.output, inputs)

    from quartznet.decoding import make_decoder
    from quartznet.tasks import (
        load_transcriber,  # here, so `--help` does not pay for importing Lightning
    )

    model = load_transcriber(args.model).to(device)
    beam = args.beam_size or args.lm or args.lexicon
    decode = make_decoder(model, "beam" if beam else "greedy", beam_size=args.beam_size or 32, lm_path=args.lm,
                          lexicon_path=args.lexicon, lm_weight=args.lm_weight, word_score=args.word_score,
                          options="--beam-size/--lm/--lexicon")

    errors: list[AudioError] = []
    reported = 0

    def report_skipped() -> None:
        nonlocal reported
        for error in errors[reported:]:
            print(f"skipped {error.path}: {error.reason}", file=sys.stderr)
        reported = len(errors)

    rows = iter_transcriptions(model, items, batch_size=args.batch_size, timestamps=args.timestamps,
                               chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds,
                               progress=True, errors=errors, decode=decode)
    output = JsonLinesOutput(args.output) if args.output else StdoutRows()
    state["where"] = output.where
    try:
        for row in rows:
            output.write(row)
            state["done"] = output.rows + len(errors)
            report_skipped()
        state["done"] = output.rows + len(errors)
        report_skipped()
    except BaseException:
        rows.close()  # ends the progress bars now, so the error line comes after them
        output.keep_partial()
        raise
    summary = f"transcribed {output.rows} of {len(items)} inputs ({len(errors)} skipped)"
    if not output.rows:
        output.discard()  # nothing to keep, and an existing output stays as it was
        raise UserError(f"{summary}: no input could be read (see the skipped lines above)")
    output.commit()
    print(summary + output.written_note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

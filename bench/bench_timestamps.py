"""Word timestamps against the known speech boundaries of the synthetic ASR corpus.

    .venv/bin/python bench/bench_timestamps.py --model runs/demo_asr/model.nemo --corpus data/synthetic_asr

The corpus generator knows where each sentence's speech starts and ends: after its leading pause,
plus espeak-ng's own short silences, which are found here on a fresh clean synthesis of the same
utterance (first and last sample above 1% of the peak). This compares the first word's start and
the last word's end from `transcribe(..., timestamps=True)` with those boundaries.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from data_prep.engines import espeak_version, synthesise
from data_prep.rendering import SAMPLE_RATE, finish
from data_prep.synthetic import CORPUS_FILE, plan_asr
from quartznet.tasks import load_model
from quartznet.transcribe import transcribe


def speech_bounds(utterance) -> tuple[float, float]:
    """Seconds from the file's start to the first and past the last audible sample of the speech."""
    clean = finish(synthesise(utterance), utterance)
    audible = np.flatnonzero(np.abs(clean) > 0.01 * np.abs(clean).max())
    pause = round(utterance.leading_pause * SAMPLE_RATE)
    return (pause + audible[0]) / SAMPLE_RATE, (pause + audible[-1] + 1) / SAMPLE_RATE


def summary(errors: list[float]) -> str:
    absolute = sorted(abs(e) for e in errors)
    within = lambda limit: 100 * sum(e <= limit for e in absolute) / len(absolute)  # noqa: E731
    return (f"median {statistics.median(errors):+.3f} s, median |error| {statistics.median(absolute):.3f} s, "
            f"90th percentile |error| {absolute[int(0.9 * (len(absolute) - 1))]:.3f} s, "
            f"within 0.05 s {within(0.05):.0f}%, within 0.1 s {within(0.1):.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True, help="folder made by python -m data_prep.synthetic asr")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"])
    args = parser.parse_args()
    corpus = Path(args.corpus)
    record = json.loads((corpus / CORPUS_FILE).read_text(encoding="utf-8"))
    if record["espeak_ng"] != espeak_version():
        raise SystemExit(f"{corpus} was made with espeak-ng {record['espeak_ng']}, this is {espeak_version()}: "
                         "the boundaries would not be the corpus's")
    settings = record["settings"]
    utterances, _ = plan_asr(corpus.absolute(), settings["seed"], settings["sizes"], settings["min_words"],
                             settings["max_words"], settings["accents"])
    chosen = [u for u in utterances if f"{Path(u.path).parent.parent.parent.name}" == args.split]
    rows = transcribe(load_model(args.model), [u.path for u in chosen], timestamps=True, progress=True)
    starts, ends = [], []
    for utterance, row in zip(chosen, rows, strict=True):
        if row["words"]:
            start, end = speech_bounds(utterance)
            starts.append(row["words"][0]["start"] - start)
            ends.append(row["words"][-1]["end"] - end)
    print(f"{len(starts)} of {len(chosen)} {args.split} utterances with words")
    print(f"first word start - speech start: {summary(starts)}")
    print(f"last word end - speech end:      {summary(ends)}")


if __name__ == "__main__":
    main()

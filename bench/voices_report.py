"""WER and CER per synthesis engine and per voice, from an evaluation of a many-voice synthetic corpus.

    .venv/bin/python bench/voices_report.py runs/demo_asr_voices/evaluation/predictions.json data/voices_asr/corpus.json

evaluate.py writes predictions.json (one row per utterance, with its audio path, reference and
hypothesis); data_prep.synthetic writes corpus.json (speaker id -> engine, voice, person). The speaker
id is the first folder under the split in the LibriSpeech layout (.../<split>/<speaker>/<chapter>/...).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from quartznet.common.metrics import ErrorCounts, utterance_errors


def speaker_of(audio_filepath: str) -> str:
    return Path(audio_filepath).parent.parent.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("corpus", type=Path)
    args = parser.parse_args()
    speakers = json.loads(args.corpus.read_text())["speakers"]
    by_engine: dict[str, ErrorCounts] = defaultdict(ErrorCounts)
    by_voice: dict[str, ErrorCounts] = defaultdict(ErrorCounts)
    counts: dict[str, int] = defaultdict(int)
    for line in args.predictions.read_text().splitlines():
        row = json.loads(line)
        speaker = speakers[speaker_of(row["audio_filepath"])]
        engine = speaker.get("engine", "espeak")
        voice = f"{engine}:{speaker['voice']}{'/' + speaker['variant'] if speaker.get('variant') else ''}"
        errors = utterance_errors(row["text"], row["pred_text"])
        by_engine[engine] = by_engine[engine] + errors
        by_voice[voice] = by_voice[voice] + errors
        counts[engine] += 1
    print("| engine | utterances | WER | CER |")
    for engine, errors in sorted(by_engine.items()):
        print(f"| {engine} | {counts[engine]} | {100 * errors.wer:.1f}% | {100 * errors.cer:.1f}% |")
    print("| voice | WER | CER |")
    for voice, errors in sorted(by_voice.items()):
        print(f"| {voice} | {100 * errors.wer:.1f}% | {100 * errors.cer:.1f}% |")


if __name__ == "__main__":
    main()

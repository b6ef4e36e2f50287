"""Long audio: chunked transcription against whole-file decoding on one long recording, and peak memory.

    .venv/bin/python bench/bench_long_audio.py --model runs/demo_asr/model.nemo \
        --manifest data/synthetic_asr/test.json --minutes 10

The recording is the manifest's utterances played one after another (0.2 s apart) until it is
`--minutes` long. Each mode runs in its own process so that its peak resident memory (ru_maxrss) is
its own: whole-file decoding, then chunks of 20 s (and 60 s) with 2 s of context on each side.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import soundfile
import torch

from quartznet.data.audio import load_audio
from quartznet.data.manifest import read_manifests

SAMPLE_RATE = 16000
WHOLE_FILE = 1e9  # a chunk longer than any recording: one piece


def build_recording(manifest: str, minutes: float, out: Path) -> float:
    entries = read_manifests(manifest)
    pieces, total, index = [], 0, 0
    while total < minutes * 60 * SAMPLE_RATE:
        wave = load_audio(entries[index % len(entries)].audio_filepath)
        pieces += [wave, torch.zeros(SAMPLE_RATE // 5)]
        total += wave.shape[0] + SAMPLE_RATE // 5
        index += 1
    audio = torch.cat(pieces)
    soundfile.write(out, audio.numpy(), SAMPLE_RATE)
    return audio.shape[0] / SAMPLE_RATE


def run_one(model_path: str, audio: str, chunk_seconds: float) -> None:
    """Child process: transcribe once, print text, seconds and peak RSS as JSON."""
    from quartznet.tasks import load_model
    from quartznet.transcribe import transcribe

    torch.set_num_threads(2)
    model = load_model(model_path)
    start = time.perf_counter()
    text = transcribe(model, [audio], chunk_seconds=chunk_seconds)[0]["text"]
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"text": text, "seconds": seconds, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--child", nargs=2, metavar=("AUDIO", "CHUNK_SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.model, args.child[0], float(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as folder:
        audio = Path(folder) / "long.wav"
        duration = build_recording(args.manifest, args.minutes, audio)
        results = {}
        for name, chunk in (("whole file", WHOLE_FILE), ("60 s chunks", 60.0), ("20 s chunks", 20.0)):
            output = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--manifest", args.manifest, "--child", str(audio), str(chunk)],
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            results[name] = json.loads(output)
    whole = results["whole file"]["text"]
    print(f"recording: {duration / 60:.1f} min, {len(whole.split())} words decoded whole")
    for name, result in results.items():
        difference = jiwer.wer(whole, result["text"]) if name != "whole file" else 0.0
        print(f"{name:12s}: {result['seconds']:6.1f} s, peak RSS {result['peak_mb']:6.0f} MB, "
              f"WER against whole-file output {100 * difference:.2f}%")


if __name__ == "__main__":
    main()

"""Peak memory of `load_audio` resampling a 2.8 s clip to 16 kHz, per native sample rate.

Each rate runs in a fresh subprocess, so its peak RSS (`ru_maxrss`) is that rate's alone and no kernel
cached for another rate is counted. `--reference torchaudio-exact` swaps in what `load_audio` used before
issue 10 (torchaudio.transforms.Resample for the exact rate pair, cached 16 deep) for a before/after table
from the same checkout.

The exact kernel for rate pairs with a small gcd is huge (16000 x 44135 float64 intermediates for
44101 Hz), so each child runs under an address-space cap (RLIMIT_AS, `--memory-cap-gib`) and reports a
refused allocation instead of pushing a shared machine into swap or the OOM killer.

    .venv/bin/python bench/bench_resample.py [--reference torchaudio-exact] [--rates 8000 8001 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATES = (8000, 8001, 11025, 22050, 44100, 44101, 48000)
SECONDS = 2.8
TARGET = 16000


def child(rate: int, reference: str | None, cap_gib: float, threads: int) -> dict:
    """Runs in the subprocess: import, write the clip, load it once; returns the measurements."""
    if cap_gib > 0:
        cap = int(cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import functools

    import numpy as np
    import soundfile
    import torch
    import torchaudio

    torch.set_num_threads(threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from quartznet.data import audio

    if reference == "torchaudio-exact":  # the loader before issue 10: exact pair, 16 cached
        audio.resampler = functools.lru_cache(maxsize=16)(torchaudio.transforms.Resample)
    time_axis = np.arange(int(round(SECONDS * rate))) / rate
    clip = (0.3 * np.sin(2 * np.pi * 440.0 * time_axis)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        soundfile.write(path, clip, rate, subtype="FLOAT")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        try:
            wave = audio.load_audio(path, TARGET)
        except (MemoryError, RuntimeError) as error:  # RLIMIT_AS: allocation refused
            return {"rate": rate, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:80]}",
                    "baseline_mb": before, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        seconds = time.perf_counter() - start
    kernel = audio.resampler(rate, TARGET).kernel
    return {"rate": rate, "samples": wave.numel(), "expected": round(SECONDS * TARGET), "seconds": seconds,
            "kernel_numel": kernel.numel(), "kernel_mb": kernel.numel() * kernel.element_size() / 2**20,
            "baseline_mb": before, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", choices=["torchaudio-exact"], default=None,
                        help="measure the pre-issue-10 resampler instead of the current one")
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--memory-cap-gib", type=float, default=12.0, help="RLIMIT_AS per child (0: none)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per child (1: as in a DataLoader worker, and steadier timings)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.reference, args.memory_cap_gib, args.threads)))
        return
    label = args.reference or "quartznet.data.audio.resampler"
    print(f"resampler: {label}; {SECONDS} s clip -> {TARGET} Hz; one subprocess per rate; "
          f"{args.threads} torch thread(s); RLIMIT_AS {args.memory_cap_gib:g} GiB\n")
    print("| native rate | output samples (expected) | kernel elements (MiB) | load_audio time | "
          "peak RSS | over import baseline |")
    print("|---|---|---|---|---|---|")
    for rate in args.rates:
        command = [sys.executable, __file__, "--child", str(rate), "--memory-cap-gib", str(args.memory_cap_gib),
                   "--threads", str(args.threads)]
        if args.reference:
            command += ["--reference", args.reference]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:80]
            print(f"| {rate} Hz | failed (exit {done.returncode}: {tail}) | | | | |", flush=True)
            continue
        row = json.loads(lines[-1])
        if "error" in row:
            print(f"| {rate} Hz | refused over the {args.memory_cap_gib:g} GiB cap ({row['error']}) | | | "
                  f"> {row['peak_mb']:.0f} MB | |", flush=True)
            continue
        print(f"| {rate} Hz | {row['samples']} ({row['expected']}) | {row['kernel_numel']:,} "
              f"({row['kernel_mb']:.2f}) | {row['seconds'] * 1000:.0f} ms | {row['peak_mb']:.0f} MB | "
              f"+{row['peak_mb'] - row['baseline_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()

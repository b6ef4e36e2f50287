"""Data loading throughput: utterances/s and audio-seconds/s, per DataLoader worker, from a manifest and from shards.

    .venv/bin/python bench/bench_data.py [--utterances 400] [--workers 0 1 2] [--epochs 3] [--json out.json]

The corpus is generated (not speech): 16 kHz mono FLAC, durations drawn from a seeded
LibriSpeech-like distribution (1-16.7 s, mean ~12.7 s), each a harmonic tone with a syllable-rate
envelope plus faint noise, so FLAC compresses it roughly as it does speech. Decoding cost depends
on the format and length, not on what is said. Manifest path: AudioToCharDataset +
DurationBucketSampler + collate_asr; the same with speed perturbation in the workers (per utterance,
0.85-1.15, resampling: quartznet.network.wave_augment.WaveformAugmentation); shard path: ShardDataset
(512-utterance shuffle buffer). The capacity summary turns audio seconds per CPU second into the
cores that keep one GPU consuming --gpu-rate audio s/s (an A100 trains QuartzNet 15x5 on ~1,000:
~89 utterances/s with AMP in NVIDIA's DeepLearningExamples, times ~12 s per LibriSpeech utterance).
Each figure is the median over `--epochs` full epochs, worker start-up included; audio seconds
per CPU second counts the CPU time of the main process and the workers. The padding
table compares DurationBucketSampler with random batching on the same synthetic distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader

from quartznet.network.wave_augment import WaveformAugmentation
from quartznet.data.datasets import AudioToCharDataset, collate_asr
from quartznet.data.manifest import write_manifest
from quartznet.data.sampler import DurationBucketSampler, padding_fraction
from quartznet.data.shards import ShardDataset, write_shards
from quartznet.network.heads import LABELS
from quartznet.network.wave_augment import BatchWaveformAugmentation

RATE = 16000


def librispeech_like_durations(count: int, seed: int = 0) -> np.ndarray:
    """Synthetic, skewed toward long like train-clean-100: 16.8 s minus a gamma(1.5, 2.7) tail, clipped to 1-16.7 s."""
    return np.clip(16.8 - np.random.default_rng(seed).gamma(1.5, 2.7, count), 1.0, 16.7)


def generate_corpus(folder: Path, count: int) -> tuple[Path, float]:
    rng = np.random.default_rng(0)
    rows, total = [], 0.0
    for i, seconds in enumerate(librispeech_like_durations(count)):
        t = np.arange(int(seconds * RATE)) / RATE
        pitch = rng.uniform(90, 220)
        voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.3))
        wave = 0.1 * voice * envelope + 0.003 * rng.standard_normal(len(t))
        name = f"utt{i:05d}.flac"
        soundfile.write(folder / name, wave.astype(np.float32), RATE)
        rows.append({"audio_filepath": name, "duration": len(t) / RATE, "text": "a generated utterance"})
        total += len(t) / RATE
    return write_manifest(folder / "manifest.json", rows), total


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_epochs(make_loader, epochs: int) -> tuple[float, float, int, float]:
    """Medians of (wall seconds, CPU seconds) per epoch, then utterances and audio seconds per epoch.

    CPU seconds (all processes) make a figure that holds on a busy machine, where wall time does not.
    """
    times, cpu, utterances, seconds = [], [], 0, 0.0
    for _ in range(epochs):
        loader = make_loader()
        utterances, seconds = 0, 0.0
        start, start_cpu = time.perf_counter(), cpu_seconds()
        for batch in loader:
            utterances += batch.size
            seconds += batch.audio_len.sum().item() / RATE
        del loader  # joins non-persistent workers, so their CPU time is counted
        times.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - start_cpu)
    return statistics.median(times), statistics.median(cpu), utterances, seconds


def batched_speed_cost(dataset: AudioToCharDataset, batch_size: int) -> dict:
    """Audio seconds per CPU second of speed perturbation done once per padded batch on the model's
    device (BatchWaveformAugmentation, here on the CPU), the decoding excluded: its cost beside the table's."""
    augment = BatchWaveformAugmentation(speed_prob=1.0, min_speed=0.85, max_speed=1.15)
    batches = list(DataLoader(dataset, batch_sampler=DurationBucketSampler(dataset.durations, batch_size, num_replicas=1,
                                                                            rank=0), collate_fn=collate_asr))
    audio_seconds = sum(batch.audio_len.sum().item() for batch in batches) / RATE
    start = time.process_time()
    for index, batch in enumerate(batches):
        augment(batch.audio, batch.audio_len, torch.Generator().manual_seed(index))
    cpu = time.process_time() - start
    print(f"speed perturbation batched on the device (CPU here): {audio_seconds / cpu:.0f} audio s per CPU s")
    return {"source": "speed perturbation batched on the model's device (CPU), decoding excluded",
            "audio_s_per_cpu_s": audio_seconds / cpu}


def padding_table(batch_size: int) -> list[dict]:
    durations = librispeech_like_durations(28539)  # train-clean-100's utterance count
    order = np.random.default_rng(0).permutation(len(durations))
    rows = [{"batching": "random", "padding": padding_fraction(
        [order[i : i + batch_size] for i in range(0, len(order), batch_size)], durations)}]
    for buckets in (5, 10, 30, 100):
        sampler = DurationBucketSampler(durations, batch_size, num_buckets=buckets, num_replicas=1, rank=0)
        rows.append({"batching": f"DurationBucketSampler, {buckets} buckets", "padding": padding_fraction(list(sampler), durations)})
    stats = {"count": len(durations), "mean": durations.mean(), "median": float(np.median(durations)),
             "min": durations.min(), "max": durations.max()}
    print(f"durations (synthetic): {stats['count']} utterances, mean {stats['mean']:.2f} s, "
          f"median {stats['median']:.2f} s, {stats['min']:.1f}-{stats['max']:.1f} s; batch {batch_size}")
    for row in rows:
        print(f"| {row['batching']} | {100 * row['padding']:.1f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--gpu-rate", type=float, default=1000.0, help="audio s/s one GPU consumes (default: 1000)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    results = {"padding": padding_table(args.batch_size), "throughput": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest, total = generate_corpus(folder, args.utterances)
        write_shards(manifest, folder / "shards", shard_size=64, progress=False)
        print(f"corpus: {args.utterances} generated FLAC utterances, {total / 3600:.2f} h")
        dataset = AudioToCharDataset(manifest, LABELS)
        speed = WaveformAugmentation(speed_prob=1.0, min_speed=0.85, max_speed=1.15)
        perturbed = AudioToCharDataset(manifest, LABELS, waveform_transform=speed)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print("| source | workers | utterances/s | audio s/s | utterances/s per worker | audio s/s per worker | audio s per CPU s |")
        for workers in args.workers:
            sources = {
                "manifest": lambda: DataLoader(
                    dataset, batch_sampler=DurationBucketSampler(dataset.durations, args.batch_size, num_replicas=1, rank=0),
                    num_workers=workers, collate_fn=collate_asr),
                "manifest + speed perturbation": lambda: DataLoader(
                    perturbed, batch_sampler=DurationBucketSampler(dataset.durations, args.batch_size, num_replicas=1, rank=0),
                    num_workers=workers, collate_fn=collate_asr),
                "shards": lambda: ShardDataset(None, LABELS, args.batch_size, index=folder / "shards", num_workers=workers,
                                               rank=0, world_size=1).loader(persistent_workers=False),
            }
            for source, make_loader in sources.items():
                seconds, cpu, utterances, audio = time_epochs(make_loader, args.epochs)
                per = max(workers, 1)
                row = {"source": source, "workers": workers, "utterances_per_s": utterances / seconds,
                       "audio_s_per_s": audio / seconds, "audio_s_per_cpu_s": audio / cpu, "epoch_s": seconds,
                       "cpu_s": cpu, "utterances": utterances}
                results["throughput"].append(row)
                print(f"| {source} | {workers} | {row['utterances_per_s']:.0f} | {row['audio_s_per_s']:.0f} | "
                      f"{row['utterances_per_s'] / per:.0f} | {row['audio_s_per_s'] / per:.0f} | {row['audio_s_per_cpu_s']:.0f} |")
        results["device_speed"] = batched_speed_cost(dataset, args.batch_size)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"| source | audio s per CPU s (best) | CPU cores per GPU at {args.gpu_rate:.0f} audio s/s |")
    for source in dict.fromkeys(row["source"] for row in results["throughput"]):
        best = max(row["audio_s_per_cpu_s"] for row in results["throughput"] if row["source"] == source)
        results.setdefault("capacity", []).append({"source": source, "audio_s_per_cpu_s": best,
                                                   "cores_per_gpu": args.gpu_rate / best})
        print(f"| {source} | {best:.0f} | {args.gpu_rate / best:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()

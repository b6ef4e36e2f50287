"""QuartzNet 15x5 on a GPU: training throughput per precision and conv layout, inference RTF, peak memory.

    python bench/bench_gpu.py [--device cuda] [--batch 32] [--seconds 15] [--runs 10] [--json out.json]
    python bench/bench_gpu.py --device cpu --model quartznet_small --batch 2 --seconds 2 --runs 1 --warmup 1  # dry run

Training: a batch of `--batch` utterances of `--seconds` s (LibriSpeech's longest are ~16.7 s), forward
(features, encoder, head) + CTC loss + backward + NovoGrad step, at fp32, bf16-mixed and fp16-mixed
(with a GradScaler), for each conv layout of quartznet.network.blocks (channels-last height-1 conv2d,
plain conv1d). Before timing, the layouts' log-probs are compared on one input. Inference: batch 1 and
16 of 10 s, fp32 and the half precision the device runs fastest. Augmentation: the training batch through
model.waveform_augment with every component on (speed, tempo, shift, room, noise, band limit, codec,
gain), the cost the model's device pays instead of the data workers. Medians of `--runs` after `--warmup`.
Inputs are seeded noise: speed does not depend on what is said. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from quartznet.models import CTCModel
from quartznet.network.blocks import CONV_LAYOUTS, set_conv_layout
from quartznet.network.heads import ctc_loss
from quartznet.network.wave_augment import COMPONENTS, BatchWaveformAugmentation
from quartznet.optim.novograd import NovoGrad

SAMPLE_RATE = 16000
MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"
PRECISIONS = {"fp32": None, "bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], None], device: torch.device, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def layouts_agree(model: CTCModel, device: torch.device) -> float:
    """Largest |log-prob| difference between the conv layouts on one fp32 batch of 3 s."""
    model.eval()
    audio = torch.randn(2, 3 * SAMPLE_RATE, generator=torch.Generator().manual_seed(1)).to(device) * 0.1
    lengths = torch.tensor([audio.shape[1], audio.shape[1] // 2], device=device)
    outputs = []
    with torch.inference_mode():
        for layout in CONV_LAYOUTS:
            set_conv_layout(model, layout)
            log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
            outputs.append([log_probs[row, :n] for row, n in enumerate(encoded_len.tolist())])
    return max((a - b).abs().max().item() for a, b in zip(*outputs))


def bench_training(model: CTCModel, device: torch.device, dtype: torch.dtype | None, batch: int, seconds: float,
                   warmup: int, runs: int) -> dict:
    model.train()
    generator = torch.Generator().manual_seed(0)
    audio = (torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator) * 0.1).to(device)
    lengths = torch.full((batch,), audio.shape[1], device=device)
    characters = int(14 * seconds)  # ~14 characters per second, LibriSpeech-like
    targets = torch.randint(0, model.blank_id, (batch, characters), generator=generator).to(device)
    target_len = torch.full((batch,), characters, device=device)
    optimizer = NovoGrad(model.parameters(), lr=0.01, betas=(0.8, 0.5), weight_decay=0.001)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    losses = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
        loss = ctc_loss(log_probs, encoded_len, targets, target_len, model.blank_id)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())

    reset_peak(device)
    median = median_seconds(step, device, warmup, runs)
    return {
        "step_s": median, "audio_s_per_s": batch * seconds / median, "utterances_per_s": batch / median,
        "peak_mib": peak_mib(device), "losses_finite": bool(torch.isfinite(torch.stack(losses)).all()),
    }


def bench_inference(model: CTCModel, device: torch.device, dtype: torch.dtype | None, batch: int,
                    warmup: int, runs: int) -> dict:
    model.eval()
    seconds = 10.0
    audio = (torch.randn(batch, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0)) * 0.1).to(device)
    lengths = torch.full((batch,), audio.shape[1], device=device)

    def step() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(input_signal=audio, input_signal_length=lengths)

    reset_peak(device)
    median = median_seconds(step, device, warmup, runs)
    return {"batch": batch, "median_s": median, "rtf": median / (batch * seconds), "peak_mib": peak_mib(device)}


def bench_augmentation(device: torch.device, batch: int, seconds: float, warmup: int, runs: int) -> dict:
    """Every waveform augmentation on one padded batch, on `device`."""
    augment = BatchWaveformAugmentation(**{f"{name}_prob": 1.0 for name in COMPONENTS})
    audio = (torch.randn(batch, int(seconds * SAMPLE_RATE)) * 0.1).to(device)
    lengths = torch.full((batch,), audio.shape[1], device=device)

    def step() -> None:
        augment(audio, lengths)

    median = median_seconds(step, device, warmup, runs)
    return {"median_s": median, "audio_s_per_s": batch * seconds / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="quartznet_15x5", help="a config in conf/model/ (default: quartznet_15x5)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; run on a GPU machine or pass --device cpu for a dry run")
    torch.manual_seed(0)
    model = CTCModel(OmegaConf.load(MODELS / f"{args.model}.yaml")).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    results: dict = {"device": name, "torch": torch.__version__, "model": args.model, "parameters": model.num_weights,
                     "batch": args.batch, "seconds": args.seconds, "layout_max_abs_diff": layouts_agree(model, device),
                     "training": {}, "inference": {}}
    print(f"{args.model} on {name}, torch {torch.__version__}; layouts agree to {results['layout_max_abs_diff']:.2e}")
    print(f"training, batch {args.batch} x {args.seconds:g} s:")
    for layout in CONV_LAYOUTS:
        set_conv_layout(model, layout)
        for precision, dtype in PRECISIONS.items():
            if dtype is torch.float16 and device.type != "cuda":
                continue  # fp16 autocast with a grad scaler is a GPU recipe
            row = bench_training(model, device, dtype, args.batch, args.seconds, args.warmup, args.runs)
            results["training"][f"{layout}/{precision}"] = row
            memory = f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] is not None else ""
            print(f"  {layout:17s} {precision:10s} {row['step_s']:.3f} s/step, {row['audio_s_per_s']:.0f} audio-s/s, "
                  f"{row['utterances_per_s']:.1f} utt/s{memory}, losses finite: {row['losses_finite']}")
    fastest = min(results["training"], key=lambda key: results["training"][key]["step_s"])
    set_conv_layout(model, fastest.split("/")[0])
    print(f"inference, 10 s utterances, layout {fastest.split('/')[0]}:")
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    for batch in (1, 16):
        for precision, dtype in (("fp32", None), ("half", half)):
            row = bench_inference(model, device, dtype, batch, args.warmup, args.runs)
            results["inference"][f"batch{batch}/{precision}"] = row
            memory = f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] is not None else ""
            print(f"  batch {batch:2d} {precision:5s} {row['median_s'] * 1000:.1f} ms, RTF {row['rtf']:.5f}{memory}")
    results["augmentation"] = bench_augmentation(device, args.batch, args.seconds, args.warmup, args.runs)
    print(f"waveform augmentation, every component, batch {args.batch} x {args.seconds:g} s: "
          f"{results['augmentation']['median_s'] * 1000:.1f} ms, {results['augmentation']['audio_s_per_s']:.0f} audio-s/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

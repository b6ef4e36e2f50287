"""QuartzNet speed on this machine: inference real-time factor and one training step.

    .venv/bin/python bench/bench_model.py [--model quartznet_15x5] [--precision fp32|bf16] [--threads 2] [--runs 10]
        [--json out.json]

`--model` names a config of conf/model/ (quartznet_slim: the `make demo` model; quartznet_deep: the
`make demo-voices` one).

Inference: batch 1 x 10 s of audio, features included, eval mode, torch.inference_mode().
Training: batch 4 x 5 s, forward (features, encoder, head) + CTC loss + backward + NovoGrad step.
`--precision bf16` runs both forwards under CPU bf16 autocast, as `trainer.precision=bf16-mixed` and
`evaluate.py amp=true` do (features, squeeze-excitation and the CTC loss stay fp32); it pays only on CPUs
with native bf16 (AMX or AVX512-BF16, `quartznet.common.hardware`).
Each is the median of `--runs` timed runs after `--warmup` untimed ones. Inputs are seeded noise:
speed does not depend on what is said. Results go in docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from quartznet.models import CTCModel
from quartznet.network.heads import ctc_loss
from quartznet.optim.novograd import NovoGrad
from quartznet.tasks.evaluation import autocast_context

SAMPLE_RATE = 16000
PRECISIONS = ("fp32", "bf16")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def model_config(name: str):
    """The `model` section of conf/model/<name>.yaml, its defaults list applied."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("train", overrides=[f"model={name}"]).model


def median_seconds(step, warmup: int, runs: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """CPU bf16 autocast for "bf16", as evaluate.py amp=true runs it; nothing for "fp32"."""
    return autocast_context(torch.device("cpu"), enabled=precision == "bf16")


def bench_inference(model: CTCModel, seconds: float, warmup: int, runs: int, precision: str = "fp32") -> dict:
    model.eval()
    audio = torch.randn(1, int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0)) * 0.1
    lengths = torch.tensor([audio.shape[1]])

    def step():
        with torch.inference_mode(), autocast(precision):
            model(input_signal=audio, input_signal_length=lengths)

    median, times = median_seconds(step, warmup, runs)
    return {"batch": 1, "audio_s": seconds, "median_s": median, "rtf": median / seconds, "runs_s": times}


def bench_training_step(
    model: CTCModel, batch: int, seconds: float, warmup: int, runs: int, precision: str = "fp32"
) -> dict:
    model.train()
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, int(seconds * SAMPLE_RATE), generator=generator) * 0.1
    lengths = torch.full((batch,), audio.shape[1])
    target_len = torch.full((batch,), 70)  # ~14 characters per second, LibriSpeech-like
    targets = torch.randint(0, model.blank_id, (batch, 70), generator=generator)
    optimizer = NovoGrad(model.parameters(), lr=0.01, betas=(0.8, 0.5), weight_decay=0.001)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
        loss = ctc_loss(log_probs, encoded_len, targets, target_len, model.blank_id)
        loss.backward()
        optimizer.step()

    median, times = median_seconds(step, warmup, runs)
    return {"batch": batch, "audio_s": seconds, "median_s": median, "runs_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="quartznet_15x5", help="a config of conf/model/ (default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CTCModel(model_config(args.model))
    results = {
        "model": args.model,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}",
        "parameters": model.num_weights,
        "precision": args.precision,
        "inference_1x10s": bench_inference(model, 10.0, args.warmup, args.runs, args.precision),
        "train_step_4x5s": bench_training_step(
            model, 4, 5.0, max(1, args.warmup - 1), max(3, args.runs // 2), args.precision
        ),
    }
    inference, training = results["inference_1x10s"], results["train_step_4x5s"]
    print(f"{args.model} ({results['parameters']:,} parameters), {results['machine']}")
    print(f"inference 1 x 10 s, {args.precision}: {inference['median_s'] * 1000:.0f} ms median, RTF {inference['rtf']:.4f}")
    print(f"training step 4 x 5 s, {args.precision} (fwd + CTC + bwd + NovoGrad): {training['median_s']:.3f} s median")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

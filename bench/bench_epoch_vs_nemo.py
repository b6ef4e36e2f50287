"""One training epoch of quartznet_small, quartznet against NVIDIA NeMo, on the same corpus and CPU threads.

    .venv/bin/python bench/bench_epoch_vs_nemo.py compare --manifest data/synthetic_asr/train.json \
        --nemo-python /tmp/nemo/.venv/bin/python [--runs 3] [--speed] [--num-buckets 32] \
        [--precision bf16-mixed] [--json out.json]

NeMo lives in its own virtual environment (it pins other versions of Lightning and friends), e.g.
    uv venv /tmp/nemo/.venv && uv pip install -p /tmp/nemo/.venv/bin/python "nemo_toolkit[asr]>=3.0,<3.1" \
        resampy torch==2.11.0 torchaudio==2.11.0
`compare` runs the two alternately, each epoch in a fresh process, and prints the medians.

Both train the same network: conf/model/quartznet_small.yaml (the demo's model until 2026-12-03;
NovoGrad + cosine schedule, SpecAugment), which quartznet hands to NeMo in NeMo's own terms (the
config a saved .nemo carries). Batch 16, fp32, 2 compute threads, 1 DataLoader worker, no validation,
no checkpoints, no logger (--precision bf16-mixed: both under Lightning's CPU bf16 autocast, for
CPUs with native bf16). quartznet batches by duration (the data config's `num_buckets`, or
`--num-buckets`); NeMo's `train_ds` shuffles at random, as its configs do. The epoch time runs from
Lightning's `on_train_epoch_start` to `on_train_epoch_end`, so process and model start-up are not in
it. Padding is the share of padded samples in the audio batches the model saw.

With --speed both perturb speed by 0.85-1.15, each in its own way: NeMo per utterance in the
DataLoader worker (`train_ds.augmentor.speed`, continuous rates, resampy's kaiser_fast, the type its
QuartzNet configs use); quartznet per batch on the model's device (`model.waveform_augment`) and,
in a third column, per utterance in the worker (`data.augment`, the demo's default until 2026-12-02).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
BATCH_SIZE = 16
SPEED_RANGE = (0.85, 1.15)
PRECISIONS = ("32", "bf16-mixed")


def epoch_timer(callback_base: type) -> Any:
    """A Lightning callback (of whichever Lightning package the framework uses) timing the epoch and padding."""

    class EpochTimer(callback_base):
        def __init__(self) -> None:
            self.seconds = float("nan")
            self.padded_samples = 0
            self.audio_samples = 0
            self.steps = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.started = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            # quartznet's ASRBatch names its fields; NeMo's batch is a tuple (audio, audio_len, tokens, tokens_len)
            audio, audio_len = (batch.audio, batch.audio_len) if hasattr(batch, "audio") else (batch[0], batch[1])
            self.padded_samples += audio.numel()
            self.audio_samples += int(audio_len.sum())
            self.steps += 1

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self.started

        def result(self) -> dict[str, float]:
            return {
                "epoch_s": self.seconds,
                "steps": self.steps,
                "padding": 1.0 - self.audio_samples / self.padded_samples,
            }

    return EpochTimer()


def quartznet_overrides(
    manifest: str, speed: str, run_dir: str, num_buckets: int | None = None, precision: str = "32"
) -> list[str]:
    """quartznet_small on the given corpus, one bare training epoch; speed: "off", "device" or "worker";
    num_buckets: the duration buckets, None for the data config's; precision: Lightning's."""
    overrides = [
        "model=quartznet_small",
        f"data.train_manifest={manifest}",
        "data.validation_manifests=[]",
        "data.test_manifests=[]",
        f"data.batch_size={BATCH_SIZE}",
        "data.num_workers=1",
        "trainer.max_epochs=1",
        f"trainer.precision={precision}",
        "+trainer.limit_val_batches=0",
        "+trainer.enable_model_summary=false",
        "callbacks.model_checkpoint=null",
        "callbacks.last_checkpoint=null",
        "test_after_training=false",
        "save_nemo=null",
        "plots=false",
        "logger.tensorboard=null",
        "logger.csv=null",
        f"paths.run_dir={run_dir}",
    ]
    # Both places are set whatever the demo's default, so each mode means the same in every version.
    lo, hi = SPEED_RANGE
    speed_options = f"{{speed_prob: 1.0, min_speed: {lo}, max_speed: {hi}}}"
    overrides.append(f"data.augment={speed_options}" if speed == "worker" else "data.augment=null")
    device_options = speed_options if speed == "device" else "null"
    overrides.append(f"++model.waveform_augment={device_options}")
    if num_buckets is not None:
        overrides.append(f"data.num_buckets={num_buckets}")
    return overrides


def compose_quartznet(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_quartznet(manifest: str, speed: str, num_buckets: int | None, precision: str) -> dict[str, float]:
    import hydra
    import pytorch_lightning as pl
    import torch

    from quartznet.tasks import task_of
    from quartznet.training.setup import build_model, build_trainer

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_quartznet(quartznet_overrides(manifest, speed, run_dir, num_buckets, precision))
        pl.seed_everything(cfg.seed)
        model = build_model(cfg)
        datamodule = hydra.utils.instantiate(cfg.data, labels=task_of(model).labels(model))
        trainer = build_trainer(cfg)
        timer = epoch_timer(pl.Callback)
        trainer.callbacks.append(timer)
        trainer.fit(model, datamodule=datamodule)
    return timer.result()


def nemo_model_config(manifest: str, speed: bool) -> dict[str, Any]:
    """The demo's model section in NeMo's terms plus a NeMo `train_ds` over the same manifest."""
    from quartznet.training.setup import build_model

    cfg = compose_quartznet(quartznet_overrides(manifest, "off", tempfile.gettempdir()))
    config = build_model(cfg).nemo_config()
    config["train_ds"] = {
        "manifest_filepath": manifest,
        "sample_rate": config["sample_rate"],
        "labels": config["labels"],
        "batch_size": BATCH_SIZE,
        "shuffle": True,
        "num_workers": 1,
        "pin_memory": False,
        "trim_silence": False,
    }
    if speed:
        lo, hi = SPEED_RANGE
        config["train_ds"]["augmentor"] = {
            "speed": {
                "prob": 1.0,
                "sr": config["sample_rate"],
                "resample_type": "kaiser_fast",
                "min_speed_rate": lo,
                "max_speed_rate": hi,
                "num_rates": -1,
            }
        }
    return config


def run_nemo(config_path: str, precision: str) -> dict[str, float]:
    import lightning.pytorch as pl
    import torch
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    torch.set_num_threads(THREADS)
    pl.seed_everything(1234)
    timer = epoch_timer(pl.Callback)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        precision=precision,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    model = EncDecCTCModel(cfg=OmegaConf.load(config_path), trainer=trainer)
    trainer.fit(model)
    return timer.result()


def run_child(python: str, args: list[str]) -> dict[str, float]:
    """One epoch in a fresh process; its last stdout line is the JSON result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), *args], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(args[:1])} epoch failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    from quartznet.data.manifest import read_manifests, write_manifest  # not in NeMo's environment

    entries = read_manifests(args.manifest)
    seconds_of_audio = sum(entry.duration for entry in entries)
    with tempfile.TemporaryDirectory() as scratch:
        # NeMo gets the same utterances with absolute paths (quartznet resolves them against the manifest).
        manifest = str(write_manifest(Path(scratch) / "train.json", (
            {"audio_filepath": str(entry.audio_filepath), "duration": entry.duration, "text": entry.text}
            for entry in entries
        )))
        nemo_config = Path(scratch) / "nemo_model.json"
        nemo_config.write_text(json.dumps(nemo_model_config(manifest, args.speed)))
        buckets = [] if args.num_buckets is None else ["--num-buckets", str(args.num_buckets)]
        precision = ["--precision", args.precision]

        def quartznet_runner(speed: str) -> tuple[str, list[str]]:
            return sys.executable, ["quartznet", manifest, "--speed", speed, *buckets, *precision]

        runners = {"quartznet": quartznet_runner("device" if args.speed else "off")}
        if args.speed:
            runners["quartznet, speed in the worker"] = quartznet_runner("worker")
        runners["NeMo"] = (args.nemo_python, ["nemo", str(nemo_config), *precision])

        results: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
        for run in range(args.runs):
            for name, (python, child_args) in runners.items():
                result = run_child(python, child_args)
                results[name].append(result)
                print(f"run {run + 1}/{args.runs} {name}: epoch {result['epoch_s']:.1f} s, "
                      f"padding {result['padding']:.1%}", flush=True)

    summary = {}
    for name, runs in results.items():
        epoch = statistics.median(r["epoch_s"] for r in runs)
        summary[name] = {
            "epoch_s": [round(r["epoch_s"], 2) for r in runs],
            "median_epoch_s": round(epoch, 2),
            "audio_s_per_s": round(seconds_of_audio / epoch, 1),
            "padding": round(statistics.median(r["padding"] for r in runs), 4),
            "steps": runs[0]["steps"],
        }
    nemo = summary["NeMo"]["median_epoch_s"]
    print(f"\n{args.manifest}: {seconds_of_audio:.0f} s of audio, speed perturbation {'on' if args.speed else 'off'}, "
          f"precision {args.precision}")
    print("| | epoch (median) | audio-s/s | padding | NeMo / this |")
    print("|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['median_epoch_s']:.1f} s | {s['audio_s_per_s']:.0f} | {s['padding']:.1%} | "
              f"{nemo / s['median_epoch_s']:.2f}x |")
    if args.json:
        record = {"manifest": args.manifest, "speed": args.speed, "precision": args.precision, "results": summary}
        Path(args.json).write_text(json.dumps(record, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="alternate quartznet and NeMo epochs and print the medians")
    cmp.add_argument("--manifest", required=True, help="training manifest (the demo's train.json)")
    cmp.add_argument("--nemo-python", required=True, help="python of a virtual environment with nemo_toolkit[asr]")
    cmp.add_argument("--runs", type=int, default=3)
    cmp.add_argument("--speed", action="store_true", help="speed perturbation 0.85-1.15 on in both")
    cmp.add_argument("--json", help="also write the results here")
    buckets_help = "quartznet's duration buckets (default: conf/data/synthetic_asr.yaml's num_buckets)"
    cmp.add_argument("--num-buckets", type=int, help=buckets_help)
    precision_help = "Lightning's trainer precision for both (bf16-mixed: CPUs with native bf16)"
    cmp.add_argument("--precision", choices=PRECISIONS, default="32", help=precision_help)
    one = sub.add_parser("quartznet", help="one quartznet epoch (run by compare)")
    one.add_argument("manifest")
    one.add_argument("--speed", choices=("off", "device", "worker"), default="off")
    one.add_argument("--num-buckets", type=int, help=buckets_help)
    one.add_argument("--precision", choices=PRECISIONS, default="32", help=precision_help)
    nemo = sub.add_parser("nemo", help="one NeMo epoch from a model config written by compare")
    nemo.add_argument("config")
    nemo.add_argument("--precision", choices=PRECISIONS, default="32", help=precision_help)
    args = parser.parse_args()

    if args.command == "compare":
        compare(args)
    elif args.command == "quartznet":
        print(json.dumps(run_quartznet(args.manifest, args.speed, args.num_buckets, args.precision)))
    else:
        print(json.dumps(run_nemo(args.config, args.precision)))


if __name__ == "__main__":
    main()

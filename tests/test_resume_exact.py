"""Exact resume: a run killed mid-epoch and resumed from its last checkpoint ends with the very weights of
an uninterrupted run (torch.equal), with every source of randomness on: dither, SpecAugment, speed
perturbation + shift + noise in a DataLoader worker, shuffled bucketed batches (quartznet.training.rng)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile
import torch

from conftest import tiny_ctc_config
from quartznet.network.wave_augment import WaveformAugmentation
from quartznet.data.manifest import write_manifest
from quartznet.models import CTCModel
from quartznet.training.datamodule import SpeechDataModule
from quartznet.training.rng import StepSeeding

RATE = 16000
ITEMS, BATCH, EPOCHS = 6, 2, 2  # 3 steps per epoch, 6 in all
AUGMENT = dict(speed_prob=0.8, min_speed=0.9, max_speed=1.1, shift_prob=0.8, min_shift_ms=-5.0, max_shift_ms=5.0,
               noise_prob=0.8, min_level=-60.0, max_level=-40.0)


class Killed(Exception):
    pass


class KillAt(pl.Callback):
    """Dies when step `step` + 1 starts, after step `step`'s checkpoint is written, as a kill -9 would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


class LossTrace(pl.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = outputs["loss"].item()


def write_corpus(folder: Path) -> Path:
    """ITEMS tones of 0.25 to 0.45 s with a little noise, and random letter "words"."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(ITEMS):
        seconds = 0.25 + 0.04 * i
        t = np.arange(int(seconds * RATE)) / RATE
        audio = 0.3 * np.sin(2 * math.pi * (200 + 40 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        soundfile.write(folder / f"{i}.wav", audio.astype(np.float32), RATE)
        text = " ".join("".join(rng.choice(list("abcdefghij"), 3)) for _ in range(2))
        rows.append({"audio_filepath": str(folder / f"{i}.wav"), "duration": seconds, "text": text})
    return write_manifest(folder / "train.json", rows)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is many times faster than several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("resume_data"))


def model_config() -> dict:
    config = tiny_ctc_config()
    config["preprocessor"]["features"] = config["encoder"]["feat_in"] = 32
    assert config["preprocessor"]["dither"] > 0
    config["spec_augment"] = {"_target_": "quartznet.network.spec_augment.SpectrogramAugmentation", "freq_masks": 2,
                              "freq_width": 8, "time_masks": 2, "time_width": 0.1, "rect_masks": 2, "rect_time": 5,
                              "rect_freq": 10}
    config["optim"] = {"name": "novograd", "lr": 0.01, "betas": [0.8, 0.5], "weight_decay": 0.001,
                       "sched": {"name": "CosineAnnealing", "max_steps": ITEMS // BATCH * EPOCHS, "warmup_steps": 2}}
    return config


def train(manifest: Path, folder: Path, kill_after: int | None = None, resume: str | None = None) -> tuple[dict, dict]:
    """As train.py does: seed, build, fit (resuming from `resume`); returns (weights, {step: loss})."""
    pl.seed_everything(0, workers=True)
    model = CTCModel(model_config())
    data = SpeechDataModule("asr", model.vocabulary, train_manifest=str(manifest), batch_size=BATCH, num_workers=1,
                            num_buckets=2, augment=AUGMENT, seed=0)
    trace = LossTrace()
    callbacks = [StepSeeding(0), trace,
                 pl.callbacks.ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_last=True, save_top_k=0)]
    if kill_after is not None:
        callbacks.append(KillAt(kill_after))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, max_epochs=EPOCHS, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=callbacks)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=resume)
    except Killed:
        assert kill_after is not None
    return {k: v.clone() for k, v in model.state_dict().items()}, trace.losses


@pytest.fixture(scope="module")
def uninterrupted(manifest, tmp_path_factory) -> tuple[dict, dict]:
    weights, losses = train(manifest, tmp_path_factory.mktemp("uninterrupted"))
    assert sorted(losses) == list(range(1, ITEMS // BATCH * EPOCHS + 1))
    return weights, losses


# After step 3 the checkpoint holds a finished epoch 0 (as an epoch-end checkpoint does): the resumed
# run must start epoch 1 from its first batch, not train an empty epoch.
@pytest.mark.parametrize("kill_after", [1, 3, 4], ids=["mid_epoch_0", "epoch_boundary", "mid_epoch_1"])
def test_resume_after_a_mid_epoch_kill_ends_with_identical_weights(manifest, uninterrupted, tmp_path, kill_after):
    weights, losses = uninterrupted
    _, before_kill = train(manifest, tmp_path, kill_after=kill_after)
    assert sorted(before_kill) == list(range(1, kill_after + 1))
    resumed, after_kill = train(manifest, tmp_path, resume=str(tmp_path / "last.ckpt"))
    assert sorted(after_kill) == list(range(kill_after + 1, len(losses) + 1))
    assert {**before_kill, **after_kill} == losses  # every step's loss, bit for bit
    assert weights.keys() == resumed.keys()
    differing = {key: (resumed[key] - value).abs().max().item() for key, value in weights.items()
                 if not torch.equal(resumed[key], value)}
    assert not differing, f"weights differ from the uninterrupted run's (max abs diff per tensor): {differing}"


def test_item_augmentation_depends_on_seed_epoch_and_index_only():
    audio = torch.sin(torch.arange(8000) / 16000 * 2 * math.pi * 440)
    augment = WaveformAugmentation(**AUGMENT)
    with augment.seeded(0, 1, 5):
        first = augment(audio)
    torch.manual_seed(123)  # the global RNG plays no part
    augment(audio)  # nor does what was augmented before
    with augment.seeded(0, 1, 5):
        again = augment(audio)
    with augment.seeded(0, 2, 5):
        next_epoch = augment(audio)
    assert torch.equal(first, again)
    assert first.shape != next_epoch.shape or not torch.equal(first, next_epoch)
    assert augment.generator is None  # outside `seeded`: the global RNG, as before

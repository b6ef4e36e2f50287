"""Exact resume: every random number of training is a function of where it is used, not of the history
of the process that draws it, so a run killed at any step and resumed from a checkpoint of step k
repeats the uninterrupted run's steps k+1, k+2, ... bit for bit (on CPU; on GPU as far as the kernels
are deterministic).

The seeding rule, from the run's seed:
- data order: `DurationBucketSampler` shuffles epoch e from (seed, e); the checkpoint holds the number
  of batches of the epoch already trained on (quartznet.training.datamodule);
- waveform augmentation, in the DataLoader workers: item i of epoch e from (seed, e, i)
  (quartznet.data.datasets.SeededItems), whichever worker loads it;
- everything a training step draws in the main process from the global RNGs (dither, SpecAugment,
  dropout, random crops): `StepSeeding` seeds torch (CPU and every GPU), numpy and `random` before each
  training batch from (seed, rank, epoch, batch index in the epoch).

Lightning saves none of the RNG states, and restoring them would not be enough: a resumed run draws
from the global RNG at other moments than the uninterrupted one (a DataLoader draws its workers' base
seed each time its iterator is created), and under DDP only rank 0's state would be saved.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from quartznet.common.seeding import item_seed


def seed_training_step(seed: int, rank: int, epoch: int, batch_idx: int) -> int:
    """Seed torch (all devices), numpy and `random` for the training batch (epoch, batch_idx) on `rank`;
    returns the seed used."""
    step_seed = item_seed(seed, rank, epoch, batch_idx)
    torch.manual_seed(step_seed)
    np.random.seed(step_seed % 2**32)
    random.seed(step_seed)
    return step_seed


class StepSeeding(pl.Callback):
    """Seeds the global RNGs before every training batch from (seed, rank, epoch, batch index): see the
    module docstring. `seed`: the run's seed; None = the one `pl.seed_everything` set (else 0)."""

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        seed_training_step(seed, trainer.global_rank, trainer.current_epoch, batch_idx)

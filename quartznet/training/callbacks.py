"""Callbacks that train.py adds to every run (quartznet.training.setup.build_trainer)."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch

from quartznet.data.datasets import SkipReport

log = logging.getLogger(__name__)


class SkippedItemsReport(pl.Callback):
    """Adds up the training files each epoch had to leave out (unreadable audio, empty transcripts, ...),
    summed over DDP ranks; logs `train_skipped` and warns with the reasons at each epoch end."""

    def __init__(self) -> None:
        self.report = SkipReport()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch.skipped:
            self.report.add(batch.skipped)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        report = self.report
        if trainer.world_size > 1:  # every rank saw other files: merge the reports
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, report.as_dict())
            report = SkipReport()
            for part in gathered:
                report.merge(part)
        pl_module.log("train_skipped", float(report.count), sync_dist=True)  # equal on every rank after the merge
        if report.count and trainer.is_global_zero:
            log.warning("epoch %d: %s", trainer.current_epoch, report.summary())
        self.report.reset()

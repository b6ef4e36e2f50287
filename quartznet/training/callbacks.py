"""Callbacks that train.py adds to every run (quartznet.training.setup.build_trainer)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from quartznet.common.errors import UserError
from quartznet.data.datasets import SkipReport

log = logging.getLogger(__name__)


class SkippedItemsReport(pl.Callback):
    """Adds up the training files each epoch had to leave out (unreadable audio, empty transcripts, and the
    rows the model's loss left out: a transcript longer than its audio allows), summed over DDP ranks;
    logs `train_skipped` and warns with the reasons at each epoch end.

    Training stops with a UserError (the skip summary in the message) when it cannot be useful:
    - before the first step, when every transcript of the training set is empty after the alphabet filter;
    - at the first validation or epoch end where no training item so far was usable, or more than
      `max_skipped_fraction` of the epoch's items were skipped (on one device also as soon as
      `check_after_items` items were seen, so a huge bad corpus fails fast);
    - when a validation produced no value for a checkpoint's monitored metric (`val_wer`) because no
      validation item was usable, instead of Lightning's MisconfigurationException.
    """

    def __init__(self, max_skipped_fraction: float = 1.0, check_after_items: int = 1000) -> None:
        self.max_skipped_fraction = max_skipped_fraction
        self.check_after_items = check_after_items
        self.report, self.seen = SkipReport(), 0
        self.val_report, self.val_seen = SkipReport(), 0

    # --- training ---------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        empty, total = getattr(dataset, "empty_transcripts", 0), len(dataset) if hasattr(dataset, "__len__") else 0
        if total and empty == total:
            raise UserError(
                f"no usable training item: all {total} transcripts of data.train_manifest are empty once the "
                "characters outside the model's alphabet are dropped; check the manifest's `text` and the "
                "model's labels (change_vocabulary=...)"
            )

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen += batch.size + len(batch.skipped)
        self._add(trainer, batch.skipped)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Rows the model's loss left out (a transcript longer than its audio allows): skipped too.
        self._add(trainer, outputs.get("skipped", []) if isinstance(outputs, Mapping) else [])

    def _add(self, trainer: pl.Trainer, skipped: list[tuple[str, str]]) -> None:
        if skipped:
            self.report.add(skipped)
            if trainer.world_size == 1 and self.seen >= self.check_after_items:
                self._check(self.report, self.seen, trainer.current_epoch, "so far")

    def _merged(self, trainer: pl.Trainer) -> tuple[SkipReport, int]:
        if trainer.world_size == 1:
            return self.report, self.seen
        gathered = [None] * trainer.world_size  # every rank saw other files: merge the reports
        torch.distributed.all_gather_object(gathered, (self.report.as_dict(), self.seen))
        report = SkipReport()
        for part, _ in gathered:
            report.merge(part)
        return report, sum(seen for _, seen in gathered)

    def _check(self, report: SkipReport, seen: int, epoch: int, when: str) -> None:
        if not seen or not report.count:
            return
        if report.count >= seen:
            problem = f"no usable training item: all {seen} items of epoch {epoch} {when} were skipped"
        elif report.count > self.max_skipped_fraction * seen:
            problem = (f"{report.count} of {seen} training items of epoch {epoch} {when} were skipped, more than "
                       f"max_skipped_fraction={self.max_skipped_fraction:g}")
        else:
            return
        log.error("%s\n%s", problem, report.summary())
        raise UserError(f"{problem}; fix data.train_manifest (or raise max_skipped_fraction). {report.summary()}")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_report, self.val_seen = SkipReport(), 0
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            # Before validation and the checkpoint it triggers: nothing is saved from a run that never trained.
            report, seen = self._merged(trainer)
            self._check(report, seen, trainer.current_epoch, "so far")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        report, seen = self._merged(trainer)
        pl_module.log("train_skipped", float(report.count), sync_dist=True)  # equal on every rank after the merge
        try:
            self._check(report, seen, trainer.current_epoch, "")
            if report.count and trainer.is_global_zero:
                log.warning("epoch %d: %s", trainer.current_epoch, report.summary())
        finally:
            self.report.reset()
            self.seen = 0

    # --- validation -------------------------------------------------------------------------------

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.val_seen += batch.size + len(batch.skipped)
        self.val_report.add(batch.skipped)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before ModelCheckpoint's on_validation_end (Lightning moves checkpoint callbacks last).
        if trainer.sanity_checking:
            return
        for callback in trainer.checkpoint_callbacks:
            monitor = getattr(callback, "monitor", None)
            # A validation metric that is missing: train.py checked its name, so no item was usable.
            if monitor and monitor.startswith("val_") and monitor not in trainer.callback_metrics:
                usable = self.val_seen - self.val_report.count
                raise UserError(
                    f"validation produced no `{monitor}` to choose checkpoints on: {usable} of the {self.val_seen} "
                    f"validation items on this rank were usable; fix data.validation_manifests (or set "
                    f"callbacks.model_checkpoint.monitor=null). {self.val_report.summary()}"
                )

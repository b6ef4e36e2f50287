"""A callback for the DDP test: every rank writes the validation metrics it logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl


class DumpValidationMetrics(pl.Callback):
    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"val_metrics_rank{trainer.global_rank}.json").write_text(json.dumps(metrics, sort_keys=True))

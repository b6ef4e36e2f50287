"""A CSVLogger that a resumed run appends to (conf/logger/default.yaml).

Lightning's CSVLogger deletes `metrics.csv` when its folder is not empty, which would lose a killed run's
curves on `resume=last`. With `keep_rows` (train.yaml sets it from `resume`) the rows already in the
file are kept: at the first write, rows from steps the resumed run logs again (those the killed run
logged after its last checkpoint) are dropped and the rest are written back, atomically, under the
union of the old and new columns; new rows are appended after them.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from quartznet.common.outputs import atomic_write_text


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


class AppendingExperimentWriter(ExperimentWriter):
    """ExperimentWriter that keeps an existing metrics.csv (see the module docstring)."""

    def __init__(self, log_dir: str) -> None:
        self._kept: list[dict[str, str]] | None = None
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="", encoding="utf-8") as rows:
                self._kept = list(csv.DictReader(rows))

    def save(self) -> None:
        if self._kept is not None and self.metrics:
            first = min(metrics.get("step", 0) for metrics in self.metrics)
            kept = [row for row in self._kept if _step(row) < first]
            self.metrics_keys = sorted({key for row in kept for key in row} | set(self.metrics_keys))
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(self.metrics_file_path, text.getvalue())
            self._kept = None
        super().save()


class ResumableCSVLogger(CSVLogger):
    """pytorch_lightning's CSVLogger; with `keep_rows` (any true value, e.g. `resume: last`) a resumed
    run appends to its metrics.csv instead of replacing it."""

    def __init__(self, *args: Any, keep_rows: Any = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_rows = bool(keep_rows)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        if not self.keep_rows:
            return super().experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

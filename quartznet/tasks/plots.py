"""PNG figures written next to a run: training curves, an evaluation summary, a confusion matrix."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from quartznet.common.outputs import replaced_atomically  # noqa: E402

log = logging.getLogger(__name__)


def save_figure(figure, out: Path) -> Path:
    """Save as PNG under a temporary name beside `out`, then rename it onto `out`: an interrupted run
    never leaves half a picture, and the old one stays until the new one is complete."""
    out = Path(out)
    try:
        with replaced_atomically(out) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
    finally:
        plt.close(figure)
    return out


def read_metrics_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning CSVLogger metrics.csv -> {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as rows:
        for row in csv.DictReader(rows):
            step = float(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_training_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Loss (train and validation) and validation metrics against the training step."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        log.warning("no %s: training curves not drawn", metrics_csv)
        return None
    series = read_metrics_csv(metrics_csv)
    losses = [k for k in series if (k.endswith("loss") or "_loss_" in k) and not k.startswith("test")]
    scores = [k for k in series if k.startswith("val_") and k not in losses]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in losses:
        steps, values = zip(*series[key])
        axes[0].plot(steps, values, label=key, marker="o" if key.startswith("val") else None, markersize=3)
    axes[0].set(title="loss", xlabel="step", yscale="log")
    for key in scores:
        steps, values = zip(*series[key])
        axes[1].plot(steps, values, label=key, marker="o", markersize=3)
    axes[1].set(title="validation", xlabel="step")
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    return save_figure(figure, out)


def plot_asr_summary(results: Mapping[str, Mapping[str, float]], out: Path) -> Path:
    """Per evaluation set: WER split into substitutions / deletions / insertions, and CER."""
    names = list(results)
    figure, axis = plt.subplots(figsize=(max(5, 2.2 * len(names)), 4.5))
    bottom = [0.0] * len(names)
    for part, color in (("substitutions", "tab:red"), ("deletions", "tab:orange"), ("insertions", "tab:purple")):
        heights = [100 * results[n][part] / max(results[n]["reference_words"], 1) for n in names]
        axis.bar(names, heights, bottom=bottom, label=part, color=color)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for index, name in enumerate(names):
        axis.text(index, bottom[index], f"WER {100 * results[name]['wer']:.2f}%\nCER {100 * results[name]['cer']:.2f}%",
                  ha="center", va="bottom")
    axis.set(ylabel="% of reference words", title="word errors", ylim=(0, max(bottom + [1.0]) * 1.35))
    axis.legend()
    figure.tight_layout()
    return save_figure(figure, out)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], out: Path) -> Path:
    """Rows: reference class, columns: predicted class; cells normalised per row."""
    size = len(labels)
    normalised = [[cell / max(sum(row), 1) for cell in row] for row in matrix]
    side = max(6.0, 0.32 * size + 2)
    figure, axis = plt.subplots(figsize=(side, side))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(size), labels, rotation=90, fontsize=8 if size > 20 else 10)
    axis.set_yticks(range(size), labels, fontsize=8 if size > 20 else 10)
    axis.set(xlabel="predicted", ylabel="reference")
    accuracy = sum(matrix[i][i] for i in range(size)) / max(sum(map(sum, matrix)), 1)
    axis.set_title(f"confusion matrix (accuracy {100 * accuracy:.2f}%)")
    if size <= 15:
        for i in range(size):
            for j in range(size):
                if matrix[i][j]:
                    axis.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=8,
                              color="white" if normalised[i][j] > 0.5 else "black")
    figure.colorbar(image, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return save_figure(figure, out)

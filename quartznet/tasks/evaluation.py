"""Batched evaluation of a restored model on a manifest: predictions, corpus WER/CER or accuracy,
per-class precision/recall, and the reports evaluate.py prints and saves.

Evaluation is loud about data it cannot use: unusable files are skipped and counted by reason (in the
report and the summary's `skipped`); more than `max_skipped_fraction` of the manifest skipped, no
utterance scored at all, or a non-finite model output is a UserError. `on_row` receives each
prediction row as soon as its batch is done (evaluate.py streams them to disk).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from quartznet.common.errors import UserError
from quartznet.common.metrics import ErrorCounts, utterance_errors
from quartznet.data.datasets import (
    AudioToCharDataset,
    AudioToLabelDataset,
    Skipped,
    SkipReport,
    collate_asr,
    collate_labels,
)
from quartznet.data.sampler import evaluation_batches
from quartznet.models import ClassificationModel, CTCModel, QuartzNetModel
from quartznet.tasks.plots import plot_asr_summary, plot_confusion_matrix

log = logging.getLogger(__name__)
ASR_PLOT, CLASSIFICATION_PLOT = "evaluation_summary.png", "confusion_matrix.png"  # written into output_dir


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


@dataclass
class AsrResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per scored utterance, manifest order
    errors: ErrorCounts = field(default_factory=ErrorCounts)
    skipped: SkipReport = field(default_factory=SkipReport)
    manifest_warnings: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        e = self.errors
        return {"wer": e.wer, "cer": e.cer, "substitutions": e.substitutions, "deletions": e.deletions,
                "insertions": e.insertions, "reference_words": e.reference_words, "utterances": len(self.rows),
                "skipped": skipped_summary(self.skipped), "manifest_warnings": dict(self.manifest_warnings)}

    def report(self, worst: int = 10) -> str:
        return format_asr_report(self, worst)

    def plot(self, output_dir: Path, name: str) -> Path:
        path = Path(output_dir) / ASR_PLOT
        plot_asr_summary({name: self.summary()}, path)
        return path


@dataclass
class ClassificationResult:
    labels: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # [reference][predicted]
    skipped: SkipReport = field(default_factory=SkipReport)
    manifest_warnings: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        total = sum(map(sum, self.confusion))
        correct = sum(self.confusion[i][i] for i in range(len(self.labels)))
        per_class = {}
        for i, label in enumerate(self.labels):
            predicted = sum(row[i] for row in self.confusion)
            actual = sum(self.confusion[i])
            per_class[label] = {
                "precision": self.confusion[i][i] / predicted if predicted else float("nan"),
                "recall": self.confusion[i][i] / actual if actual else float("nan"),
                "support": actual,
            }
        return {"accuracy": correct / max(total, 1), "utterances": total, "per_class": per_class,
                "skipped": skipped_summary(self.skipped), "manifest_warnings": dict(self.manifest_warnings)}

    def report(self, worst: int = 10) -> str:
        return format_classification_report(self)

    def plot(self, output_dir: Path, name: str) -> Path:
        path = Path(output_dir) / CLASSIFICATION_PLOT
        plot_confusion_matrix(self.confusion, self.labels, path)
        return path


def skipped_summary(report: SkipReport) -> dict[str, Any]:
    return {"count": report.count, "by_reason": dict(report.by_reason.most_common())}


def _manifest_warnings(dataset: Dataset) -> dict[str, int]:
    return {"duration_mismatches": getattr(dataset, "duration_mismatches", 0),
            "duplicate_rows": getattr(dataset, "duplicate_rows", 0)}


def _check_usable(dataset: Dataset, manifest: str | Path) -> None:
    if len(dataset) == 0:
        raise UserError(f"manifest={manifest}: has no utterances to evaluate; give a manifest with rows")


def _check_scored(scored: int, skipped: SkipReport, manifest: str | Path) -> None:
    if not scored:
        raise UserError(f"manifest={manifest}: no utterance could be scored, all {skipped.count} were skipped. "
                        f"{skipped.summary()}")


class _WithIndex(Dataset):
    """Items as (dataset index, item): the index travels with the item through DataLoader workers."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def _collate_with_indices(collate: Callable, pairs: Sequence[tuple[int, Any]]) -> tuple[list[int], Any]:
    """(indices of the items the collate keeps, batch): skipped items leave the batch and the index list."""
    return [index for index, item in pairs if not isinstance(item, Skipped)], collate([item for _, item in pairs])


def asr_dataset(model: CTCModel, manifest: str | Path) -> AudioToCharDataset:
    """Every utterance of a manifest, long ones and ones with an empty reference included (evaluation
    scores them all)."""
    return AudioToCharDataset(str(manifest), model.vocabulary, sample_rate=model.preprocessor.sample_rate,
                              max_duration=None, keep_empty_transcripts=True)


def utterance_outputs(
    model: QuartzNetModel, dataset: Dataset, collate: Callable, batch_size: int = 32, num_workers: int = 2,
    device: torch.device = torch.device("cpu"), amp: bool = False, skipped: SkipReport | None = None,
    max_skipped_fraction: float = 1.0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(dataset index, output on the CPU) per usable utterance, run in batches of similar duration:
    the model's `per_utterance_outputs` ((T_i, V+1) log-probs for CTC, (classes,) logits for a
    classifier). Unusable files go to `skipped`; a UserError as soon as more than
    `max_skipped_fraction` of the dataset is skipped, or when an output is not finite."""
    skipped = skipped if skipped is not None else SkipReport()
    limit = max_skipped_fraction * len(dataset)
    loader = DataLoader(
        _WithIndex(dataset), batch_sampler=evaluation_batches(dataset.durations, batch_size, 0, 1),
        num_workers=num_workers, collate_fn=functools.partial(_collate_with_indices, collate),
    )
    model = model.to(device).eval()
    with tqdm(total=len(dataset), desc="evaluating", unit="utt") as progress:
        for kept, batch in loader:
            progress.update(len(kept) + len(batch.skipped))
            skipped.add(batch.skipped)
            if skipped.count > limit:
                raise UserError(
                    f"{skipped.count} of {len(dataset)} utterances could not be used, more than "
                    f"max_skipped_fraction={max_skipped_fraction:g}; fix the data or raise max_skipped_fraction. "
                    f"{skipped.summary()}"
                )
            if not kept:
                continue
            with torch.inference_mode(), autocast_context(device, amp):
                rows = model.per_utterance_outputs(batch.audio.to(device), batch.audio_len.to(device))
            for index, row in zip(kept, rows):
                row = row.float().cpu()
                if not torch.isfinite(row).all():
                    entry = dataset.entries[index]
                    raise UserError(
                        f"{entry.audio_filepath} ({entry.source}): the model's output is not finite (NaN or inf); "
                        "the checkpoint's weights may be broken, or try amp=false"
                    )
                yield index, row


def evaluate_asr(
    model: CTCModel, manifest: str, batch_size: int = 32, num_workers: int = 2,
    device: torch.device = torch.device("cpu"), amp: bool = False,
    decode: Callable[[torch.Tensor, torch.Tensor], list[str]] | None = None,
    max_skipped_fraction: float = 1.0, on_row: Callable[[dict[str, Any]], None] | None = None,
) -> AsrResult:
    """`decode` (log_probs, lengths) -> texts: the model's greedy decoding unless given (e.g. beam search).
    `result.rows` are in manifest order; `on_row` gets each as soon as it is ready (evaluation order)."""
    decode = decode or model.decode
    dataset = asr_dataset(model, manifest)
    _check_usable(dataset, manifest)
    result = AsrResult(manifest_warnings=_manifest_warnings(dataset))
    rows = {}
    for index, emission in utterance_outputs(
        model, dataset, collate_asr, batch_size, num_workers, device, amp, result.skipped, max_skipped_fraction
    ):
        prediction = decode(emission.unsqueeze(0), torch.tensor([emission.shape[0]]))[0]
        entry = dataset.entries[index]
        reference = dataset.tokenizer.decode(dataset.tokens[index].tolist())
        errors = utterance_errors(reference, prediction)
        result.errors = result.errors + errors
        rows[index] = {
            "audio_filepath": str(entry.audio_filepath), "duration": entry.duration,
            "text": reference, "pred_text": prediction,
            "wer": errors.word_errors / max(errors.reference_words, 1),
        }
        if on_row is not None:
            on_row(rows[index])
    _check_scored(len(rows), result.skipped, manifest)
    result.rows = [rows[index] for index in sorted(rows)]
    return result


def evaluate_classifier(
    model: ClassificationModel, manifest: str, batch_size: int = 32, num_workers: int = 2,
    device: torch.device = torch.device("cpu"), amp: bool = False,
    max_skipped_fraction: float = 1.0, on_row: Callable[[dict[str, Any]], None] | None = None,
) -> ClassificationResult:
    dataset = AudioToLabelDataset(manifest, model.labels, sample_rate=model.preprocessor.sample_rate)
    _check_usable(dataset, manifest)
    result = ClassificationResult(labels=model.labels, manifest_warnings=_manifest_warnings(dataset))
    result.confusion = [[0] * len(model.labels) for _ in model.labels]
    rows = {}
    for index, logits in utterance_outputs(
        model, dataset, collate_labels, batch_size, num_workers, device, amp, result.skipped, max_skipped_fraction
    ):
        predicted = int(logits.argmax())
        entry, reference = dataset.entries[index], dataset.label_ids[index]
        result.confusion[reference][predicted] += 1
        rows[index] = {"audio_filepath": str(entry.audio_filepath), "duration": entry.duration,
                       "label": model.labels[reference], "pred_label": model.labels[predicted]}
        if on_row is not None:
            on_row(rows[index])
    _check_scored(len(rows), result.skipped, manifest)
    result.rows = [rows[index] for index in sorted(rows)]
    return result


def format_asr_report(result: AsrResult, worst: int) -> str:
    s = result.summary()
    lines = [
        f"utterances: {s['utterances']}" + (f" (+{result.skipped.count} skipped)" if result.skipped.count else ""),
        f"WER: {100 * s['wer']:.2f}%   (substitutions {s['substitutions']}, deletions {s['deletions']}, "
        f"insertions {s['insertions']}, reference words {s['reference_words']})",
        f"CER: {100 * s['cer']:.2f}%",
    ]
    ranked = sorted(result.rows, key=lambda row: (-row["wer"], row["audio_filepath"]))[:worst]
    if ranked and ranked[0]["wer"] > 0:
        lines.append(f"worst {len(ranked)} utterances:")
        for row in ranked:
            lines.append(f"  WER {100 * row['wer']:6.1f}%  {Path(row['audio_filepath']).name}")
            lines.append(f"      ref: {row['text']}")
            lines.append(f"      hyp: {row['pred_text']}")
    if result.skipped.count:
        lines.append(result.skipped.summary())
    return "\n".join(lines)


def format_classification_report(result: ClassificationResult) -> str:
    s = result.summary()
    lines = [f"utterances: {s['utterances']}" + (f" (+{result.skipped.count} skipped)" if result.skipped.count else ""),
             f"accuracy: {100 * s['accuracy']:.2f}%",
             f"{'class':>12} {'precision':>9} {'recall':>7} {'support':>7}"]
    for label, stats in s["per_class"].items():
        lines.append(f"{label:>12} {100 * stats['precision']:8.1f}% {100 * stats['recall']:6.1f}% {stats['support']:7d}")
    if result.skipped.count:
        lines.append(result.skipped.summary())
    return "\n".join(lines)


def librispeech_manifest(librispeech_dir: str | Path, split: str, splits: Sequence[str]) -> str:
    if split not in splits:
        raise UserError(f"split={split!r}: choose one of {list(splits)}")
    path = Path(librispeech_dir) / f"{split}.json"
    if not path.is_file():
        raise UserError(f"split={split}: {path} does not exist; prepare it first: "
                        f"python -m data_prep.librispeech --splits {split} (or set librispeech_dir=...)")
    return str(path)

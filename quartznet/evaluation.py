"""Batched evaluation of a restored model on a manifest: predictions, corpus WER/CER or accuracy,
per-class precision/recall, and the reports evaluate.py prints and saves."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from quartznet.checkpoint import load_checkpoint
from quartznet.data.datasets import AudioToCharDataset, AudioToLabelDataset, SkipReport, collate_asr, collate_labels
from quartznet.datamodule import evaluation_batches
from quartznet.metrics import ErrorCounts, utterance_errors
from quartznet.models import ClassificationModel, CTCModel, QuartzNetModel

log = logging.getLogger(__name__)


def load_model(path: str | Path) -> QuartzNetModel:
    """A `.nemo` or `.ckpt` as the model class its config names (CTC or classification)."""
    config, weights = load_checkpoint(path)
    target = str(config.get("target", ""))
    cls = ClassificationModel if target.endswith("EncDecClassificationModel") else CTCModel
    model = cls(config)
    model.load_state_dict(weights)
    return model.eval()


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


@dataclass
class AsrResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per scored utterance, manifest order
    errors: ErrorCounts = field(default_factory=ErrorCounts)
    skipped: SkipReport = field(default_factory=SkipReport)

    def summary(self) -> dict[str, float]:
        e = self.errors
        return {"wer": e.wer, "cer": e.cer, "substitutions": e.substitutions, "deletions": e.deletions,
                "insertions": e.insertions, "reference_words": e.reference_words, "utterances": len(self.rows)}


@dataclass
class ClassificationResult:
    labels: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # [reference][predicted]
    skipped: SkipReport = field(default_factory=SkipReport)

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
        return {"accuracy": correct / max(total, 1), "utterances": total, "per_class": per_class}


def _loader(dataset, batch_size: int, num_workers: int, collate) -> DataLoader:
    return DataLoader(dataset, batch_sampler=evaluation_batches(dataset.durations, batch_size, 0, 1),
                      num_workers=num_workers, collate_fn=collate)


def _batches_with_indices(dataset, batch_size: int, num_workers: int, collate):
    """Batches plus the dataset indices of their kept items (skipped items are dropped by collate)."""
    loader = _loader(dataset, batch_size, num_workers, collate)
    for indices, batch in zip(loader.batch_sampler, loader):
        skipped_paths = {path for path, _ in batch.skipped}
        kept = [i for i in indices if str(dataset.entries[i].audio_filepath) not in skipped_paths]
        yield kept, batch


def evaluate_asr(
    model: CTCModel, manifest: str, batch_size: int = 32, num_workers: int = 2,
    device: torch.device = torch.device("cpu"), amp: bool = False,
    decode: Callable[[torch.Tensor, torch.Tensor], list[str]] | None = None,
) -> AsrResult:
    """`decode` (log_probs, lengths) -> texts: the model's greedy decoding unless given (e.g. beam search)."""
    decode = decode or model.decode
    dataset = AudioToCharDataset(manifest, model.vocabulary, sample_rate=model.preprocessor.sample_rate, max_duration=None)
    model = model.to(device).eval()
    result = AsrResult()
    predictions: dict[int, str] = {}
    progress = tqdm(total=len(dataset), desc="evaluating", unit="utt")
    for kept, batch in _batches_with_indices(dataset, batch_size, num_workers, collate_asr):
        result.skipped.add(batch.skipped)
        progress.update(len(kept) + len(batch.skipped))
        if not kept:
            continue
        with torch.inference_mode(), autocast_context(device, amp):
            log_probs, encoded_len, _ = model(input_signal=batch.audio.to(device), input_signal_length=batch.audio_len.to(device))
        for index, text in zip(kept, decode(log_probs, encoded_len)):
            predictions[index] = text
    progress.close()
    for index in sorted(predictions):
        entry = dataset.entries[index]
        reference = dataset.tokenizer.decode(dataset.tokens[index].tolist())
        errors = utterance_errors(reference, predictions[index])
        result.errors = result.errors + errors
        result.rows.append({
            "audio_filepath": str(entry.audio_filepath), "duration": entry.duration,
            "text": reference, "pred_text": predictions[index],
            "wer": errors.word_errors / max(errors.reference_words, 1),
        })
    return result


def evaluate_classifier(
    model: ClassificationModel, manifest: str, batch_size: int = 32, num_workers: int = 2,
    device: torch.device = torch.device("cpu"), amp: bool = False,
) -> ClassificationResult:
    dataset = AudioToLabelDataset(manifest, model.labels, sample_rate=model.preprocessor.sample_rate)
    model = model.to(device).eval()
    result = ClassificationResult(labels=model.labels)
    result.confusion = [[0] * len(model.labels) for _ in model.labels]
    predictions: dict[int, int] = {}
    for kept, batch in tqdm(_batches_with_indices(dataset, batch_size, num_workers, collate_labels), desc="evaluating"):
        result.skipped.add(batch.skipped)
        if not kept:
            continue
        with torch.inference_mode(), autocast_context(device, amp):
            logits = model(input_signal=batch.audio.to(device), input_signal_length=batch.audio_len.to(device))
        for index, predicted in zip(kept, logits.argmax(-1).tolist()):
            predictions[index] = predicted
    for index in sorted(predictions):
        entry, reference = dataset.entries[index], dataset.label_ids[index]
        result.confusion[reference][predictions[index]] += 1
        result.rows.append({"audio_filepath": str(entry.audio_filepath), "duration": entry.duration,
                            "label": model.labels[reference], "pred_label": model.labels[predictions[index]]})
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
    lines = [f"utterances: {s['utterances']}", f"accuracy: {100 * s['accuracy']:.2f}%",
             f"{'class':>12} {'precision':>9} {'recall':>7} {'support':>7}"]
    for label, stats in s["per_class"].items():
        lines.append(f"{label:>12} {100 * stats['precision']:8.1f}% {100 * stats['recall']:6.1f}% {stats['support']:7d}")
    if result.skipped.count:
        lines.append(result.skipped.summary())
    return "\n".join(lines)


def librispeech_manifest(librispeech_dir: str | Path, split: str, splits: Sequence[str]) -> str:
    if split not in splits:
        raise ValueError(f"split={split!r}: choose one of {list(splits)}")
    path = Path(librispeech_dir) / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepare it first: python -m data_prep.librispeech --splits {split}")
    return str(path)

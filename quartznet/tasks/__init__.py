"""What kind of model is this? The one place that answers it.

A `Task` says, for one model type, everything the rest of the code needs to know about it: the model
class, which attribute holds its output labels and which method replaces them, the manifest dataset
and collate function that feed it, how it is evaluated (metrics, report, plot), and whether it
transcribes text (the transcribe CLI, beam search and ONNX export apply then). Callers ask
`task_of(model)`, `task_named(name)` or `task_for_config(config)` and never test a model's type.

Adding a model type (say speaker ID on the same encoder) means its model class, its dataset if new,
its evaluation function, and one `Task` entry in `TASKS` below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from quartznet.common.checkpoint import load_checkpoint
from quartznet.common.errors import ConfigError, UserError
from quartznet.data.datasets import (
    AudioToCharDataset,
    AudioToLabelDataset,
    collate_asr,
    collate_labels,
)
from quartznet.models import ClassificationModel, CTCModel, QuartzNetModel
from quartznet.tasks.evaluation import evaluate_asr, evaluate_classifier


@dataclass(frozen=True)
class Task:
    name: str  # `data.task` in conf/data/*.yaml
    model_class: type[QuartzNetModel]
    label_attribute: str  # the model's output labels
    relabel_method: str  # the model method (and train.py config key) that replaces them for fine-tuning
    dataset_class: type[Dataset]  # (manifests, labels, sample_rate=..., ...) -> items for `collate`
    collate: Callable[[Sequence[Any]], Any]
    evaluate: Callable[..., Any]  # (model, manifest, **options) -> result with rows, summary(), report(), plot()
    transcribes: bool  # text out: transcribe, beam search and ONNX export apply

    def labels(self, model: QuartzNetModel) -> list[str]:
        return list(getattr(model, self.label_attribute))

    def relabel(self, model: QuartzNetModel, labels: Sequence[str]) -> None:
        getattr(model, self.relabel_method)(list(labels))


ASR = Task(
    name="asr", model_class=CTCModel, label_attribute="vocabulary", relabel_method="change_vocabulary",
    dataset_class=AudioToCharDataset, collate=collate_asr, evaluate=evaluate_asr, transcribes=True,
)
CLASSIFICATION = Task(
    name="classification", model_class=ClassificationModel, label_attribute="labels",
    relabel_method="change_labels", dataset_class=AudioToLabelDataset, collate=collate_labels,
    evaluate=evaluate_classifier, transcribes=False,
)
TASKS: dict[str, Task] = {task.name: task for task in (ASR, CLASSIFICATION)}


def task_named(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


def task_of(model: QuartzNetModel) -> Task:
    for task in TASKS.values():
        if isinstance(model, task.model_class):
            return task
    raise TypeError(f"{type(model).__name__} is not a model type quartznet knows (tasks: {sorted(TASKS)})")


def task_for_config(config: Mapping[str, Any]) -> Task:
    """The task of a checkpoint's model config, from its `target` (NeMo's model class or ours).
    A config without one is a CTC model, as NeMo's oldest checkpoints are."""
    target = str(config.get("target") or "").rsplit(".", 1)[-1]
    if not target:
        return ASR
    for task in TASKS.values():
        if target in (task.model_class.__name__, task.model_class.nemo_target.rsplit(".", 1)[-1]):
            return task
    raise ConfigError(f"model config: target {config.get('target')!r} is not a model type quartznet loads")


def load_model(path: str | os.PathLike) -> QuartzNetModel:
    """A `.nemo` or `.ckpt` as the model class its config names, in eval mode."""
    config, weights = load_checkpoint(path)
    return task_for_config(config).model_class.from_checkpoint_data(config, weights, path).eval()


def load_transcriber(path: str | os.PathLike) -> QuartzNetModel:
    """load_model for the applications that need text out (transcribe, beam search, export)."""
    model = load_model(path)
    task = task_of(model)
    if not task.transcribes:
        raise UserError(f"{path}: holds a {task.name} model; this needs a speech recognition (CTC) model")
    return model

"""The Lightning data module behind every `conf/data/*.yaml`: manifests (or shards) -> batches.

Training batches come from `DurationBucketSampler` (similar durations per batch, DDP-aware, resumable
mid-epoch through the module's `state_dict`). Waveform augmentation of item i in epoch e is seeded with
(seed, e, i) whatever the DataLoader worker (quartznet.data.datasets.SeededItems), so a resumed run augments the
remaining items exactly as the uninterrupted run would. Evaluation sets are split across DDP ranks without
repeats, so corpus-level metrics count every utterance exactly once.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from quartznet.common.errors import ConfigError, InputError
from quartznet.data.datasets import SeededItems
from quartznet.data.manifest import manifest_paths
from quartznet.data.sampler import (
    DurationBucketSampler,
    EpochKeyedBatches,
    distributed_rank_and_world,
    evaluation_batches,
)
from quartznet.data.shards import ShardDataset
from quartznet.network.wave_augment import WaveformAugmentation
from quartznet.tasks import task_named

log = logging.getLogger(__name__)

# Lightning warns that a map-style loader cannot resume mid-epoch; ours does, through state_dict below.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def manifest_name(manifests: str | Sequence[str]) -> str:
    """A short name for logging a validation set: its first manifest's file stem."""
    return manifest_paths(manifests)[0].stem


class SpeechDataModule(pl.LightningDataModule):
    def __init__(
        self,
        task: str,
        labels: Sequence[str],
        train_manifest: str | Sequence[str] | None = None,
        train_shards: Mapping[str, Any] | None = None,
        validation_manifests: Sequence[str | Sequence[str]] = (),
        test_manifests: Sequence[str | Sequence[str]] = (),
        sample_rate: int = 16000,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        min_duration: float | None = None,
        max_duration: float | None = None,
        num_buckets: int = 10,
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
        monitor: str = "val_wer",
        monitor_mode: str = "min",
        pin_memory: bool = False,
    ):
        """`validation_manifests` / `test_manifests`: one entry per evaluation set (each a manifest
        path, a comma list or a list of paths); `train_shards`: train from WebDataset shards instead
        of `train_manifest` ({urls, index, shuffle_buffer, ...}: ShardDataset options, see
        data_prep/make_shards.py); `augment`: WaveformAugmentation options (train only);
        `monitor` / `monitor_mode`: the metric checkpoints are chosen on for this kind of data."""
        super().__init__()
        self.task, self.labels = task, list(labels)
        try:
            self.task_spec = task_named(task)
        except ValueError as error:
            raise ConfigError(f"data.task: {error}") from error
        self.train_manifest = train_manifest
        self.train_shards = dict(train_shards) if train_shards else None
        self.validation_manifests = list(validation_manifests or [])
        self.test_manifests = list(test_manifests or [])
        self.sample_rate, self.batch_size = sample_rate, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.min_duration, self.max_duration = min_duration, max_duration
        self.num_buckets, self.seed = num_buckets, seed
        self.augment = dict(augment) if augment else None
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.val_names = [manifest_name(m) for m in self.validation_manifests]
        self.test_names = [manifest_name(m) for m in self.test_manifests]
        self.train_sampler: DurationBucketSampler | None = None
        self.train_shard_dataset: ShardDataset | None = None
        self._resume_state: dict[str, Any] | None = None

    # --- datasets ---------------------------------------------------------------------------------

    def dataset(self, manifests: str | Sequence[str], train: bool) -> Dataset:
        transform = self.waveform_transform() if train else None
        # Evaluation scores rows with an empty reference too (their insertions count), as evaluate.py does.
        scoring = {"keep_empty_transcripts": True} if self.task_spec.transcribes and not train else {}
        return self.task_spec.dataset_class(
            manifests, self.labels, sample_rate=self.sample_rate, min_duration=self.min_duration,
            # Long utterances are left out of training only; evaluation scores every one.
            max_duration=self.max_duration if train else None, waveform_transform=transform, **scoring,
        )

    @property
    def collate(self):
        return self.task_spec.collate

    def waveform_transform(self) -> WaveformAugmentation | None:
        return WaveformAugmentation(sample_rate=self.sample_rate, **self.augment) if self.augment else None

    def shard_dataloader(self) -> DataLoader:
        """Training batches from shards: a fixed batch count per rank, whatever the shard count."""
        options = dict(self.train_shards)
        self.train_shard_dataset = ShardDataset(
            options.pop("urls", None), self.labels, self.batch_size, sample_rate=self.sample_rate, seed=self.seed,
            num_workers=self.num_workers, min_duration=self.min_duration, max_duration=self.max_duration,
            waveform_transform=self.waveform_transform(), **options,
        )
        return self.train_shard_dataset.loader(pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        if self.train_shards:
            return self.shard_dataloader()
        if not self.train_manifest:
            raise ConfigError("data.train_manifest (or data.train_shards) is not set; give the training data")
        dataset = self.dataset(self.train_manifest, train=True)
        if len(dataset) == 0:
            raise InputError(f"{self.train_manifest}: no usable training utterances (check durations and paths)")
        self.train_sampler = DurationBucketSampler(
            dataset.durations, self.batch_size, num_buckets=self.num_buckets, shuffle=True, seed=self.seed,
        )
        if self._resume_state is not None:
            self.train_sampler.load_state_dict(self._resume_state)
            self._resume_state = None
        batches = self.train_sampler
        if dataset.waveform_transform is not None:
            # Items are read as (epoch, index) and augmented from their own seed (seed, epoch, index),
            # never from a worker's global RNG, whose state depends on what that worker loaded before.
            dataset = SeededItems(dataset, dataset.waveform_transform, self.seed)
            batches = EpochKeyedBatches(self.train_sampler)
        return DataLoader(
            dataset, batch_sampler=batches, num_workers=self.num_workers, collate_fn=self.collate,
            pin_memory=self.pin_memory, persistent_workers=False,
        )

    def evaluation_dataloader(self, manifests: str | Sequence[str]) -> DataLoader:
        dataset = self.dataset(manifests, train=False)
        rank, world = distributed_rank_and_world()
        return DataLoader(
            dataset, batch_sampler=evaluation_batches(dataset.durations, self.eval_batch_size, rank, world),
            num_workers=self.num_workers, collate_fn=self.collate, pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self.evaluation_dataloader(m) for m in self.validation_manifests]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.evaluation_dataloader(m) for m in self.test_manifests]

    # --- resuming mid-epoch -----------------------------------------------------------------------
    # Lightning restores epoch and step but restarts the epoch's data (and calls the sampler's
    # set_epoch each epoch); the sampler skips what the killed run had already trained on. The count
    # comes from the training loop, not the sampler, because DataLoader workers prefetch ahead.

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`. Called by the model at every epoch start, before the data is iterated:
        Lightning only re-seeds plain samplers, not a batch sampler or an iterable dataset."""
        for source in (self.train_sampler, self.train_shard_dataset):
            if source is not None:
                source.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        if self.train_sampler is None or self.trainer is None:
            return {}
        # Checkpoints are written in on_train_batch_end, after the batch is processed but before
        # Lightning counts it completed: `processed` is what the weights have seen.
        consumed = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_sampler": self.train_sampler.state_dict(consumed_batches=consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_state = state_dict.get("train_sampler")

"""Duration-bucketing batch sampler: batches of similar length, shuffled per epoch, DDP-aware, resumable.

Per epoch (all from `numpy.random.default_rng([seed, epoch])`, so every rank computes the same plan):
1. indices sorted by duration are cut into `num_buckets` equal-count buckets; each bucket is
   shuffled and the buckets are concatenated shortest first, so neighbours have similar durations;
2. that order is cut into batches of `batch_size`; batches are grouped `num_replicas` at a time
   (neighbouring batches: all ranks get similar lengths at the same step, so no rank waits for a
   long batch) and the order of the groups is shuffled;
3. rank r takes batch r of every group.

Every rank gets the same number of batches. With `drop_last=False` every index appears at least
once per epoch across ranks; when the index count does not fill `num_replicas` equal batch lists,
the last few indices of the order (the longest bucket) are repeated to fill them (fewer than
`batch_size * num_replicas` repeats, none on one device) and the last batch may be partial. With
`drop_last=True` the remainder is dropped instead, chosen at random each epoch, and all batches are full.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from quartznet.common.errors import ConfigError, InputError


def distributed_rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values, else torch.distributed when initialised, else torchrun/Lightning's RANK/WORLD_SIZE, else (0, 1)."""
    if world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world_size = torch.distributed.get_world_size()
        else:
            world_size = int(os.environ.get("WORLD_SIZE", 1))
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
        else:
            rank = int(os.environ.get("RANK", 0))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    return rank, world_size


def padding_fraction(batches: Sequence[Sequence[int]], durations: Sequence[float]) -> float:
    """Padded samples / all samples of the padded batch tensors: sum(B * max - sum) / sum(B * max)."""
    durations = np.asarray(durations, dtype=np.float64)
    padded = total = 0.0
    for batch in batches:
        lengths = durations[np.asarray(batch, dtype=np.int64)]
        size = len(lengths) * lengths.max()
        total += size
        padded += size - lengths.sum()
    return padded / total if total else 0.0


class DurationBucketSampler(Sampler[list[int]]):
    """Batch sampler (`DataLoader(dataset, batch_sampler=...)`) over `durations[i]` seconds of item i.

    Call `set_epoch(epoch)` before each epoch (Lightning does not call it on a batch sampler: do it
    in `on_train_epoch_start`, and set `use_distributed_sampler=False` so Lightning keeps this
    sampler under DDP); without it each new iteration advances to the next epoch by itself.
    `state_dict()` / `load_state_dict()` resume mid-epoch: the resumed epoch skips the batches
    already consumed; a state saved after an epoch's last batch resumes at the next epoch's start.
    `len()` is the full epoch's batch count, including skipped ones.

    `num_buckets`: more buckets pad less but mix less. 30 gives ~2% padding on a LibriSpeech-like
    distribution (random batching: ~23%, docs/benchmarks.md, "Padding") while each bucket of train-clean-100
    still holds ~950 utterances to shuffle.
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int,
        num_buckets: int = 30,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ):
        if batch_size < 1 or num_buckets < 1:
            raise ConfigError(f"batch_size ({batch_size}) and num_buckets ({num_buckets}) must be >= 1")
        self.rank, self.num_replicas = distributed_rank_and_world(rank, num_replicas)
        self.durations = np.asarray(durations, dtype=np.float64)
        if self.durations.ndim != 1 or len(self.durations) == 0:
            raise ValueError("durations must be a non-empty list of seconds, one per dataset item")
        self.batch_size, self.num_buckets = batch_size, num_buckets
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        # Stable sort by (duration, index): the buckets are the same on every rank and every run.
        self._sorted = np.argsort(self.durations, kind="stable")
        self._bucket_edges = np.linspace(0, len(self._sorted), min(num_buckets, len(self._sorted)) + 1).round().astype(int)
        total_batches = self._total_batches()
        if total_batches == 0:
            raise ConfigError(
                f"{len(self.durations)} items cannot fill one batch of {batch_size} per rank on "
                f"{self.num_replicas} ranks with drop_last=True; lower batch_size or set drop_last=False"
            )
        self._batches_per_rank = total_batches // self.num_replicas
        self.epoch = 0  # the epoch being (or last) iterated
        self._next_epoch = 0
        self._yielded = 0  # batches of self.epoch yielded so far
        self._skip = 0  # batches of the next iteration to skip (after load_state_dict)

    def _total_batches(self) -> int:
        """Batches over all ranks, a multiple of num_replicas."""
        n, world = len(self.durations), self.num_replicas
        if self.drop_last:
            return n // (self.batch_size * world) * world
        return math.ceil(math.ceil(n / self.batch_size) / world) * world

    def __len__(self) -> int:
        return self._batches_per_rank

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._next_epoch:
            self._skip = 0  # a restored mid-epoch position belongs to the restored epoch only
        self._next_epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of `epoch`, in step order: [step * num_replicas + rank]."""
        rng = np.random.default_rng([self.seed, epoch])
        buckets = [self._sorted[lo:hi] for lo, hi in zip(self._bucket_edges[:-1], self._bucket_edges[1:])]
        if self.shuffle:
            buckets = [rng.permutation(bucket) for bucket in buckets]
        order = np.concatenate(buckets)
        world, size = self.num_replicas, self.batch_size
        total_batches = self._total_batches()
        if self.drop_last:
            keep = np.sort(rng.choice(len(order), total_batches * size, replace=False)) if self.shuffle else slice(0, total_batches * size)
            order = order[keep]
        else:
            # The fewest repeats that give `total_batches` non-empty batches; taken from the end of
            # the order (the longest bucket) so they join batches of similar length.
            needed = (total_batches - 1) * size + 1
            if needed > len(order):
                order = np.concatenate([order, np.resize(order[::-1], needed - len(order))[::-1]])
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        groups = [batches[start : start + world] for start in range(0, len(batches), world)]
        if self.shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        return [batch.tolist() for group in groups for batch in group]

    def __iter__(self) -> Iterator[list[int]]:
        self.epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        skip, self._skip = self._skip, 0
        batches = self.epoch_batches(self.epoch)[self.rank :: self.num_replicas]
        self._yielded = skip
        for batch in batches[skip:]:
            self._yielded += 1
            yield batch

    def state_dict(self, consumed_batches: int | None = None) -> dict[str, Any]:
        """The position to resume from. With DataLoader workers the sampler runs ahead of training
        (prefetching); pass the number of batches the training loop really consumed this epoch."""
        return {
            "epoch": self.epoch,
            "batches_done": self._yielded if consumed_batches is None else consumed_batches,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
            "num_items": len(self.durations),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in (("seed", self.seed), ("batch_size", self.batch_size),
                           ("num_replicas", self.num_replicas), ("num_items", len(self.durations))):
            if state[key] != value:
                raise InputError(
                    f"cannot resume: the saved sampler had {key}={state[key]}, this one has {value}; "
                    "resume with the same data, batch size, seed and number of GPUs"
                )
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= self._batches_per_rank:
            # A finished epoch (a checkpoint after its last batch, as every epoch-end one) resumes at the
            # next epoch's start: Lightning starts the loader's iterator before it moves past the finished
            # epoch and trains the next epoch on that same iterator, which must not be the (empty) rest.
            epoch, done = epoch + 1, 0
        self.epoch = self._next_epoch = epoch
        self._skip = self._yielded = done


class EpochKeyedBatches(Sampler[list[tuple[int, int]]]):
    """`sampler`'s batches with every index keyed by the epoch it was drawn for: [(epoch, index), ...].

    The key travels to the DataLoader worker with the index (for `datasets.SeededItems`), so a worker
    never needs to be told the epoch: with Lightning, the first epoch's (and a resumed epoch's) workers
    start, and prefetch, before `on_train_epoch_start`.
    """

    def __init__(self, sampler: DurationBucketSampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on a DataLoader's batch_sampler
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.sampler:  # the sampler sets its epoch when its iteration starts
            yield [(self.sampler.epoch, index) for index in batch]


def evaluation_batches(durations: Sequence[float], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This rank's evaluation batches: utterances dealt round-robin in duration order (similar lengths
    per batch, near-equal work per rank), each exactly once over all ranks. Lightning needs at least one
    batch per rank, so a set smaller than the world repeats one utterance on the ranks left empty."""
    order = np.argsort(np.asarray(durations), kind="stable")
    mine = order[rank::world].tolist() or [int(order[rank % len(order)])]
    return [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]

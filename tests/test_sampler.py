"""DurationBucketSampler: coverage, determinism, DDP balance, resume, and the padding it saves."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from quartznet.data.sampler import DurationBucketSampler, padding_fraction


def librispeech_like(n: int, seed: int = 0) -> np.ndarray:
    """Synthetic durations skewed toward long, like train-clean-100 (1-16.7 s, mean ~12.7 s)."""
    return np.clip(16.8 - np.random.default_rng(seed).gamma(1.5, 2.7, n), 1.0, 16.7)


def rank_batches(durations, world: int, epoch: int = 0, **kwargs) -> list[list[list[int]]]:
    samplers = [DurationBucketSampler(durations, num_replicas=world, rank=r, **kwargs) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [list(sampler) for sampler in samplers]


def test_every_index_once_per_epoch_on_one_device():
    durations = librispeech_like(1001)
    sampler = DurationBucketSampler(durations, batch_size=32, num_buckets=8, num_replicas=1, rank=0)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32  # ceil(1001 / 32)
        assert sorted(i for batch in batches for i in batch) == list(range(1001))
        assert sorted(len(batch) for batch in batches)[1:] == [32] * 31  # one partial batch


def test_deterministic_per_seed_and_different_across_epochs():
    durations = librispeech_like(500)
    one = rank_batches(durations, 1, epoch=3, batch_size=16, seed=7)
    assert one == rank_batches(durations, 1, epoch=3, batch_size=16, seed=7)
    assert one != rank_batches(durations, 1, epoch=3, batch_size=16, seed=8)
    assert one != rank_batches(durations, 1, epoch=4, batch_size=16, seed=7)
    # Without set_epoch each iteration moves to the next epoch by itself.
    sampler = DurationBucketSampler(durations, batch_size=16, seed=7, num_replicas=1, rank=0)
    first, second = list(sampler), list(sampler)
    assert first != second and second == sampler.epoch_batches(1)


@pytest.mark.parametrize("n, world, batch_size", [(1000, 3, 16), (96, 2, 16), (7, 4, 4), (333, 8, 5)])
def test_ddp_ranks_get_equal_counts_and_cover_every_index(n, world, batch_size):
    durations = librispeech_like(n, seed=n)
    per_rank = rank_batches(durations, world, epoch=1, batch_size=batch_size, num_buckets=5)
    counts = {len(batches) for batches in per_rank}
    assert len(counts) == 1 and counts == {len(DurationBucketSampler(durations, batch_size, num_replicas=world, rank=0))}
    seen = Counter(i for batches in per_rank for batch in batches for i in batch)
    assert set(seen) == set(range(n))  # every index at least once
    repeats = sum(seen.values()) - n
    steps = counts.pop()
    assert repeats == max(0, (steps * world - 1) * batch_size + 1 - n) < batch_size * world
    if repeats == 0:
        assert max(seen.values()) == 1  # disjoint across ranks


def test_ddp_drop_last_gives_full_disjoint_batches():
    durations = librispeech_like(1000)
    per_rank = rank_batches(durations, 3, batch_size=16, drop_last=True)
    assert {len(batches) for batches in per_rank} == {1000 // 48}
    indices = [i for batches in per_rank for batch in batches for i in batch]
    assert all(len(batch) == 16 for batches in per_rank for batch in batches)
    assert len(indices) == len(set(indices)) == 1000 // 48 * 48


def test_ranks_get_similar_lengths_at_each_step():
    durations = librispeech_like(4000)
    per_rank = rank_batches(durations, 4, batch_size=32, num_buckets=40)
    longest = np.array([[durations[batch].max() for batch in batches] for batches in per_rank])  # (ranks, steps)
    # At every step the ranks hold neighbouring batches of the sorted order, so none waits long.
    assert np.median(longest.max(0) - longest.min(0)) < 0.2


def test_resume_skips_batches_already_consumed():
    durations = librispeech_like(300)
    sampler = DurationBucketSampler(durations, batch_size=8, seed=3, num_replicas=2, rank=1)
    sampler.set_epoch(5)
    full_epoch = sampler.epoch_batches(5)[1::2]
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(4)]
    state = sampler.state_dict()
    assert state["epoch"] == 5 and state["batches_done"] == 4

    resumed = DurationBucketSampler(durations, batch_size=8, seed=3, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(5)  # the training loop calls this at the start of the resumed epoch
    assert consumed + list(resumed) == full_epoch
    resumed.set_epoch(6)
    assert len(list(resumed)) == len(resumed)  # the next epoch is whole again

    # With prefetching workers the training loop's own count is the one to save.
    assert sampler.state_dict(consumed_batches=2)["batches_done"] == 2
    with pytest.raises(ValueError, match="batch_size=8, this one has 16"):
        DurationBucketSampler(durations, batch_size=16, seed=3, num_replicas=2, rank=1).load_state_dict(state)


def test_bucketing_pads_less_than_random_batching():
    durations = librispeech_like(5000)
    sampler = DurationBucketSampler(durations, batch_size=32, num_buckets=20, num_replicas=1, rank=0)
    bucketed = padding_fraction(list(sampler), durations)
    order = np.random.default_rng(0).permutation(len(durations))
    random = padding_fraction([order[i : i + 32] for i in range(0, len(order), 32)], durations)
    assert bucketed < 0.05 and random > 0.15
    assert padding_fraction([[0, 1]], [1.0, 3.0]) == pytest.approx(2 / 6)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"):
        DurationBucketSampler([1.0, 2.0], batch_size=1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        DurationBucketSampler([1.0, 2.0], batch_size=2, num_replicas=2, rank=0, drop_last=True)

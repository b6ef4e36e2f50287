"""Seeds that depend only on what they are for: a well-mixed seed from a key of small numbers.

Exact resume rests on it: a training step's randomness (quartznet.training.rng) and a DataLoader item's
waveform augmentation (quartznet.data.datasets.SeededItems) are drawn from generators seeded by
`item_seed(seed, rank/epoch, step/index)`, never from a stream whose state depends on what ran before.
"""

from __future__ import annotations

import numpy as np


def item_seed(*key: int) -> int:
    """A well-mixed 63-bit seed from non-negative ints (e.g. seed, epoch, index): neighbouring keys give
    unrelated streams (numpy's SeedSequence hashing), unlike `seed + index`."""
    state = np.random.SeedSequence([int(k) % 2**64 for k in key]).generate_state(2, np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & (2**63 - 1)

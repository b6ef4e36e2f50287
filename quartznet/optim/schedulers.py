"""Per-step learning-rate schedules with NeMo's names and formulas.

Both are LambdaLR multipliers of the optimiser's base lr (`lr` in the optim config):
- CosineAnnealing: linear warmup, then cosine from lr down to `min_lr` at `max_steps`.
- PolynomialHoldDecayAnnealing: linear warmup, hold at lr until `hold_steps`, then polynomial decay
  of `power` to `min_lr` (MatchboxNet's schedule: power 2, warmup 5%, hold 45%, min_lr 0.001).
Warmup and hold are given in steps or as a ratio of `max_steps`. NeMo's warmup rule: at step s the
lr is base * (s + 1) / (warmup + 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from quartznet.common.errors import ConfigError


def _steps(max_steps: int, steps: int | None, ratio: float | None, name: str) -> int:
    if steps is not None and ratio is not None:
        raise ConfigError(f"give either {name}_steps or {name}_ratio, not both")
    if ratio is not None:
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"{name}_ratio must lie in [0, 1], got {ratio}")
        return int(ratio * max_steps)
    return int(steps or 0)


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / (warmup_steps + 1)


def cosine_annealing(
    max_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
    warmup_steps: int | None = None,
    warmup_ratio: float | None = None,
) -> Callable[[int], float]:
    """Multiplier of base_lr at each step."""
    warmup = _steps(max_steps, warmup_steps, warmup_ratio, "warmup")
    decay = max(max_steps - warmup, 1)

    def multiplier(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        progress = min(step - warmup, decay) / decay
        lr = min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr / base_lr

    return multiplier


def polynomial_hold_decay(
    max_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
    power: float = 2.0,
    warmup_steps: int | None = None,
    warmup_ratio: float | None = None,
    hold_steps: int | None = None,
    hold_ratio: float | None = None,
) -> Callable[[int], float]:
    warmup = _steps(max_steps, warmup_steps, warmup_ratio, "warmup")
    hold = max(_steps(max_steps, hold_steps, hold_ratio, "hold"), warmup)
    decay = max(max_steps - hold, 1)

    def multiplier(step: int) -> float:
        if step < warmup:
            return _warmup(step, warmup)
        if step < hold:
            return 1.0
        progress = min(step - hold, decay) / decay
        return (min_lr + (base_lr - min_lr) * (1.0 - progress) ** power) / base_lr

    return multiplier


# Keys NeMo writes into `optim.sched` that do not change a per-step schedule.
INERT_SCHEDULE_KEYS = ("last_epoch", "monitor", "reduce_on_plateau", "t_max_epochs", "t_accumulate_grad_batches",
                       "t_limit_train_batches", "t_num_workers")

SCHEDULES = {
    "CosineAnnealing": cosine_annealing,
    "PolynomialHoldDecayAnnealing": polynomial_hold_decay,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, max_steps: int, **options: float | int | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR for schedule `name` (NeMo's names) over `max_steps` optimiser steps."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    options = {key: value for key, value in options.items() if key not in INERT_SCHEDULE_KEYS}
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[name](max_steps, base_lr, **options))

"""Optimisers and per-step learning-rate schedules (plain PyTorch)."""

from quartznet.optim.novograd import NovoGrad
from quartznet.optim.schedulers import build_scheduler

__all__ = ["NovoGrad", "build_scheduler"]

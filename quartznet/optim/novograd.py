"""NovoGrad (Ginsburg et al., arXiv 1905.11286), QuartzNet's optimiser, as NeMo runs it
(docs/nemo_compatibility.md §5).

Per parameter tensor, a scalar second moment of the squared gradient norm:
    v = ||g||^2 on the first step, then v = b2 * v + (1 - b2) * ||g||^2
    g = g / (sqrt(v) + eps) + weight_decay * p
    m = b1 * m + g        (no (1 - b1) factor: NeMo's default grad_averaging=False)
    p = p - lr * m
torch has no NovoGrad and torch-optimizer is unmaintained, so it lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from quartznet.common.errors import ConfigError


class NovoGrad(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.01,
        betas: tuple[float, float] = (0.95, 0.98),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_averaging: bool = False,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ConfigError(f"NovoGrad: lr, eps and weight_decay must be >= 0 (got {lr}, {eps}, {weight_decay})")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ConfigError(f"NovoGrad: betas must lie in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, grad_averaging=grad_averaging)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("NovoGrad does not support sparse gradients")
                grad = param.grad.float()
                state = self.state[param]
                norm_sq = grad.pow(2).sum()
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
                    state["exp_avg_sq"] = norm_sq.clone()
                else:
                    state["exp_avg_sq"].mul_(beta2).add_(norm_sq, alpha=1.0 - beta2)
                state["step"] += 1
                grad = grad / (state["exp_avg_sq"].sqrt() + group["eps"])
                if group["weight_decay"]:
                    grad = grad.add(param.float(), alpha=group["weight_decay"])
                if group["grad_averaging"]:
                    grad = grad.mul(1.0 - beta1)
                state["exp_avg"].mul_(beta1).add_(grad)
                param.add_(state["exp_avg"].to(param.dtype), alpha=-group["lr"])
        return loss

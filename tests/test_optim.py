"""NovoGrad against steps computed by hand from docs/nemo_compatibility.md §5's update rule."""

from __future__ import annotations

import pytest
import torch

from quartznet.optim.novograd import NovoGrad


def test_two_steps_match_hand_computation():
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = NovoGrad([param], lr=0.1, betas=(0.8, 0.5), weight_decay=0.01, eps=1e-8)

    # step 1: g = [0.3, -0.4], ||g||^2 = 0.25 -> v = 0.25 (initialised to the first norm)
    # g / sqrt(v) = [0.6, -0.8]; + 0.01 p = [0.61, -0.78] = m; p -= 0.1 m -> [0.939, 2.078]
    param.grad = torch.tensor([0.3, -0.4])
    optimizer.step()
    torch.testing.assert_close(param.data, torch.tensor([0.939, 2.078]), atol=1e-6, rtol=0)

    # step 2: g = [0, 1], ||g||^2 = 1 -> v = 0.5 * 0.25 + 0.5 * 1 = 0.625, sqrt(v) = 0.7905694
    # g / sqrt(v) + 0.01 p = [0.00939, 1.2649111 + 0.02078] ; m = 0.8 [0.61, -0.78] + that
    #   = [0.49739, 0.6616911] ; p -= 0.1 m -> [0.889261, 2.0118309]
    param.grad = torch.tensor([0.0, 1.0])
    optimizer.step()
    torch.testing.assert_close(param.data, torch.tensor([0.889261, 2.0118309]), atol=1e-6, rtol=0)


def test_second_moment_is_one_scalar_per_tensor():
    weights = torch.nn.Parameter(torch.randn(3, 4))
    optimizer = NovoGrad([weights])
    weights.grad = torch.randn(3, 4)
    optimizer.step()
    assert optimizer.state[weights]["exp_avg_sq"].shape == ()
    torch.testing.assert_close(optimizer.state[weights]["exp_avg_sq"], weights.grad.pow(2).sum())


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="betas"):
        NovoGrad([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 1.0))

"""The training loop's bf16 autocast on CUDA against fp32: the loss and the parameter gradients of a training step,
which go through the descent's second-order graph, must agree on a small case. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from ebt_vision.core.config import from_dict
from ebt_vision.image.objective import DenoisingObjective

from .conftest import TINY, noisy_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast is used on CUDA only")


def _step(objective: DenoisingObjective, batch, bf16: bool) -> tuple[float, torch.Tensor]:
    """One training step's loss and its gradient over every parameter (flattened), from the same random draws."""
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = objective(batch)
    out.loss.backward()
    grads = [p.grad.float().flatten() for p in objective.parameters() if p.grad is not None]
    return float(out.loss), torch.cat(grads)


def test_bf16_second_order_descent_matches_fp32_on_a_small_case():
    cfg = from_dict({**TINY, "model": {"patch_size": 4, "width": 64, "depth": 2, "heads": 2},
                     "descent": {"num_steps": 2, "step_size": 5.0}})  # fmt: skip
    torch.manual_seed(0)
    objective = DenoisingObjective(cfg).cuda().train()
    with torch.no_grad():  # zero-initialised heads make the untrained energy flat: give it a landscape
        for param in objective.parameters():
            param.add_(0.05 * torch.randn_like(param))
    clean = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)).cuda() * 2 - 1
    batch = noisy_batch(clean, 25.0)
    loss32, grad32 = _step(objective, batch, bf16=False)
    loss16, grad16 = _step(objective, batch, bf16=True)
    assert loss16 == pytest.approx(loss32, rel=3e-2)
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > 0.99, f"bf16 gradient direction off: cosine {cosine:.4f}"
    assert (grad16.norm() / grad32.norm() - 1).abs() < 0.05
    assert grad32.abs().sum() > 0 and torch.isfinite(grad16).all()

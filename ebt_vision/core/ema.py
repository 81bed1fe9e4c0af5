"""An exponential moving average of a module's weights, kept beside training and used for evaluation and saving."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class WeightAverage:
    """``average <- d * average + (1 - d) * weights`` after every optimiser step, with ``d = min(decay, (1 + step) /
    (10 + step))``: the warm-up keeps the first steps' random weights from dominating a short run. Floating-point
    parameters and buffers are averaged in float32; integer buffers are copied. The state is a plain dict of tensors,
    so it travels in a training checkpoint and resumes exactly."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.average = {name: value.detach().float().clone() for name, value in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Fold in the weights after optimiser step ``step`` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, value in module.state_dict().items():
            held = self.average[name]
            if value.is_floating_point():
                held.mul_(decay).add_(value.detach().float(), alpha=1 - decay)
            else:
                held.copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        return self.average

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.average) - set(state)
        if missing:
            raise KeyError(f"the saved weight average lacks {sorted(missing)[:5]}")
        self.average = {name: state[name].float().clone() for name in self.average}

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into ``module`` (in its own dtypes and devices)."""
        module.load_state_dict({name: held.to(value) for (name, value), held in
                                zip(module.state_dict().items(), self.average.values(), strict=True)})  # fmt: skip

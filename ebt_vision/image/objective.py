"""Image denoising with the EBT: descend from the noisy image; loss against the clean image over the steps."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..core.hub import HubModel, as_config
from ..core.objective import EnergyObjective, StepOutput
from .config import ImageConfig
from .data import DenoisingBatch
from .model import ImageEBT


def clamp_pixels(x: Tensor) -> Tensor:
    return x.clamp(-1.0, 1.0)


class DenoisingObjective(EnergyObjective, HubModel):
    """The image EBT trained by descending from the noisy image, scored against the clean image after every step."""

    def __init__(self, cfg: ImageConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(ImageEBT(cfg.model), cfg.descent)
        self.cfg = cfg

    def projection(self):
        return clamp_pixels

    def forward(self, batch: DenoisingBatch) -> StepOutput:
        conditioning = {"sigma": batch.noise.sigma} if self.cfg.model.sigma_conditioning else None
        trajectory, clean = self.descend(batch.noisy, batch.noisy, batch.clean, conditioning)
        loss, loss_last = self.step_losses(trajectory, clean, self.cfg.train.loss, self.cfg.train.loss_on_steps)
        metrics = {
            "loss": loss.detach(),
            "loss_last": loss_last.detach(),
            "mse_last": F.mse_loss(trajectory.final.detach().float(), clean),
            **self.descent_metrics(trajectory),
        }
        return StepOutput(loss, metrics)

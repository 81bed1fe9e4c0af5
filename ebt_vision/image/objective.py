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
        train = self.cfg.train
        conditioning = {"sigma": batch.noise.sigma} if self.cfg.model.sigma_conditioning else None
        rows = self.descend_rows(batch.noisy, batch.noisy, batch.clean, conditioning)
        trajectory, clean = rows.trajectory, rows.target
        reconstruction, loss_last = self.step_losses(trajectory, clean, train.loss, train.loss_on_steps)
        terms = self.landscape_losses(rows, train) if self.training else {}
        weights = {"stationarity": train.stationarity_weight, "rank": train.rank_weight}
        loss = reconstruction + sum(weights[name] * value for name, value in terms.items())
        metrics = {
            "loss": loss.detach(),
            "loss_reconstruction": reconstruction.detach(),
            "loss_last": loss_last.detach(),
            "mse_last": F.mse_loss(trajectory.final.detach().float(), clean),
            **{f"loss_{name}": value.detach() for name, value in terms.items()},
            **self.descent_metrics(trajectory),
        }
        return StepOutput(loss, metrics)

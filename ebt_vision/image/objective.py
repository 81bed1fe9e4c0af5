"""Image denoising with the EBT: descend from the noisy image towards the clean one (see ``energy_step``)."""

from __future__ import annotations

from ..core.hub import HubModel, as_config
from ..core.objective import EnergyObjective, StepOutput, clamp_unit_range
from .config import ImageConfig
from .data import DenoisingBatch
from .model import ImageEBT


class DenoisingObjective(EnergyObjective, HubModel):
    """The image EBT: the descent starts at the noisy image, which is also its context; the target is the clean one."""

    def __init__(self, cfg: ImageConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(ImageEBT(cfg.model), cfg)

    def projection(self):
        return clamp_unit_range

    def forward(self, batch: DenoisingBatch) -> StepOutput:
        conditioning = {"sigma": batch.noise.sigma} if self.cfg.model.sigma_conditioning else None
        return self.energy_step(batch.noisy, batch.noisy, batch.clean, conditioning)[0]

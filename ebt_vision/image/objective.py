"""Image denoising with the EBT: descend from the noisy image towards the clean one (see ``energy_step``)."""

from __future__ import annotations

import torch

from ..core.checkpoint import CheckpointError
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

    def initial_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``train.init_from`` weights for this EBT: its own kind's as they are, or a plain denoiser's (the EBT's trunk
        trained to predict the clean image in one pass, ``--model transformer``) mapped so that the EBT starts as it.

        The trunk's blocks, condition and output layer are copied; its patch embedding reads the noisy half of the EBT's
        input and the candidate half starts at zero. With the residual energy read against the noisy image
        (``model.relative_to_noisy``) the energy is then |x - noisy - r(noisy)|^2 / 2 per patch, whose first step of
        size 1 lands exactly on the trunk's output; training then teaches it to read the candidate."""
        # a plain denoiser's output layer has a bias at <head>.bias; an EBT's head keeps it at <head>.out.bias, and the
        # linear head of checkpoints from before the head kinds (<head>.weight) has none
        if "model.head.bias" not in tensors:
            return tensors
        m = self.cfg.model
        if m.energy != "residual" or not m.relative_to_noisy:
            raise CheckpointError(
                "these are a plain denoiser's weights: an EBT starts from them only with model.energy: residual and "
                "model.relative_to_noisy: true (the energy whose first step is the plain denoiser's prediction)"
            )
        state = {name: value.clone() for name, value in self.state_dict().items()}
        noisy = tensors["model.embed.weight"]
        if state["model.embed.weight"].shape != (noisy.shape[0], 2 * noisy.shape[1]):
            raise CheckpointError(
                f"the plain denoiser's patch embedding {tuple(noisy.shape)} does not fit this EBT's "
                f"{tuple(state['model.embed.weight'].shape)} (width, patch size or channels differ)"
            )
        state["model.embed.weight"] = torch.cat([noisy, torch.zeros_like(noisy)], dim=1)
        for name in ("model.sigma_embed.linear.weight", "model.sigma_embed.linear.bias"):
            if name in state:  # a conditioned EBT from a blind trunk: the noise level starts by changing nothing
                state[name] = torch.zeros_like(state[name])
        renamed = {"model.head.weight": "model.head.out.weight", "model.head.bias": "model.head.out.bias"}
        for name, value in tensors.items():
            target = renamed.get(name, name)
            if target == "model.embed.weight":
                continue
            if target not in state:
                raise CheckpointError(f"the plain denoiser's {name} has no place in this EBT")
            if state[target].shape != value.shape:
                raise CheckpointError(f"the plain denoiser's {name} {tuple(value.shape)} does not fit this EBT's "
                                      f"{tuple(state[target].shape)}")  # fmt: skip
            state[target] = value
        return state

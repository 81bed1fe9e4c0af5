"""Objectives compose an energy model, the descent and a loss; the training loop knows nothing EBT-specific."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ExperimentConfig, OptimConfig
from .descent import StepSize, compiled_energy_gradient, minimize_energy
from .energy_image import ImageEBT
from .noise import noise_sigma


@dataclass
class StepOutput:
    loss: Tensor
    metrics: dict[str, Tensor]  # detached scalars for logging; "energy_abs_max" is watched for divergence


def reconstruction_loss(prediction: Tensor, target: Tensor, kind: str) -> Tensor:
    if kind == "mse":
        return F.mse_loss(prediction, target)
    return F.smooth_l1_loss(prediction, target, beta=1.0)


def weight_decay_groups(module: nn.Module, optim: OptimConfig, skip: set[int] = frozenset()) -> list[dict]:
    """Decay matrices only; biases, norms, embeddings-as-vectors and ``skip`` parameters get none."""
    decay, no_decay = [], []
    for param in module.parameters():
        if not param.requires_grad or id(param) in skip:
            continue
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class DenoisingObjective(nn.Module):
    """Image denoising: descend from the noisy image; loss against the clean image, averaged over all steps."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = ImageEBT(cfg.model)
        self.step_size = StepSize(cfg.descent.step_size, cfg.descent.learn_step_size)
        self.gradient_fn = None

    def compile_for_training(self) -> None:
        """Compile the energy's gradient function (``train.compile``); see ``compiled_energy_gradient``."""
        self.gradient_fn = compiled_energy_gradient(self.model)

    def forward(self, batch: tuple[Tensor, Tensor, Tensor]) -> StepOutput:
        noisy, clean, levels = batch
        energy_fn, gradient_fn = self.model, self.gradient_fn
        if self.cfg.model.sigma_conditioning:  # the non-blind variant is told each sample's noise sigma
            sigma = noise_sigma(levels, self.cfg.data.noise).to(noisy.device)
            energy_fn = partial(self.model, sigma=sigma)
            gradient_fn = gradient_fn and partial(gradient_fn, sigma=sigma)
        trajectory = minimize_energy(
            energy_fn,
            noisy,
            noisy,
            self.cfg.descent,
            self.step_size(),
            create_graph=self.training,
            randomize=self.training,
            checkpoint_steps=self.cfg.descent.checkpoint_steps,
            gradient_fn=gradient_fn,
        )
        losses = [reconstruction_loss(c.float(), clean, self.cfg.train.loss) for c in trajectory.candidates[1:]]
        loss = losses[-1] if self.cfg.train.loss_on_steps == "last" else torch.stack(losses).mean()
        metrics = {
            "loss": loss.detach(),
            "loss_last": losses[-1].detach(),
            "mse_last": F.mse_loss(trajectory.final.detach().float(), clean),
            "energy_mean": trajectory.energies.mean(),
            "energy_abs_max": trajectory.energies.abs().max(),
            "grad_norm_mean": trajectory.grad_norms.mean(),
            "step_size": self.step_size().detach(),
        }
        return StepOutput(loss, metrics)

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """AdamW groups; the log step size learns at its own rate without weight decay."""
        groups = weight_decay_groups(self, optim, skip={id(self.step_size.log_value)})
        if self.step_size.log_value.requires_grad:
            lr = optim.lr * self.cfg.descent.step_size_lr_multiplier
            groups.append({"params": [self.step_size.log_value], "weight_decay": 0.0, "lr": lr})
        return groups

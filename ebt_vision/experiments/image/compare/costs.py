"""What each method costs: FLOPs of one pass (in DiT forward passes) and of one training step."""

from __future__ import annotations

import torch
from torch import nn

from ....core.flops import count_flops
from ....image.config import ImageConfig
from ....image.data import DenoisingBatch
from ....image.noise import NoiseLevel


def pass_costs(ebt: nn.Module, dit: nn.Module) -> dict[str, float]:
    """FLOPs of one pass on one training-size tile, in units of one DiT forward pass."""
    tile = ebt.cfg.data.crop_size
    x = torch.zeros(1, ebt.cfg.model.channels, tile, tile, device=next(ebt.parameters()).device)
    with torch.no_grad():
        dit_forward = count_flops(lambda: dit.model(x, torch.tensor([50])))
        ebt_forward = count_flops(lambda: ebt.model(x, x))

    def ebt_gradient():  # the descent's gradient to the candidate (no parameter gradients)
        candidate = x.clone().requires_grad_(True)
        torch.autograd.grad(ebt.model(x, candidate).sum(), candidate)

    ebt_backward = count_flops(ebt_gradient) - ebt_forward
    return {
        "dit_forward_flops": dit_forward,
        "ebt_forward": ebt_forward / dit_forward,
        "ebt_backward": ebt_backward / dit_forward,
    }


def training_step_flops(objective: nn.Module, cfg: ImageConfig) -> int:
    """FLOPs of one training step (forward and backward, the EBT's descent included) on a batch of the config's size.
    The count does not depend on the weights or the pixels, so random ones serve."""
    was_training = objective.training
    objective.train()
    size, batch = cfg.data.crop_size, cfg.data.batch_size
    device = next(objective.parameters()).device
    clean = torch.rand(batch, cfg.model.channels, size, size, device=device) * 2 - 1
    noise = NoiseLevel("gaussian", torch.full((batch,), 25.0, device=device))
    data = DenoisingBatch(noise.add_to(clean), clean, noise)
    try:
        flops = count_flops(lambda: objective(data).loss.backward())
    finally:
        objective.zero_grad(set_to_none=True)
        objective.train(was_training)
    return flops


def training_compute(
    objective: nn.Module, steps: int, path=None, builders: tuple | None = None
) -> tuple[float, list[str]]:
    """Counted FLOPs of all the training behind a trained image model: ``steps`` of its own, plus those of the model it
    started from (``train.init_from``), followed back as far as the checkpoints are found; and the stages in words.
    ``path``: where the model itself was loaded from (an init_from naming it again is not counted twice);
    ``builders``: the objective classes an ``init_from`` checkpoint may be (the first whose weights fit is taken;
    default: the image EBT, the plain denoiser and the DiT)."""
    from ....core.checkpoint import CheckpointError, load_weights, read_checkpoint
    from ....core.config import ConfigError
    from ....core.paths import resolve_path
    from ....image.dit import DiTObjective
    from ....image.objective import DenoisingObjective
    from ....image.plain import PlainDenoisingObjective

    builders = builders or (DenoisingObjective, PlainDenoisingObjective, DiTObjective)
    flops = steps * training_step_flops(objective, objective.cfg)
    stages = [f"{objective.cfg.name} {steps} steps {flops / 1e15:.3f} PFLOP"]
    source, seen = objective.cfg.train.init_from, set()
    if path is not None:
        seen.add(resolve_path(path, "checkpoint", CheckpointError).resolve())
    while source:
        try:
            path, tensors, cfg, extra = read_checkpoint(source)
        except CheckpointError:
            stages.append(f"its init_from {source}: not found, not counted")
            break
        if path.resolve() in seen:  # a model folder overwritten by one trained from it
            stages.append(f"its init_from {source}: already counted (a loop), not counted again")
            break
        seen.add(path.resolve())
        for build in builders:
            try:  # a kind of model that refuses this config, or whose weights do not fit, is not the one
                model = build(cfg)
                load_weights(model, tensors, path, "an init_from model")
                break
            except (CheckpointError, ConfigError):
                continue
        else:
            stages.append(f"its init_from {source}: no known model, not counted")
            break
        earlier_steps = int(extra.get("step", cfg.train.steps))
        earlier = earlier_steps * training_step_flops(model, cfg)
        flops += earlier
        stages.append(f"from {source} ({earlier_steps} steps {earlier / 1e15:.3f} PFLOP)")
        source = cfg.train.init_from
    return flops, stages

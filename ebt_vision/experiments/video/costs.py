"""What each method costs: FLOPs of one training step and of one predicted frame, counted on what actually runs.

PyTorch's fused attention kernel on the CPU (``_scaled_dot_product_flash_attention_for_cpu``) has no FLOP formula
in ``torch.utils.flop_counter``, so counting the models as they run on a CPU would leave attention out. The counts are
taken on a copy whose attention runs in plain matrix products (the project's ``math`` backend; diffusers'
``AttnProcessor``): the same arithmetic the fused kernels do, on any device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...core.flops import count_flops
from ...core.layers import Attention
from ...video.config import VideoConfig


def counting_copy(objective: nn.Module) -> nn.Module:
    """A copy of ``objective`` whose attention is computed in plain, countable ops."""
    counted = copy.deepcopy(objective)
    for module in counted.modules():
        if isinstance(module, Attention):
            module.backend = "math"
        elif hasattr(module, "set_attn_processor"):  # a diffusers model
            from diffusers.models.attention_processor import AttnProcessor

            module.set_attn_processor(AttnProcessor())
    return counted


def random_clips(cfg: VideoConfig, batch: int, device: torch.device | str = "cpu") -> Tensor:
    d = cfg.data
    return torch.rand(batch, d.frames, cfg.model.channels, d.frame_size, d.frame_size, device=device) * 2 - 1


def training_step_flops(objective: nn.Module, cfg: VideoConfig) -> int:
    """FLOPs of one training step (forward, the EBT's descent, backward) on a batch of the config's size. The count
    does not depend on the weights or the pixels, so random clips serve."""
    counted = counting_copy(objective).train()
    clips = random_clips(cfg, cfg.data.batch_size, next(counted.parameters()).device)
    return count_flops(lambda: counted(clips).loss.backward())


def frame_flops(
    counted: nn.Module | None, predict: Callable[[nn.Module | None, Tensor], object], cfg: VideoConfig
) -> float:
    """FLOPs per predicted frame of ``predict(counted, context)`` rolling out one clip over the test horizon (the
    context grows as frames are predicted, so this is the mean over the rollout). ``counted``: a ``counting_copy``
    of the model in eval mode, or None (no network: 0)."""
    if counted is None:
        return 0.0
    context = random_clips(cfg, 1, next(counted.parameters()).device)[:, : cfg.data.context_frames]
    with torch.no_grad():
        return count_flops(lambda: predict(counted, context)) / cfg.horizon

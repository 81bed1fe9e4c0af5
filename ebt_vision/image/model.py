"""Bidirectional image EBT: (noisy image = context, candidate image) -> one energy per image.

With ``model.noisy_context`` off the energy sees the candidate alone (the original work's denoiser): the noisy image
is then only where the descent starts, and the context argument is checked for shape but never read."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.config import ConfigError
from ..core.energy import EnergyHead
from ..core.errors import InputError
from ..core.layers import adaln_blocks, init_adaln_trunk, patchify, sincos_position_embedding
from .config import ModelConfig


def check_image_pair(context: Tensor, candidate: Tensor, channels: int, patch_size: int) -> None:
    """Clear errors for shapes the model cannot take."""
    if context.dim() != 4 or candidate.dim() != 4:
        raise InputError(
            f"expected images of shape (B, C, H, W), got {tuple(context.shape)} and {tuple(candidate.shape)}"
        )
    if context.shape != candidate.shape:
        raise InputError(f"context {tuple(context.shape)} and candidate {tuple(candidate.shape)} differ in shape")
    _, c, h, w = context.shape
    if c != channels:
        raise InputError(f"the model takes {channels}-channel images, got {c} channels")
    if h < patch_size or w < patch_size:
        raise InputError(f"image {h}x{w} is smaller than one {patch_size}x{patch_size} patch")
    if h % patch_size or w % patch_size:
        raise InputError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}; crop or pad it first")


class SigmaEmbedding(nn.Module):
    """(B,) noise sigma on 0-255 -> (B, D): sinusoidal features of the sigma, linearly mapped to the width.

    One linear layer (not DiT's two-layer timestep MLP): every block's adaLN already applies SiLU and a linear map to
    the condition, and the smaller embedding keeps the conditioned EBT within 2% of the blind one's parameters.
    """

    def __init__(self, width: int, frequencies: int = 16) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.linear = nn.Linear(2 * frequencies, width)

    def forward(self, sigma: Tensor) -> Tensor:
        scales = torch.exp(-math.log(1000.0) * torch.arange(self.frequencies, device=sigma.device) / self.frequencies)
        angles = sigma.float()[:, None] * 4.0 * scales[None]  # sigma 0-255 spans ~1000 "timesteps" of angle
        return self.linear(torch.cat([angles.sin(), angles.cos()], dim=-1))


# The smallest sigma (0-255) a correction in units of the noise is scaled to (and a loss in those units divides by):
# the DiT's first timestep is about as noisy.
NOISE_SCALE_FLOOR = 1.0


def noise_scale(sigma: Tensor | float, like: Tensor, floor: float = 0.0) -> Tensor:
    """Sigma (per image or one for all, 0-255) -> (B, 1, 1, 1) noise std in [-1, 1] units, at least ``floor``: the
    scale of a correction proposed in units of the noise (``model.noise_scaled_output``)."""
    sigma = torch.as_tensor(sigma, device=like.device, dtype=torch.float32).reshape(-1).expand(like.shape[0])
    return (sigma.clamp(min=floor) / 127.5).to(like.dtype)[:, None, None, None]


def sigma_condition(
    condition: Tensor, embed: SigmaEmbedding | None, batch: int, sigma: Tensor | float | None, dtype: torch.dtype
) -> Tensor:
    """The adaLN condition (B, D) of an image model: its learned ``condition``, plus the embedded noise sigma for a
    conditioned model (``embed``); a clear error when a blind model is given sigma or a conditioned one is not."""
    cond = condition.to(dtype).expand(batch, -1)
    if embed is None:
        if sigma is not None:
            raise InputError("this model is blind (model.sigma_conditioning is off); do not pass sigma")
        return cond
    if sigma is None:
        raise InputError("this model is conditioned on the noise level: pass sigma (B,) on the 0-255 scale")
    sigma = torch.as_tensor(sigma, device=cond.device, dtype=torch.float32).reshape(-1).expand(batch)
    return cond + embed(sigma).to(dtype)


class ImageEBT(nn.Module):
    """A transformer over patches of [context, candidate] whose head gives one energy per patch (``model.energy``:
    the parameterisations of ``ebt_vision.core.energy``).

    The image energy is the SUM of the per-patch energies (``forward``); ``patch_energies`` keeps them apart for
    energy maps. Summing (rather than the mean used in the original work) makes dE/dpixel, and so the step size,
    independent of the number of patches: a model trained on small crops descends full photos at the same scale.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.noise_scaled_output and not (cfg.energy == "residual" and cfg.relative_to_noisy):
            raise ConfigError("model.noise_scaled_output scales the residual bowl's proposal: an EBT with it needs "
                              "model.energy: residual and model.relative_to_noisy: true")  # fmt: skip
        self.cfg = cfg
        width, p = cfg.width, cfg.patch_size
        inputs = 2 if cfg.noisy_context else 1
        self.embed = nn.Linear(inputs * cfg.channels * p * p, width)  # (context and) candidate pixels of one patch
        self.condition = nn.Parameter(torch.randn(width) * 0.02)  # the one learned adaLN condition
        # Non-blind variant: the noise sigma (0-255) is embedded and added to the condition, as DiT adds its timestep.
        self.sigma_embed = SigmaEmbedding(width) if cfg.sigma_conditioning else None
        self.blocks = adaln_blocks(cfg)
        self.head = EnergyHead(width, cfg.channels * p * p, cfg.energy)  # per patch: tokens and candidate pixels
        init_adaln_trunk(self, self.blocks)
        self.head.reset_parameters()

    def _condition(self, batch: int, sigma: Tensor | None, dtype: torch.dtype) -> Tensor:
        return sigma_condition(self.condition, self.sigma_embed, batch, sigma, dtype)

    def tokens(
        self, context: Tensor, candidate: Tensor, depth: int | None = None, sigma: Tensor | None = None
    ) -> Tensor:
        """(B, C, H, W), (B, C, H, W) -> (B, N, D) after ``depth`` blocks (all by default)."""
        x, cond = self._embedded(context, candidate, sigma)
        for block in self.blocks[:depth]:
            x = block(x, cond)
        return x

    def _embedded(self, context: Tensor, candidate: Tensor, sigma: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> the tokens before the first block (B, N, D) with their positions, and the adaLN condition (B, D)."""
        check_image_pair(context, candidate, self.cfg.channels, self.cfg.patch_size)
        p = self.cfg.patch_size
        grid_h, grid_w = context.shape[2] // p, context.shape[3] // p
        pixels = [patchify(context, p), patchify(candidate, p)] if self.cfg.noisy_context else [patchify(candidate, p)]
        x = self.embed(torch.cat(pixels, dim=-1))
        x = x + sincos_position_embedding(grid_h, grid_w, self.cfg.width, x.device, x.dtype)
        return x, self._condition(x.shape[0], sigma, x.dtype)

    def patch_energies(self, context: Tensor, candidate: Tensor, sigma: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (B, C, H, W) -> (B, H/p, W/p) energy per patch; ``sigma`` (B,) for conditioned models."""
        p = self.cfg.patch_size
        tokens = self.tokens(context, candidate, sigma=sigma)
        values = candidate - context.to(candidate.dtype) if self.cfg.relative_to_noisy else candidate
        if self.cfg.noise_scaled_output:  # the bowl s^2 |v / s - f|^2 / 2 = |v - s f|^2 / 2: centred on s f
            scale = noise_scale(sigma, values, NOISE_SCALE_FLOOR)
            energies = self.head(tokens, patchify(values / scale, p)) * scale.reshape(-1, 1) ** 2
        else:
            energies = self.head(tokens, patchify(values, p))  # (B, N)
        return energies.reshape(context.shape[0], context.shape[2] // p, context.shape[3] // p)

    def forward(self, context: Tensor, candidate: Tensor, sigma: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (B, C, H, W) -> (B,): the sum of per-patch energies."""
        return self.patch_energies(context, candidate, sigma).sum(dim=(1, 2))

    def features(
        self, context: Tensor, candidate: Tensor | None = None, depth: int | None = None, sigma: Tensor | None = None
    ) -> Tensor:
        """(B, C, H, W) -> (B, D): mean-pooled tokens for linear probing; the candidate defaults to the context."""
        tokens = self.tokens(context, context if candidate is None else candidate, depth, sigma)
        return tokens.mean(dim=1)

    def layer_features(self, context: Tensor, candidate: Tensor, sigma: Tensor | None = None) -> list[Tensor]:
        """(B, C, H, W) x2 -> depth + 1 tensors (B, D): mean-pooled tokens after the embedding and after each block,
        in one pass (for the layer sweep of a linear probe)."""
        x, cond = self._embedded(context, candidate, sigma)
        pooled = [x.mean(dim=1)]
        for block in self.blocks:
            x = block(x, cond)
            pooled.append(x.mean(dim=1))
        return pooled

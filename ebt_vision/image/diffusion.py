"""The diffusers pieces both DiT baselines share (image denoising, next-frame video): the DiT network, DDPM training
on the project's one noise schedule (``image.noise``), and the two DDIM samplers, from a given timestep (denoising a
photo whose noise matches it) and from pure noise (generating a frame)."""

from __future__ import annotations

from functools import cache

from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel

from .noise import DIFFUSION_STEPS, diffusion_betas


def dit_transformer(
    in_channels: int, out_channels: int, sample_size: int, patch_size: int, depth: int, head_dim: int, heads: int
) -> DiTTransformer2DModel:
    """diffusers' DiT with adaLN-Zero, unconditional (one class), predicting epsilon only (no learned variance)."""
    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=depth,
        sample_size=sample_size,
        patch_size=patch_size,
        num_embeds_ada_norm=1,
        norm_type="ada_norm_zero",
    )


@cache
def training_scheduler() -> DDPMScheduler:
    """DDPM on the project's one diffusion schedule (``ebt_vision.image.noise``)."""
    return DDPMScheduler(num_train_timesteps=DIFFUSION_STEPS, trained_betas=diffusion_betas().tolist())


def ddim_scheduler(start: int, steps: int | None = None, clip_sample: bool = True) -> DDIMScheduler:
    """A DDIM sampler with ``min(steps, start + 1)`` steps (all when None) from exactly ``start`` down to near 0.

    It is built on the training schedule's first ``start + 1`` betas (so every timestep and alpha is the training
    one) with "leading" spacing shifted by ``steps_offset``: the timesteps are ``start, start - s, ...`` with the
    uniform stride s = (start + 1) // k that ``DDIMScheduler.step`` also uses to find each previous timestep, so every
    step is consistent. ``dit_denoise`` returns the last step's x0 estimate.
    """
    total = start + 1
    count = total if steps is None else min(steps, total)
    stride = total // count
    scheduler = DDIMScheduler(
        num_train_timesteps=total,
        trained_betas=diffusion_betas()[:total].tolist(),
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        steps_offset=start - (count - 1) * stride,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(count)
    return scheduler


def ddim_sampler(steps: int, clip_sample: bool = True, prediction_type: str = "epsilon") -> DDIMScheduler:
    """DDIM in ``steps`` steps from t = 999 ("trailing" spacing); the last step lands on alpha = 1 (a clean sample).
    ``prediction_type``: what the network outputs, "epsilon" (the noise) or "sample" (the clean sample)."""
    scheduler = DDIMScheduler(
        num_train_timesteps=DIFFUSION_STEPS,
        trained_betas=diffusion_betas().tolist(),
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
        prediction_type=prediction_type,
    )
    scheduler.set_timesteps(steps)
    return scheduler

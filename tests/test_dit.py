"""The diffusers DiT baseline: training, sigma <-> timestep mapping, DDIM pass counting, exactness with an oracle."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from ebt_vision.core.config import from_dict, load_config
from ebt_vision.core.layers import count_parameters
from ebt_vision.image.config import DiTConfig
from ebt_vision.image.diffusion import ddim_scheduler
from ebt_vision.image.dit import DiTObjective, dit_denoise, training_max_timestep
from ebt_vision.image.model import ImageEBT
from ebt_vision.image.noise import add_gaussian_noise, alphas_cumprod, sigma_to_timestep, timestep_to_sigma
from ebt_vision.image.tiling import tiled_map, view

from .conftest import noisy_batch


def test_dit_trains_a_step_on_a_tiny_config(tiny_cfg):
    objective = DiTObjective(tiny_cfg)
    optimizer = torch.optim.AdamW(objective.param_groups(tiny_cfg.optim), lr=1e-3)
    before = [p.detach().clone() for p in objective.parameters()]
    clean = torch.rand(4, 3, 16, 16) * 2 - 1
    out = objective(noisy_batch(clean))
    assert out.loss.isfinite() and out.loss > 0
    out.loss.backward()
    optimizer.step()
    changed = sum(not torch.equal(b, p) for b, p in zip(before, objective.parameters(), strict=True))
    assert changed > len(before) // 2


@pytest.mark.parametrize("preset", ["EBT-T/4", "EBT-S/4", "EBT-M/4"])
def test_dit_parameter_count_is_within_two_percent_of_the_ebt(preset):
    cfg = load_config(None, [f"preset={preset}"])
    dit = DiTObjective(cfg).model
    ebt = count_parameters(ImageEBT(cfg.model))
    assert abs(count_parameters(dit) - ebt) / ebt < 0.02
    cond = count_parameters(ImageEBT(replace(cfg.model, sigma_conditioning=True)))
    assert abs(cond - ebt) / ebt < 0.02
    assert type(dit.transformer).__name__ == "DiTTransformer2DModel"  # the real diffusers model, not a copy


def test_sigma_timestep_mapping_round_trips():
    assert all(sigma_to_timestep(timestep_to_sigma(t)) == t for t in range(1000))
    for sigma in (5.0, 15.0, 25.0, 50.0, 75.0, 100.0, 200.0):
        assert abs(timestep_to_sigma(sigma_to_timestep(sigma)) - sigma) / sigma < 0.03
    assert sigma_to_timestep(0.0) == 0
    with pytest.raises(ValueError, match="sigma"):
        sigma_to_timestep(float("nan"))


def test_scaled_noisy_image_has_the_diffusion_noise_of_its_timestep():
    clean = torch.zeros(1, 3, 256, 256)
    sigma = 50.0
    t = sigma_to_timestep(sigma)
    a = float(alphas_cumprod()[t])
    x_t = add_gaussian_noise(clean, sigma, torch.Generator().manual_seed(0)) * math.sqrt(a)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - a), rel=0.02)


def test_matched_training_range_follows_the_data_config(tiny_cfg):
    assert training_max_timestep(tiny_cfg) == sigma_to_timestep(tiny_cfg.data.sigma_max)
    assert training_max_timestep(replace(tiny_cfg, dit=DiTConfig(timesteps="full"))) == 999
    diffusion = from_dict({"data": {"noise": "diffusion", "level_max": 0.1}})
    assert training_max_timestep(diffusion) == 99


@pytest.mark.parametrize("start", [0, 1, 56, 214])
@pytest.mark.parametrize("steps", [1, 2, 5, 100, None])
def test_ddim_starts_at_the_timestep_with_consistent_strides(start, steps):
    scheduler = ddim_scheduler(start, steps)
    wanted = start + 1 if steps is None else min(steps, start + 1)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == wanted and timesteps[0] == start and timesteps[-1] >= 0
    stride = (start + 1) // wanted  # the stride DDIMScheduler.step uses to find the previous timestep
    assert all(a - b == stride for a, b in zip(timesteps, timesteps[1:], strict=False))


class CountingOracle(nn.Module):
    """Predicts the exact noise of x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps for a known clean x0, and counts calls."""

    def __init__(self, clean: torch.Tensor) -> None:
        super().__init__()
        self.clean, self.calls = clean, 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t):
        self.calls += 1
        a = alphas_cumprod()[int(t)]
        return (x_t - a.sqrt() * self.clean) / (1 - a).sqrt()


@pytest.mark.parametrize("steps", [1, 2, 5, 25, None])
def test_ddim_with_an_exact_noise_oracle_recovers_the_clean_image_in_counted_passes(tiny_cfg, steps):
    objective = DiTObjective(tiny_cfg)
    clean = torch.rand(2, 3, 16, 16) * 1.6 - 0.8
    objective.model = CountingOracle(clean)
    sigma = 50.0
    noisy = add_gaussian_noise(clean, sigma, torch.Generator().manual_seed(1))
    estimate, passes = dit_denoise(objective, noisy, sigma, steps)
    start = sigma_to_timestep(sigma)
    expected = start + 1 if steps is None else min(steps, start + 1)
    assert passes == [expected, expected]
    assert objective.model.calls == expected  # both images share the starting timestep: one batch per pass
    # With the exact noise every DDIM step stays on the path through x0: a wrong scaling or schedule would show here.
    assert (estimate - clean).abs().max() < 1e-4


def test_dit_denoise_tiles_large_photos_and_counts_one_pass_per_step(tiny_cfg):
    objective = DiTObjective(tiny_cfg).eval()
    calls = []
    objective.model.register_forward_hook(lambda *_: calls.append(1))
    noisy = torch.rand(1, 3, 48, 40) * 2 - 1
    estimate, passes = dit_denoise(objective, noisy, 25.0, 3)
    assert estimate.shape == noisy.shape and torch.isfinite(estimate).all()
    assert passes == [3] and len(calls) == 3


def test_dit_denoise_rejects_bad_settings(tiny_cfg):
    objective = DiTObjective(tiny_cfg).eval()
    with pytest.raises(ValueError, match="num_steps"):
        dit_denoise(objective, torch.zeros(1, 3, 16, 16), 25.0, 0)
    with pytest.raises(ValueError, match="sigma"):
        dit_denoise(objective, torch.zeros(1, 3, 16, 16), -1.0, 1)


@pytest.mark.parametrize("size", [(16, 16), (48, 40), (20, 36)])
@pytest.mark.parametrize("overlap", [1, 2, 4])
def test_tiled_map_of_a_pixelwise_function_equals_the_function(size, overlap):
    images = torch.randn(2, 3, *size)
    assert torch.allclose(tiled_map(lambda x: 2 * x + 1, images, 16, overlap=overlap), 2 * images + 1, atol=1e-6)


@pytest.mark.parametrize("views", [2, 4, 8])
def test_tiled_map_over_mirror_images_is_their_average_and_commutes_with_them(views):
    """``views``: the output on each mirror image, mapped back, averaged. A function that sees direction (a running
    sum along rows) changes; the average over a group of views does not care which of them it is handed."""
    images, f = torch.randn(1, 3, 32, 32), lambda x: x.cumsum(-1) / 8
    plain, mirrored = tiled_map(f, images, 16), tiled_map(f, images, 16, views=views)
    assert not torch.allclose(plain, mirrored, atol=1e-3)
    flipped = tiled_map(f, images.flip(-1), 16).flip(-1)
    if views == 2:  # as is and mirrored left-right, by hand
        torch.testing.assert_close(mirrored, (plain + flipped) / 2)
    for k in range(views):
        torch.testing.assert_close(tiled_map(f, view(images, k), 16, views=views), view(mirrored, k))
    assert torch.allclose(tiled_map(lambda x: 2 * x + 1, images, 16, views=views), 2 * images + 1, atol=1e-6)
    with pytest.raises(ValueError, match="views"):
        tiled_map(f, images, 16, views=3)

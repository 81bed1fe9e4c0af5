"""An image EBT whose energy reads candidates against the noisy image, started from a plain denoiser's weights, and
re-anchored descents (passes whose estimate becomes the next pass's noisy image)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ebt_vision.core.checkpoint import CheckpointError, save_pretrained_folder
from ebt_vision.core.config import ConfigError, from_dict
from ebt_vision.core.errors import InputError
from ebt_vision.core.inference import Thinking
from ebt_vision.core.layers import patchify
from ebt_vision.core.train import _initialise_from, train
from ebt_vision.image.inference import best_of_n, denoise
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.plain import PlainDenoisingObjective

from .conftest import TINY, denoising_batch
from .test_loading import rewrite_weights

RELATIVE = {**TINY, "model": {**TINY["model"], "energy": "residual", "relative_to_noisy": True},
            "descent": {**TINY["descent"], "step_size": 1.0, "learn_step_size": False}}  # fmt: skip


def _trained_looking_plain(tmp_path):
    """A plain denoiser with random (non-zero) weights everywhere, saved as a model folder."""
    plain = PlainDenoisingObjective(from_dict(TINY))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in plain.parameters():
            value.copy_(0.2 * torch.randn(value.shape, generator=generator))
    save_pretrained_folder(plain, plain.cfg, tmp_path / "plain")
    return plain, tmp_path / "plain"


def _one_step(objective: DenoisingObjective, noisy: torch.Tensor) -> torch.Tensor:
    candidate = noisy.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective.model(noisy, candidate).sum(), candidate)
    return noisy - gradient  # a step of size 1


def test_relative_energy_reads_the_candidate_as_a_change_from_the_noisy_image():
    torch.manual_seed(0)
    objective = DenoisingObjective(from_dict(RELATIVE))
    with torch.no_grad():
        objective.model.head.out.bias.normal_()
    noisy = torch.rand(2, 3, 16, 16) * 2 - 1
    # a fresh head proposes a constant correction b, so one step of size 1 lands on noisy + b in every patch
    step = _one_step(objective, noisy)
    change = patchify(step - noisy, 4)
    torch.testing.assert_close(change, objective.model.head.out.bias.expand_as(change), rtol=1e-4, atol=1e-5)


def test_relative_energy_needs_the_noisy_context():
    with pytest.raises(ConfigError, match="relative_to_noisy.*noisy_context"):
        from_dict({**RELATIVE, "model": {**RELATIVE["model"], "noisy_context": False}})


def test_an_ebt_started_from_a_plain_denoiser_predicts_what_it_does_in_one_step(tmp_path):
    plain, folder = _trained_looking_plain(tmp_path)
    cfg = from_dict({**RELATIVE, "train": {**RELATIVE["train"], "steps": 1, "init_from": str(folder)}})
    objective = DenoisingObjective(cfg)
    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    clean = noisy.clamp(-0.5, 0.5)
    _initialise_from(objective, str(folder))
    with torch.no_grad():
        want = plain.model(noisy)
    torch.testing.assert_close(_one_step(objective, noisy), want, rtol=1e-4, atol=1e-5)
    # the candidate half of the patch embedding starts at zero, the noisy half is the plain model's
    embed = objective.model.embed.weight
    torch.testing.assert_close(embed[:, :48], plain.model.embed.weight)
    assert embed[:, 48:].abs().max() == 0

    # and the training loop takes it through train.init_from (the weight average starts there too)
    def batches():
        while True:
            yield denoising_batch(noisy, clean)

    fresh = DenoisingObjective(cfg)
    result = train(fresh, batches(), cfg, tmp_path / "run", progress=False)
    assert result.step == 1 and (tmp_path / "run" / "model.safetensors").exists()


def _trains_its_noise_embedding(objective, noisy: torch.Tensor, tmp_path):
    """Train a conditioned ``objective`` (its init_from included) on one batch: its noise embedding leaves zero."""

    def batches():
        while True:
            yield denoising_batch(noisy, noisy.clamp(-0.5, 0.5), sigma=30.0)

    train(objective, batches(), objective.cfg, tmp_path / "run", progress=False)
    assert objective.model.sigma_embed.linear.weight.abs().max() > 0
    return objective


def test_a_sigma_conditioned_ebt_from_a_blind_trunk_starts_as_the_trunk_at_every_noise_level(tmp_path):
    """The noise-level embedding the trunk lacks starts at zero, so the conditioned EBT's first step is still the
    trunk's prediction, whatever sigma it is told; training then moves the embedding."""
    plain, folder = _trained_looking_plain(tmp_path)
    conditioned = {**RELATIVE, "model": {**RELATIVE["model"], "sigma_conditioning": True}}
    cfg = from_dict({**conditioned, "train": {**RELATIVE["train"], "steps": 2, "init_from": str(folder)}})
    objective = DenoisingObjective(cfg)
    _initialise_from(objective, str(folder))
    assert objective.model.sigma_embed.linear.weight.abs().max() == 0
    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        want = plain.model(noisy)
    for sigma in (5.0, 50.0):
        candidate = noisy.clone().requires_grad_(True)
        energy = objective.model(noisy, candidate, torch.full((2,), sigma)).sum()
        (gradient,) = torch.autograd.grad(energy, candidate)
        torch.testing.assert_close(noisy - gradient, want, rtol=1e-4, atol=1e-5)

    _trains_its_noise_embedding(DenoisingObjective(cfg), noisy, tmp_path)


def test_a_sigma_conditioned_plain_denoiser_continues_a_blind_one(tmp_path):
    """The trunk can be told the noise level too: from a blind trunk's weights it starts as that trunk at every
    sigma, training moves its embedding, and the one-pass denoiser takes one sigma for a whole (tiled) photo."""
    from ebt_vision.image.plain import plain_denoise

    plain, folder = _trained_looking_plain(tmp_path)
    conditioned = {**TINY, "model": {**TINY["model"], "sigma_conditioning": True}}
    cfg = from_dict({**conditioned, "train": {**TINY["train"], "steps": 2, "init_from": str(folder)}})
    told = PlainDenoisingObjective(cfg)
    _initialise_from(told, str(folder))
    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        want = plain.model(noisy)
        for sigma in (5.0, 50.0):
            torch.testing.assert_close(told.model(noisy, sigma), want)
    with pytest.raises(InputError, match="conditioned on the noise level"):
        told.model(noisy)
    with pytest.raises(InputError, match="blind"):
        plain.model(noisy, 25.0)

    fresh = _trains_its_noise_embedding(PlainDenoisingObjective(cfg), noisy, tmp_path)
    photo = torch.rand(1, 3, 40, 24) * 2 - 1  # larger than the 16px crop: tiled
    low, high = plain_denoise(fresh.eval(), photo, sigma=5.0), plain_denoise(fresh, photo, sigma=50.0)
    assert low.shape == photo.shape and not torch.allclose(low, high)
    # told more than it trained on, it is told the highest level it knows
    torch.testing.assert_close(plain_denoise(fresh, photo, sigma=500.0), plain_denoise(fresh, photo, sigma=55.0))
    # used blind, each photo is told the sigma estimated from it (as the EBT is in ``denoise``)
    from ebt_vision.image.noise import estimate_noise_sigma

    photos = torch.cat([photo, photo.flip(-1) * 0.5])
    blind = plain_denoise(fresh, photos)
    for i in range(2):
        told = plain_denoise(fresh, photos[i : i + 1], sigma=float(estimate_noise_sigma(photos[i : i + 1])[0]))
        torch.testing.assert_close(blind[i : i + 1], told)


def test_init_from_an_old_linear_head_ebt_is_not_taken_for_a_plain_denoiser(tmp_path):
    """Checkpoints from before the head kinds hold the linear head at <head>.weight (no bias): they load as they are."""
    old = DenoisingObjective(from_dict(TINY))
    with torch.no_grad():
        old.model.head.out.weight.normal_()
    save_pretrained_folder(old, old.cfg, tmp_path / "old")
    rewrite_weights(tmp_path / "old", lambda t: t.update({"model.head.weight": t.pop("model.head.out.weight")}))
    fresh = DenoisingObjective(from_dict(TINY))
    _initialise_from(fresh, str(tmp_path / "old"))
    torch.testing.assert_close(fresh.model.head.out.weight, old.model.head.out.weight)


def test_a_plain_denoiser_starts_only_the_energy_it_fits(tmp_path):
    _, folder = _trained_looking_plain(tmp_path)
    absolute = from_dict({**RELATIVE, "model": {**RELATIVE["model"], "relative_to_noisy": False}})
    with pytest.raises(CheckpointError, match="relative_to_noisy"):
        _initialise_from(DenoisingObjective(absolute), str(folder))
    wider = from_dict({**RELATIVE, "model": {**RELATIVE["model"], "width": 32}})
    with pytest.raises(CheckpointError, match="does not fit"):
        _initialise_from(DenoisingObjective(wider), str(folder))


def _moved_relative_ebt() -> tuple[DenoisingObjective, torch.Tensor]:
    """A relative-energy EBT with every weight moved off its (flat) start, and two noisy 16px images."""
    torch.manual_seed(0)
    objective = DenoisingObjective(from_dict(RELATIVE)).eval()
    with torch.no_grad():
        for value in objective.parameters():
            value.add_(0.1 * torch.randn_like(value))
    return objective, torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_a_re_anchored_descent_is_passes_whose_estimate_becomes_the_next_noisy_image():
    objective, noisy = _moved_relative_ebt()
    anchored, _ = denoise(objective, noisy, Thinking(2, passes=3))
    context, candidates, forward = noisy, [noisy], 0
    for _ in range(3):
        one, _ = denoise(objective, context, Thinking(2, final_energy=False))
        candidates += one.candidates[1:]
        forward += one.forward_passes
        context = one.final.clamp(-1, 1)
    assert len(anchored.candidates) == 7 and anchored.backward_passes == 6 and anchored.forward_passes == forward + 1
    for got, want in zip(anchored.candidates, candidates, strict=True):
        torch.testing.assert_close(got, want)
    assert anchored.position_energies.shape[0] == 7 and anchored.grad_norms.shape[0] == 6
    # the later passes read the estimates, so they go elsewhere than one pass of the same six steps
    assert not torch.allclose(anchored.final, denoise(objective, noisy, Thinking(6))[0].final)


def test_passes_are_checked_and_refused_where_they_mean_nothing():
    objective = DenoisingObjective(from_dict(RELATIVE)).eval()
    noisy = torch.zeros(1, 3, 16, 16)
    with pytest.raises(InputError, match="passes must be in"):
        denoise(objective, noisy, Thinking(1, passes=0))
    with pytest.raises(InputError, match="best-of-N"):
        best_of_n(objective, noisy, Thinking(1, passes=2, n_candidates=2))
    with pytest.raises(InputError, match="only image denoising re-anchors"):
        objective.infer(noisy, noisy, Thinking(1, passes=2))  # one descent (what video and text run) takes one pass


def test_training_compute_counts_the_model_an_ebt_started_from(tmp_path):
    """The eval report's budget: an EBT's own steps' FLOPs plus those of the trunk it started from (its checkpoint's
    step count), and a clear note where the init_from checkpoint is gone."""
    from ebt_vision.experiments.image.compare.costs import training_compute, training_step_flops

    plain, folder = _trained_looking_plain(tmp_path)
    save_pretrained_folder(plain, plain.cfg, folder, extra={"step": 7})
    ebt = DenoisingObjective(from_dict({**RELATIVE, "train": {**RELATIVE["train"], "init_from": str(folder)}}))
    flops, stages = training_compute(ebt, 3)
    own, trunk = training_step_flops(ebt, ebt.cfg), training_step_flops(plain, plain.cfg)
    assert own > 2 * trunk > 0  # a descent step costs a forward, a gradient and the backward of both
    assert flops == 3 * own + 7 * trunk and "7 steps" in stages[1]
    ebt.cfg = replace(ebt.cfg, train=replace(ebt.cfg.train, init_from=str(tmp_path / "gone")))
    flops, stages = training_compute(ebt, 3)
    assert flops == 3 * own and "not found, not counted" in stages[-1]
    # a model folder overwritten by a model trained from it: its init_from names itself, counted once
    plain.cfg = replace(plain.cfg, train=replace(plain.cfg.train, init_from=str(folder)))
    flops, stages = training_compute(plain, 5, folder)
    assert flops == 5 * trunk and "a loop" in stages[-1]


def test_a_re_anchored_pass_can_keep_part_of_the_noise_it_removed():
    """``keep_noise`` k: the next pass's noisy image is estimate + k (noisy image - estimate), as a two-step DDIM
    re-noises its first estimate; k = 0 is the plain re-anchored descent."""
    objective, noisy = _moved_relative_ebt()
    kept, _ = denoise(objective, noisy, Thinking(2, passes=2, keep_noise=0.5, final_energy=False))
    first, _ = denoise(objective, noisy, Thinking(2, final_energy=False))
    estimate = first.final.clamp(-1, 1)
    second, _ = denoise(objective, estimate + 0.5 * (noisy - estimate), Thinking(2, final_energy=False))
    torch.testing.assert_close(kept.final, second.final)
    assert not torch.allclose(kept.final, denoise(objective, noisy, Thinking(2, passes=2))[0].final)
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match="keep_noise"):
            denoise(objective, noisy, Thinking(2, passes=2, keep_noise=bad))


NOISE_SCALED = {**TINY, "model": {**TINY["model"], "sigma_conditioning": True, "noise_scaled_output": True}}


def test_a_noise_scaled_trunk_proposes_its_correction_in_units_of_sigma(tmp_path):
    """``model.noise_scaled_output`` (the DiT's epsilon parameterisation): the correction is the output layer's times
    sigma / 127.5, the loss is the error in those units, and an EBT started from such a trunk starts as it."""
    from ebt_vision.image.data import DenoisingBatch
    from ebt_vision.image.noise import NoiseLevel

    with pytest.raises(ConfigError, match="noise_scaled_output.*sigma_conditioning"):
        from_dict({**TINY, "model": {**TINY["model"], "noise_scaled_output": True}})
    plain = PlainDenoisingObjective(from_dict(NOISE_SCALED))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in plain.parameters():
            value.copy_(0.2 * torch.randn(value.shape, generator=generator))
        plain.model.sigma_embed.linear.weight.zero_()  # the noise level then changes only the scale
        plain.model.sigma_embed.linear.bias.zero_()
        noisy = torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1
        low, high = plain.model(noisy, 25.0) - noisy, plain.model(noisy, 50.0) - noisy
    torch.testing.assert_close(high, 2 * low)
    clean, sigma = noisy.clamp(-0.5, 0.5), torch.tensor([10.0, 40.0])
    batch = DenoisingBatch(noisy, clean, NoiseLevel("gaussian", sigma))
    scale = (sigma / 127.5)[:, None, None, None]
    with torch.no_grad():
        error = (plain.model(noisy, sigma) - clean) / scale
    torch.testing.assert_close(plain(batch).loss, torch.nn.functional.smooth_l1_loss(error, torch.zeros_like(error)))

    save_pretrained_folder(plain, plain.cfg, tmp_path / "plain")
    scaled_ebt = {**NOISE_SCALED, "model": {**RELATIVE["model"], **NOISE_SCALED["model"]},
                  "descent": RELATIVE["descent"]}  # fmt: skip
    objective = DenoisingObjective(from_dict({**scaled_ebt, "train": {**TINY["train"], "init_from": "x"}}))
    _initialise_from(objective, str(tmp_path / "plain"))
    for told in (5.0, 50.0):
        candidate = noisy.clone().requires_grad_(True)
        energy = objective.model(noisy, candidate, torch.full((2,), told)).sum()
        (gradient,) = torch.autograd.grad(energy, candidate)
        with torch.no_grad():
            torch.testing.assert_close(noisy - gradient, plain.model(noisy, told), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="relative_to_noisy"):
        DenoisingObjective(from_dict(NOISE_SCALED))
    # the compute behind it counts the trunk's steps though an EBT refuses the trunk's own config
    from ebt_vision.experiments.image.compare.costs import training_compute, training_step_flops

    save_pretrained_folder(plain, plain.cfg, tmp_path / "plain", extra={"step": 4})
    objective.cfg = replace(objective.cfg, train=replace(objective.cfg.train, init_from=str(tmp_path / "plain")))
    flops, stages = training_compute(objective, 1)
    assert flops == training_step_flops(objective, objective.cfg) + 4 * training_step_flops(plain, plain.cfg)

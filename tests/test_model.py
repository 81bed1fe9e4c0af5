"""The image EBT: shapes, attention backends, gradients through the descent, learning."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ebt_vision.core.descent import TrainingDescent, minimize_energy
from ebt_vision.core.errors import InputError
from ebt_vision.core.layers import patchify, unpatchify
from ebt_vision.core.train import build_optimizer
from ebt_vision.image.config import ModelConfig
from ebt_vision.image.data import DenoisingBatch
from ebt_vision.image.model import ImageEBT
from ebt_vision.image.noise import NoiseLevel
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.tiling import SymmetricEnergy, TiledEnergy, unview, view


def random_model(cfg: ModelConfig) -> ImageEBT:
    """Zero-initialised heads and gates make an untrained energy constant; perturb them for gradient tests."""
    model = ImageEBT(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def test_patchify_round_trip():
    images = torch.randn(2, 3, 8, 12)
    tokens = patchify(images, 4)
    assert tokens.shape == (2, 6, 48)
    torch.testing.assert_close(unpatchify(tokens, 4, 8, 12), images)


@pytest.mark.parametrize("size", [(16, 16), (8, 24), (36, 20)])
def test_any_multiple_of_the_patch_size(size):
    model = ImageEBT(ModelConfig(width=16, depth=1, heads=2)).eval()
    x = torch.randn(2, 3, *size)
    assert model(x, x).shape == (2,)
    assert model.patch_energies(x, x).shape == (2, size[0] // 4, size[1] // 4)
    assert model.features(x).shape == (2, 16)


@pytest.mark.parametrize(
    "context, candidate, message",
    [
        (torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 8), "differ"),
        (torch.randn(3, 16, 16), torch.randn(3, 16, 16), r"\(B, C, H, W\)"),
        (torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16), "3-channel"),
        (torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), "smaller than one"),
        (torch.randn(1, 3, 18, 16), torch.randn(1, 3, 18, 16), "multiple of the patch"),
    ],
)
def test_bad_shapes_give_clear_errors(context, candidate, message):
    model = ImageEBT(ModelConfig(width=16, depth=1, heads=2))
    with pytest.raises(ValueError, match=message):
        model(context, candidate)


def test_fused_and_math_attention_agree():
    math_model = random_model(ModelConfig(width=32, depth=2, heads=4, attention="math"))
    fused_model = ImageEBT(ModelConfig(width=32, depth=2, heads=4, attention="fused"))
    fused_model.load_state_dict(math_model.state_dict())
    context = torch.randn(2, 3, 16, 16)
    results = []
    for model in (math_model, fused_model):
        candidate = context.clone().requires_grad_(True)
        energy = model(context, candidate)
        (grad,) = torch.autograd.grad(energy.sum(), candidate)
        results.append((energy, grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_auto_attention_in_training_gives_correct_second_order_gradients():
    model = random_model(ModelConfig(width=16, depth=1, heads=2)).double().train()
    context = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    clean = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    weight = model.blocks[0].mlp[0].weight

    def loss():
        training = TrainingDescent(min_steps=2, detach_between_steps=False)
        traj = minimize_energy(model, context, context, 0.5, 2, training=training)
        return ((traj.final - clean) ** 2).sum()

    (grad,) = torch.autograd.grad(loss(), weight)
    eps = 1e-6
    with torch.no_grad():
        weight[0, 0] += eps
        up = loss()
        weight[0, 0] -= 2 * eps
        down = loss()
        weight[0, 0] += eps
    assert grad[0, 0].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5, abs=1e-9)


def fixed_batch(cfg, seed=0):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(cfg.data.batch_size, 3, cfg.data.crop_size, cfg.data.crop_size, generator=generator) * 2 - 1
    clean = torch.nn.functional.avg_pool2d(clean, 3, 1, 1)  # some spatial structure to learn from
    noise = NoiseLevel("gaussian", torch.full((clean.shape[0],), 38.0))
    return DenoisingBatch(noise.add_to(clean, generator), clean, noise)


def test_every_parameter_receives_a_gradient(tiny_cfg):
    """Zero-initialised head and gates pass no gradient at step 0; after a few updates every parameter must."""
    objective = DenoisingObjective(tiny_cfg)
    optimizer, _ = build_optimizer(objective, tiny_cfg, torch.device("cpu"))
    batch = fixed_batch(tiny_cfg)
    for _ in range(3):
        optimizer.zero_grad()
        objective(batch).loss.backward()
        optimizer.step()
    missing = [n for n, p in objective.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_tiny_model_overfits_one_batch(tiny_cfg):
    cfg = replace(tiny_cfg, model=replace(tiny_cfg.model, width=32), optim=replace(tiny_cfg.optim, lr=1e-2))
    objective = DenoisingObjective(cfg)
    optimizer, _ = build_optimizer(objective, cfg, torch.device("cpu"))
    batch = fixed_batch(cfg)
    first = objective(batch).metrics["mse_last"].item()
    for _ in range(100):
        optimizer.zero_grad()
        objective(batch).loss.backward()
        optimizer.step()
    last = objective(batch).metrics["mse_last"].item()
    assert last < 0.25 * first, (first, last)


def test_tiled_energy_matches_the_model_on_one_tile_and_maps_every_patch():
    model = random_model(ModelConfig(width=16, depth=1, heads=2)).eval()
    tiled = TiledEnergy(model, tile=16)
    x, y = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(tiled(x, y), model(x, y))
    torch.testing.assert_close(tiled.patch_energy_map(x, y), model.patch_energies(x, y))
    big = torch.randn(1, 3, 40, 28, requires_grad=True)
    energy = tiled(big.detach(), big)
    (grad,) = torch.autograd.grad(energy.sum(), big)
    assert grad.shape == big.shape and torch.isfinite(grad).all() and (grad != 0).all()
    assert tiled.patch_energy_map(big, big).shape == (1, 10, 7)
    with pytest.raises(ValueError, match="multiple of twice"):
        TiledEnergy(model, tile=12)


@pytest.mark.parametrize("overlap", [2, 4])
def test_tiled_gradient_is_the_average_of_the_covering_tiles_gradients(overlap):
    """Every pixel's gradient is the mean of the gradients of the tiles that cover it (padding is context only), so
    the step size keeps the scale it was trained at on single tiles. Checked against tiles cut by hand; half-
    overlapping tiles (each pixel in 4) and tiles a quarter apart (each pixel in 16)."""
    model = random_model(ModelConfig(width=16, depth=1, heads=2)).eval()
    tiled = TiledEnergy(model, tile=16, overlap=overlap)
    context, candidate = torch.randn(1, 3, 24, 40), torch.randn(1, 3, 24, 40, requires_grad=True)
    (grad,) = torch.autograd.grad(tiled(context, candidate).sum(), candidate)
    stride = 16 // overlap
    margin = 16 - stride  # padding before, and after too: 24 and 40 are whole numbers of strides
    pad = (margin,) * 4
    padded_context = torch.nn.functional.pad(context, pad, mode="reflect")
    padded = torch.nn.functional.pad(candidate.detach(), pad, mode="reflect")
    expected, covered = torch.zeros_like(padded), torch.zeros_like(padded)
    for top in range(0, padded.shape[2] - 15, stride):
        for left in range(0, padded.shape[3] - 15, stride):
            window = (slice(None), slice(None), slice(top, top + 16), slice(left, left + 16))
            tile = padded[window].clone().requires_grad_(True)
            (tile_grad,) = torch.autograd.grad(model(padded_context[window], tile).sum(), tile)
            expected[window] += tile_grad
            covered[window] += 1
    interior = (slice(None), slice(None), slice(margin, margin + 24), slice(margin, margin + 40))
    assert torch.all(covered[interior] == overlap**2)
    torch.testing.assert_close(grad, expected[interior] / overlap**2, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="whole number of patches"):
        TiledEnergy(model, tile=8, overlap=4)  # 2px apart with 4px patches


def test_view_and_unview_are_inverse_and_the_first_views_form_groups():
    x = torch.randn(2, 3, 8, 8)
    for k in range(8):
        torch.testing.assert_close(unview(view(x, k), k), x)
    for n in (1, 2, 4, 8):  # closed under composition: averaging over the first n is symmetric
        members = [view(x, k) for k in range(n)]
        for a in range(n):
            for b in range(n):
                assert any(torch.equal(view(view(x, a), b), m) for m in members)
    assert len({tuple(view(torch.arange(4.0).reshape(2, 2), k).flatten().tolist()) for k in range(8)}) == 8


@pytest.mark.parametrize("views", [2, 8])
def test_symmetric_energy_averages_the_mirror_images(views):
    """The energy is the mean of the tiled energies of the mirror images; its gradient the mean of their gradients
    mapped back (by hand); energy, gradient and per-patch map follow a mirrored input; recorded maps are averaged on
    the photo."""
    model = random_model(ModelConfig(width=16, depth=1, heads=2)).eval()
    base = TiledEnergy(model, tile=16)
    symmetric = SymmetricEnergy(TiledEnergy(model, tile=16, record_maps=True), views)
    context, candidate = torch.randn(1, 3, 24, 40), torch.randn(1, 3, 24, 40, requires_grad=True)
    energy = symmetric(context, candidate)
    (grad,) = torch.autograd.grad(energy.sum(), candidate)
    energies, grads = [], []
    for k in range(views):
        moved = view(candidate.detach(), k).requires_grad_(True)
        value = base(view(context, k), moved)
        energies.append(value)
        grads.append(unview(torch.autograd.grad(value.sum(), moved)[0], k))
    torch.testing.assert_close(energy, torch.stack(energies).mean(0))
    torch.testing.assert_close(grad, torch.stack(grads).mean(0))
    assert not torch.allclose(grad, grads[0], atol=1e-5)  # the views disagree: averaging them changes the step
    energy_map = symmetric.patch_energy_map(context, candidate.detach())
    assert energy_map.shape == (1, 6, 10) and len(symmetric.maps) == 1
    torch.testing.assert_close(symmetric.maps[0], energy_map)
    for k in range(views):
        torch.testing.assert_close(symmetric(view(context, k), view(candidate.detach(), k)), energy)
        torch.testing.assert_close(symmetric.patch_energy_map(view(context, k), view(candidate.detach(), k)),
                                   view(energy_map, k))  # fmt: skip
    with pytest.raises(InputError, match="whole 4px patches"):
        symmetric(torch.randn(1, 3, 22, 40), torch.randn(1, 3, 22, 40))
    with pytest.raises(ValueError, match="views"):
        SymmetricEnergy(base, 3)


def test_replay_buffer_size_turns_replay_on_and_replays_whole_rows(tiny_cfg):
    """descent.replay_buffer_size > 0 gives the objective a buffer; after one training step, half of the next batch
    starts from stored rows, each with its own context and target (never another sample's)."""
    cfg = replace(tiny_cfg, descent=replace(tiny_cfg.descent, replay_buffer_size=8, replay_fraction=0.5))
    assert DenoisingObjective(tiny_cfg).replay is None
    objective = DenoisingObjective(cfg).train()
    first = fixed_batch(cfg, seed=0)
    objective(first).loss.backward()
    assert len(objective.replay) == cfg.data.batch_size
    stored = objective.replay.storage
    for context, target in zip(stored["context"][:4], stored["target"][:4], strict=True):
        row = [i for i in range(4) if torch.equal(first.noisy[i], context)]
        assert len(row) == 1 and torch.equal(first.clean[row[0]], target)
    second = fixed_batch(cfg, seed=1)
    rows = objective.descend_rows(second.noisy, second.noisy, second.clean)
    trajectory, target = rows.trajectory, rows.target
    start = trajectory.candidates[0]
    for i in range(2):  # replayed rows: a stored (candidate, target) pair, not this batch's
        match = [j for j in range(4) if torch.equal(stored["candidate"][j], start[i].detach())]
        assert match and torch.equal(target[i], stored["target"][match[0]])
    assert torch.equal(target[2:], second.clean[2:])


def test_landscape_terms_have_the_stated_values_and_train_every_parameter(tiny_cfg):
    """stationarity = loss of the step taken at the target; rank = hinge on E(target) + m |x - y|^2 / 2s <= E(x),
    checked against values computed here by hand, and both terms reach every parameter."""
    from ebt_vision.core.objective import reconstruction_loss

    train = replace(tiny_cfg.train, stationarity_weight=1.0, rank_weight=1.0, rank_margin=0.5)
    cfg = replace(tiny_cfg, train=train)
    objective = random_model_objective(cfg)
    batch = fixed_batch(cfg)
    rows = objective.descend_rows(batch.noisy, batch.noisy, batch.clean)
    torch.manual_seed(5)
    terms = objective.landscape_losses(rows, train)
    y = batch.clean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective.model(batch.noisy, y).sum(), y)
    expected = reconstruction_loss(batch.clean - objective.step_size().detach() * grad, batch.clean, train.loss)
    torch.testing.assert_close(terms["stationarity"].detach(), expected.detach(), rtol=1e-4, atol=1e-7)
    final = rows.trajectory.final.detach()
    with torch.no_grad():
        gap = objective.model(batch.noisy, final) - objective.model(batch.noisy, batch.clean)
    needed = 0.5 * ((final - batch.clean) ** 2).flatten(1).sum(1) / (2 * cfg.descent.step_size)
    hinge_final = torch.relu(needed - gap).mean()
    assert terms["rank"].item() >= 0.5 * hinge_final.item() - 1e-6  # the final-candidate half of the mean
    out = objective(batch)
    out.loss.backward()
    assert {"loss_stationarity", "loss_rank"} <= set(out.metrics)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in objective.named_parameters()
               if n != "step_size.log_value")  # fmt: skip


def random_model_objective(cfg):
    objective = DenoisingObjective(cfg).train()
    with torch.no_grad():
        for param in objective.model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return objective

"""The energy landscape's levers in the core: energy parameterisations, the equilibrium objective, the weight
average, Nesterov descent and stopping on the step size."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ebt_vision.core.config import ConfigError, from_dict
from ebt_vision.core.descent import minimize_energy
from ebt_vision.core.ema import WeightAverage
from ebt_vision.core.energy import ENERGY_KINDS, EnergyHead
from ebt_vision.core.inference import Thinking
from ebt_vision.core.objective import EnergyObjective
from ebt_vision.core.train import build_optimizer, train
from ebt_vision.image.objective import DenoisingObjective

from .conftest import TINY, noisy_batch


def kind_config(kind: str, **train):
    values = {**TINY, "model": {**TINY["model"], "energy": kind}, "train": {**TINY["train"], **train}}
    values["descent"] = {**TINY["descent"], "step_size": 1.0 if kind == "residual" else 5.0}
    return from_dict(values)


def test_energy_heads_compute_their_formulas():
    torch.manual_seed(0)
    tokens, values = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    for kind in ENERGY_KINDS:
        head = EnergyHead(8, 3, kind)
        nn.init.normal_(head.out.weight)
        proposal = head.out(head.norm(tokens))
        expected = {
            "linear": proposal.squeeze(-1),
            "dot": (values * proposal).sum(-1),
            "l2": -0.5 * proposal.pow(2).sum(-1),
            "residual": 0.5 * (values - proposal).pow(2).sum(-1),
        }[kind]
        assert torch.allclose(head(tokens, values), expected), kind


def test_a_residual_step_of_size_one_lands_on_the_proposal_when_it_does_not_depend_on_the_candidate():
    head = EnergyHead(8, 3, "residual")
    nn.init.normal_(head.out.weight)
    tokens = torch.randn(2, 5, 8)  # fixed: the proposal does not move with the candidate
    start = torch.randn(2, 5, 3)
    trajectory = minimize_energy(lambda context, x: head(tokens, x).sum(-1), None, start, 1.0, 3)
    proposal = head.out(head.norm(tokens)).detach()
    for candidate in trajectory.candidates[1:]:
        assert torch.allclose(candidate, proposal, atol=1e-6)
    assert torch.allclose(trajectory.grad_norms[1:], torch.zeros(2, 2), atol=1e-5)


def test_old_linear_head_checkpoints_load_into_the_energy_head():
    head = EnergyHead(8, 3, "linear")
    weight = torch.randn(1, 8)
    head.load_state_dict({"weight": weight})
    assert torch.equal(head.out.weight, weight)


@pytest.mark.parametrize("kind", ENERGY_KINDS)
@pytest.mark.parametrize("objective", ["unrolled", "equilibrium", "both"])
def test_every_parameter_learns_under_every_energy_and_objective(kind, objective):
    """Trap 3 for every combination: zero-initialised output layers and gates pass no gradient at step 0; after a few
    updates every parameter must (a candidate-independent energy term would never get one)."""
    cfg = kind_config(kind, objective=objective)
    model = DenoisingObjective(cfg).train()
    optimizer, _ = build_optimizer(model, cfg, torch.device("cpu"))
    batch = noisy_batch(torch.nn.functional.avg_pool2d(torch.rand(4, 3, 16, 16) * 2 - 1, 3, 1, 1))
    for _ in range(3):
        optimizer.zero_grad()
        out = model(batch)
        out.loss.backward()
        optimizer.step()
    assert torch.isfinite(out.loss)
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, f"{kind}/{objective}: no gradient for {silent}"
    expected = {"unrolled": {"loss_reconstruction"}, "equilibrium": {"loss_equilibrium"}}.get(
        objective, {"loss_reconstruction", "loss_equilibrium"}
    )
    assert expected <= set(out.metrics)


class Bowl(nn.Module):
    """E(context, x) = |x - context|^2 / 2: a bowl whose bottom is the context."""

    def forward(self, context, candidate):
        return 0.5 * (candidate - context).pow(2).flatten(1).sum(1)


def bowl_objective(max_move: float) -> EnergyObjective:
    cfg = from_dict({**TINY, "descent": {"step_size": 1.0, "learn_step_size": False},
                     "train": {"objective": "equilibrium", "equilibrium_max_move": max_move}})  # fmt: skip
    return EnergyObjective(Bowl(), cfg).train()


def test_the_equilibrium_objective_is_zero_exactly_for_a_bowl_at_the_target_with_full_moves():
    torch.manual_seed(0)
    target, start = torch.randn(64, 3, 4, 4), torch.randn(64, 3, 4, 4)
    assert bowl_objective(1.0).equilibrium_loss(target, start, target) < 1e-12
    # a truncated move asks far points to move only part of the way: a bowl that lands everywhere is then wrong
    assert bowl_objective(0.5).equilibrium_loss(target, start, target) > 1e-3


def test_visited_states_are_trained_like_points_on_the_way():
    """With ``equilibrium_visited`` half the rows sit where a descent from the start went; a bowl at the target still
    lands from all of them (loss 0), and a bowl elsewhere does not."""
    torch.manual_seed(0)
    target, start = torch.randn(64, 3, 4, 4), torch.randn(64, 3, 4, 4)
    objective = bowl_objective(1.0)
    objective.cfg = from_dict({**TINY, "descent": {"step_size": 0.3, "learn_step_size": False},
                               "train": {"objective": "equilibrium", "equilibrium_visited": 4}})  # fmt: skip
    objective.step_size = type(objective.step_size)(1.0, learnable=False)
    assert objective.equilibrium_loss(target, start, target) < 1e-12
    assert objective.equilibrium_loss(target + 0.5, start, target) > 1e-3


def test_nesterov_descends_an_ill_conditioned_bowl_faster_and_momentum_zero_changes_nothing():
    scales = torch.tensor([1.0, 0.02])

    def energy(context, x):
        return 0.5 * (scales * x.pow(2)).sum(-1)

    start = torch.ones(3, 2)
    plain = minimize_energy(energy, None, start, 1.0, 30, final_energy=True)
    accelerated = minimize_energy(energy, None, start, 1.0, 30, momentum=0.9, final_energy=True)
    assert accelerated.energies[-1].max() < 0.5 * plain.energies[-1].min()
    again = minimize_energy(energy, None, start, 1.0, 30, momentum=0.0, final_energy=True)
    assert torch.equal(plain.final, again.final)
    with pytest.raises(ValueError, match="momentum"):
        minimize_energy(energy, None, start, 1.0, 3, momentum=0.5, stop_when_energy_rises=True)


def test_stopping_on_the_step_size_stops_each_position_when_its_step_falls_below_the_threshold():
    """On E = |x|^2 / 2 per position with step size 0.5 each step halves x, so a position starting at x0 moves while
    its step's root mean square 0.5 x0 / 2^k >= tol: the step count is known in closed form, per position."""
    start = torch.tensor([[1.0, 1.0], [8.0, 8.0]])  # one sample of two positions, two values each

    def energy(context, x):  # (1, 2, 2) -> (1, 2): per-position energies
        return 0.5 * x.pow(2).sum(-1)

    trajectory = minimize_energy(energy, None, start[None], 0.5, 20, stop_step_below=0.1)
    # moves while 0.5 x0 / 2^k >= 0.1: x0 = 1 for k = 0..2 (3 steps), x0 = 8 for k = 0..5 (6 steps)
    assert trajectory.steps_taken.tolist() == [[3, 6]]


def test_the_weight_average_follows_its_formula_and_round_trips():
    layer = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(layer.weight)
    average = WeightAverage(layer, 0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average.update(layer, step=0)  # decay min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 1
    assert torch.allclose(average.state_dict()["weight"], torch.full((1, 2), 0.9))
    average.update(layer, step=100)  # decay 0.5: 0.5 * 0.9 + 0.5 * 1
    assert torch.allclose(average.state_dict()["weight"], torch.full((1, 2), 0.95))
    copy = WeightAverage(layer, 0.5)
    copy.load_state_dict(average.state_dict())
    copy.copy_to(layer)
    assert torch.allclose(layer.weight, torch.full((1, 2), 0.95))


class Crash(Exception):
    """Stands in for a process killed between two steps."""


class Stream:
    """A resumable batch stream (its position is saved with checkpoints)."""

    def __init__(self, crash_at: int = -1) -> None:
        self.position, self.crash_at = 0, crash_at

    def __iter__(self):
        return self

    def __next__(self):
        if self.position == self.crash_at:
            raise Crash
        generator = torch.Generator().manual_seed(self.position)
        self.position += 1
        return self.batch(generator)

    def batch(self, generator: torch.Generator):
        return noisy_batch(torch.rand(4, 3, 16, 16, generator=generator) * 2 - 1)

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_training_with_the_average_saves_it_and_resumes_exactly(tmp_path):
    """A run that crashes after its step-3 checkpoint and resumes ends with the same weights (raw and averaged) as an
    uninterrupted one; the finished folder holds the average, the checkpoint the raw weights beside it."""
    cfg = kind_config("residual", objective="both", ema_decay=0.9, steps=6, checkpoint_every=3)
    torch.manual_seed(0)
    straight = DenoisingObjective(cfg)
    stream = Stream()
    train(straight, stream, cfg, tmp_path / "straight", sampler_state=stream, progress=False)

    stream = Stream(crash_at=3)
    torch.manual_seed(0)  # the same initial weights
    with pytest.raises(Crash):
        train(DenoisingObjective(cfg), stream, cfg, tmp_path / "resumed", sampler_state=stream, progress=False)
    resumed = DenoisingObjective(cfg)
    stream = Stream()
    train(resumed, stream, cfg, tmp_path / "resumed", resume=True, sampler_state=stream, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    state = torch.load(tmp_path / "straight" / "checkpoints" / "step_0000006" / "train_state.pt", weights_only=True)
    saved = load_file(tmp_path / "straight" / "model.safetensors")
    raw = load_file(tmp_path / "straight" / "checkpoints" / "step_0000006" / "model.safetensors")
    name = "model.head.out.bias"
    assert torch.equal(saved[name], state["ema"][name]) and not torch.allclose(saved[name], raw[name])


def test_configs_refuse_what_cannot_work():
    with pytest.raises(ConfigError, match="step_size must be in"):
        from_dict({**TINY, "model": {**TINY["model"], "energy": "residual"}, "descent": {"step_size": 50.0}})
    with pytest.raises(ConfigError, match="energy must be one of"):
        from_dict({**TINY, "model": {**TINY["model"], "energy": "quadratic"}})
    with pytest.raises(ConfigError, match="objective must be one of"):
        from_dict({**TINY, "train": {"objective": "contrastive"}})
    with pytest.raises(ConfigError, match="ema_decay"):
        from_dict({**TINY, "train": {"ema_decay": 1.0}})


def test_stopping_on_the_step_size_read_off_a_plain_descent_equals_the_descent_that_stops(tiny_cfg):
    """The evaluations read every tolerance's stop off one plain descent; that must be what ``stop_step_below`` does."""
    from ebt_vision.core.descent import stop_on_step_size
    from ebt_vision.image.inference import denoise

    objective = DenoisingObjective(tiny_cfg).eval()
    with torch.no_grad():
        objective.model.head.out.weight.normal_()
    noisy = torch.rand(3, 3, 16, 32) * 2 - 1
    plain, _ = denoise(objective, noisy, Thinking(6, final_energy=False))
    step = float(objective.step_size())
    moves = step * plain.grad_norms / (3 * 16 * 32) ** 0.5
    for tolerance in (float(moves.median()), float(moves.min()) / 2, float(moves.max()) * 2):
        expected, taken = stop_on_step_size(plain, step, tolerance)
        stopped, _ = denoise(objective, noisy, Thinking(6, stop_step_below=tolerance, final_energy=False))
        assert torch.allclose(stopped.final, expected, atol=1e-6)
        assert torch.equal(stopped.steps_taken, taken)


def test_the_log_mse_loss_weights_each_sample_by_one_over_its_error():
    from ebt_vision.core.objective import LOG_MSE_FLOOR, reconstruction_loss

    target = torch.zeros(2, 3, 4, 4)
    prediction = torch.stack([torch.full((3, 4, 4), 0.02), torch.full((3, 4, 4), 0.2)]).requires_grad_(True)
    loss = reconstruction_loss(prediction, target, "log_mse")
    expected = (torch.tensor([0.02**2, 0.2**2]) + LOG_MSE_FLOOR).log().mean()
    assert torch.allclose(loss, expected)
    (grad,) = torch.autograd.grad(loss, prediction)
    # the MSE's gradient is 10x larger on the sample with 10x the error; the log MSE's is larger on the small one
    per_sample = grad.flatten(1).norm(dim=1)
    mse_grad = torch.autograd.grad(reconstruction_loss(prediction, target, "mse"), prediction)[0].flatten(1).norm(dim=1)
    assert torch.allclose(mse_grad[1] / mse_grad[0], torch.tensor(10.0))
    assert per_sample[0] > per_sample[1]
    with pytest.raises(ConfigError, match="log_mse"):
        from_dict({**TINY, "train": {**TINY["train"], "loss": "log"}})
    cfg = from_dict({**TINY, "train": {**TINY["train"], "loss": "log_mse"}})
    out = DenoisingObjective(cfg)(noisy_batch(torch.rand(2, 3, 16, 16) * 2 - 1))  # an EBT trains on it too
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_a_negative_loss_curve_is_drawn_without_a_log_scale(tmp_path):
    import warnings

    from ebt_vision.core.reports import curve_plot

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when asked to log-scale values that are all negative
        curve_plot(tmp_path / "loss.png", [1, 2, 3], [("loss", [-5.0, -5.5, -6.0], {})], "loss", log_y=True)
    assert (tmp_path / "loss.png").stat().st_size > 0

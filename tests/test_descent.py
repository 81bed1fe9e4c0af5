"""The descent core on energies whose answers are known in closed form."""

from __future__ import annotations

import pytest
import torch

from ebt_vision.config import DescentConfig
from ebt_vision.descent import ReplayBuffer, StepSize, minimize_energy


def quadratic(curvature: float, target: torch.Tensor):
    def energy(context, candidate):  # E = a/2 |x - t|^2 per sample
        return 0.5 * curvature * ((candidate - target) ** 2).flatten(1).sum(1)

    return energy


def test_quadratic_descent_matches_closed_form():
    target, start = torch.randn(3, 5), torch.randn(3, 5)
    a, s, k = 2.0, 0.3, 4
    traj = minimize_energy(quadratic(a, target), None, start, DescentConfig(num_steps=k), s, final_energy=True)
    for step, candidate in enumerate(traj.candidates):
        expected = target + (1 - s * a) ** step * (start - target)
        torch.testing.assert_close(candidate, expected)
    assert traj.forward_passes == k + 1 and traj.backward_passes == k
    assert traj.energies.shape == (k + 1, 3) and traj.grad_norms.shape == (k, 3)
    assert torch.all(traj.energies[1:] < traj.energies[:-1])


def test_second_order_gradient_matches_finite_differences():
    """d loss(final candidate) / d theta through two descent steps, against central differences (float64)."""
    torch.set_default_dtype(torch.float64)
    try:
        theta = torch.tensor([0.7, -0.4], requires_grad=True)
        context, start, clean = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)

        def energy(ctx, x):  # a non-quadratic energy whose gradient depends on theta nonlinearly
            return (theta[0] * torch.cos(x - ctx) + theta[1] * x**3 / 3 + 0.5 * x**2).sum(1)

        def loss_of(cfg, start=start, steps=2):
            traj = minimize_energy(energy, context, start, cfg, 0.1, create_graph=True, num_steps=steps)
            return ((traj.final - clean) ** 2).sum()

        def finite_difference(loss_fn):
            eps, numeric = 1e-6, torch.zeros(2)
            for i in range(2):
                with torch.no_grad():
                    theta[i] += eps
                    up = loss_fn()
                    theta[i] -= 2 * eps
                    down = loss_fn()
                    theta[i] += eps
                numeric[i] = (up - down) / (2 * eps)
            return numeric

        full = DescentConfig(num_steps=2, detach_between_steps=False)
        (grad,) = torch.autograd.grad(loss_of(full), theta)
        torch.testing.assert_close(grad, finite_difference(lambda: loss_of(full)), rtol=1e-5, atol=1e-7)

        # Detached steps: the gradient sees only the last step, taken from a fixed (detached) x1.
        truncated = DescentConfig(num_steps=2, detach_between_steps=True)
        (grad,) = torch.autograd.grad(loss_of(truncated), theta)
        with torch.no_grad():
            x1 = minimize_energy(energy, context, start, truncated, 0.1, num_steps=1).final
        numeric = finite_difference(lambda: loss_of(truncated, start=x1, steps=1))
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)
    finally:
        torch.set_default_dtype(torch.float32)


def test_inference_mode_raises_a_clear_error():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        minimize_energy(quadratic(1.0, torch.zeros(1, 2)), None, torch.ones(1, 2), DescentConfig(), 0.1)


def test_works_under_no_grad():
    with torch.no_grad():
        traj = minimize_energy(quadratic(1.0, torch.zeros(1, 2)), None, torch.ones(1, 2), DescentConfig(), 0.5)
    torch.testing.assert_close(traj.final, torch.full((1, 2), 0.25))


def test_randomised_schedule_stays_in_range():
    cfg = DescentConfig(num_steps=4, min_steps=2, step_size_jitter=2.0)
    traj = minimize_energy(quadratic(1.0, torch.zeros(64, 2)), None, torch.ones(64, 2), cfg, 0.1, randomize=True)
    assert traj.steps_taken.min() >= 2 and traj.steps_taken.max() <= 4
    assert len(set(traj.steps_taken.tolist())) > 1
    # per-sample step sizes differ: after one step the samples moved by different amounts
    moved = (traj.candidates[1] - traj.candidates[0]).abs()[:, 0]
    assert moved.max() / moved.min() > 1.5


def test_stop_when_energy_rises_never_increases_energy():
    """A step size of 2.5/a overshoots a quadratic (|1 - s a| > 1): every step would raise the energy."""
    cfg = DescentConfig(num_steps=5, stop_when_energy_rises=True)
    traj = minimize_energy(quadratic(1.0, torch.zeros(4, 3)), None, torch.randn(4, 3), cfg, 2.5)
    assert torch.all(traj.energies[1:] <= traj.energies[:-1])
    torch.testing.assert_close(traj.final, traj.candidates[0])
    assert traj.steps_taken.sum() == 0


def test_langevin_noise_perturbs_only_when_asked():
    energy, start = quadratic(1.0, torch.zeros(2, 3)), torch.ones(2, 3)
    quiet = minimize_energy(energy, None, start, DescentConfig(num_steps=1), 0.5)
    noisy = minimize_energy(energy, None, start, DescentConfig(num_steps=1, langevin_noise=0.1), 0.5)
    assert torch.equal(quiet.final, torch.full((2, 3), 0.5))
    assert not torch.equal(noisy.final, quiet.final)


def test_energy_shape_is_checked():
    with pytest.raises(ValueError, match="shape"):
        minimize_energy(lambda c, x: x.sum(), None, torch.ones(2, 3), DescentConfig(), 0.1)


def test_checkpointed_steps_refuse_evaluation_only_options():
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="checkpoint_steps"):
        minimize_energy(quadratic(1.0, x), x, x, DescentConfig(stop_when_energy_rises=True), 0.1,
                        create_graph=True, checkpoint_steps=True)  # fmt: skip


def test_replay_buffer_mixes_stored_candidates():
    buffer = ReplayBuffer(capacity=4)
    energy = quadratic(1.0, torch.zeros(4, 2))
    minimize_energy(energy, None, torch.full((4, 2), 7.0), DescentConfig(num_steps=1), 0.5, replay_buffer=buffer)
    assert len(buffer) == 4
    cfg = DescentConfig(num_steps=1, replay_fraction=0.5)
    traj = minimize_energy(energy, None, torch.full((4, 2), 100.0), cfg, 0.5, replay_buffer=buffer)
    assert torch.all(traj.candidates[0][:2] == 3.5) and torch.all(traj.candidates[0][2:] == 100.0)
    with pytest.raises(ValueError, match="holds"):
        buffer.push(torch.zeros(1, 3))


def test_step_size_is_positive_and_learnable():
    step = StepSize(3.0)
    assert torch.isclose(step(), torch.tensor(3.0))
    (grad,) = torch.autograd.grad(step() * 2, step.log_value)
    assert grad.item() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        StepSize(0.0)

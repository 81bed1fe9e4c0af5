"""The descent core on energies whose answers are known in closed form."""

from __future__ import annotations

import pytest
import torch

from ebt_vision.core.descent import ReplayBuffer, StepSize, TrainingDescent, lowest_energy, minimize_energy


def quadratic(curvature: float, target: torch.Tensor):
    def energy(context, candidate):  # E = a/2 |x - t|^2 per sample
        return 0.5 * curvature * ((candidate - target) ** 2).flatten(1).sum(1)

    return energy


def per_row_quadratic(curvatures: torch.Tensor):
    """Candidate (B, N, D); E = a_n/2 |x_n|^2 per position n -> (B, N)."""

    def energy(context, candidate):
        return 0.5 * curvatures[None, :] * (candidate**2).sum(-1)

    return energy


def test_quadratic_descent_matches_closed_form():
    target, start = torch.randn(3, 5), torch.randn(3, 5)
    a, s, k = 2.0, 0.3, 4
    traj = minimize_energy(quadratic(a, target), None, start, s, k, final_energy=True)
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

        def loss_of(training, start=start, steps=2):
            traj = minimize_energy(energy, context, start, 0.1, steps, training=training)
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

        full = TrainingDescent(min_steps=2, detach_between_steps=False)
        (grad,) = torch.autograd.grad(loss_of(full), theta)
        torch.testing.assert_close(grad, finite_difference(lambda: loss_of(full)), rtol=1e-5, atol=1e-7)

        # Detached steps: the gradient sees only the last step, taken from a fixed (detached) x1.
        truncated = TrainingDescent(min_steps=2, detach_between_steps=True)
        (grad,) = torch.autograd.grad(loss_of(truncated), theta)
        with torch.no_grad():
            x1 = minimize_energy(energy, context, start, 0.1, 1).final
        numeric = finite_difference(lambda: loss_of(truncated, start=x1, steps=1))
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)

        # Checkpointed steps recompute each step's graph in the backward pass: the same gradient.
        (expected,) = torch.autograd.grad(loss_of(full), theta)
        loss_of(TrainingDescent(min_steps=2, detach_between_steps=False, checkpoint_steps=True)).backward()
        torch.testing.assert_close(theta.grad, expected, rtol=1e-10, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_evaluation_descent_keeps_no_graph():
    weight = torch.tensor(2.0, requires_grad=True)
    traj = minimize_energy(lambda c, x: weight * (x**2).sum(1), None, torch.ones(2, 3), 0.1, 2)
    assert not traj.final.requires_grad


def test_inference_mode_raises_a_clear_error():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        minimize_energy(quadratic(1.0, torch.zeros(1, 2)), None, torch.ones(1, 2), 0.1, 2)


def test_works_under_no_grad():
    with torch.no_grad():
        traj = minimize_energy(quadratic(1.0, torch.zeros(1, 2)), None, torch.ones(1, 2), 0.5, 2)
    torch.testing.assert_close(traj.final, torch.full((1, 2), 0.25))


def test_randomised_schedule_stays_in_range():
    training = TrainingDescent(min_steps=2, step_size_jitter=2.0)
    traj = minimize_energy(quadratic(1.0, torch.zeros(64, 2)), None, torch.ones(64, 2), 0.1, 4, training=training)
    assert traj.steps_taken.min() >= 2 and traj.steps_taken.max() <= 4
    assert len(set(traj.steps_taken.tolist())) > 1
    # per-sample step sizes differ: after one step the samples moved by different amounts
    moved = (traj.candidates[1] - traj.candidates[0]).abs()[:, 0]
    assert moved.max() / moved.min() > 1.5


def test_stop_when_energy_rises_never_increases_energy():
    """A step size of 2.5/a overshoots a quadratic (|1 - s a| > 1): every step would raise the energy."""
    traj = minimize_energy(quadratic(1.0, torch.zeros(4, 3)), None, torch.randn(4, 3), 2.5, 5,
                           stop_when_energy_rises=True)  # fmt: skip
    assert torch.all(traj.energies[1:] <= traj.energies[:-1])
    torch.testing.assert_close(traj.final, traj.candidates[0])
    assert traj.steps_taken.sum() == 0


def test_per_position_energies_stop_each_position_on_its_own():
    """Positions with curvature 1 converge under step 0.5; with curvature 5 the step overshoots (|1 - 2.5| > 1) and
    their energy rises: those positions alone are undone and stop, in every sample of the batch."""
    curvatures = torch.tensor([1.0, 5.0, 1.0])
    start = torch.randn(2, 3, 4)
    traj = minimize_energy(per_row_quadratic(curvatures), None, start, 0.5, 4, stop_when_energy_rises=True)
    assert traj.position_energies.shape == (5, 2, 3) and traj.energies.shape == (5, 2)
    assert traj.steps_taken.tolist() == [[4, 0, 4], [4, 0, 4]]
    torch.testing.assert_close(traj.final[:, 1], start[:, 1])  # the overshooting position never moved
    torch.testing.assert_close(traj.final[:, [0, 2]], start[:, [0, 2]] * 0.5**4)
    assert torch.all(traj.position_energies[1:] <= traj.position_energies[:-1])


def test_per_position_energies_must_line_up_with_the_candidate():
    with pytest.raises(ValueError, match="expand_positions"):
        minimize_energy(lambda c, x: (x**2).sum(1), None, torch.ones(2, 3, 4), 0.1, 1)  # energies (2, 4)
    with pytest.raises(ValueError, match="shape"):
        minimize_energy(lambda c, x: x.sum(), None, torch.ones(2, 3), 0.1, 1)


def test_projection_is_applied_after_every_step():
    """Descending toward 3 with a clamp at 1: every candidate after the start stays within [-1, 1]."""
    traj = minimize_energy(quadratic(1.0, torch.full((2, 3), 3.0)), None, torch.zeros(2, 3), 0.9, 3,
                           project=lambda x: x.clamp(-1, 1))  # fmt: skip
    assert all(c.abs().max() <= 1 for c in traj.candidates[1:])
    torch.testing.assert_close(traj.final, torch.ones(2, 3))


def test_lowest_energy_picks_per_sample_and_per_position():
    finals = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)  # (N=2, B=2, positions 3)
    per_sample = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # sample 0 prefers candidate 1, sample 1 candidate 0
    torch.testing.assert_close(lowest_energy(finals, per_sample), torch.stack([finals[1, 0], finals[0, 1]]))
    per_position = torch.tensor([[[0.0, 1.0, 0.0]] * 2, [[1.0, 0.0, 1.0]] * 2])  # position 1 prefers candidate 1
    chosen = lowest_energy(finals, per_position)
    torch.testing.assert_close(chosen[:, [0, 2]], finals[0][:, [0, 2]])
    torch.testing.assert_close(chosen[:, 1], finals[1][:, 1])


def test_langevin_noise_perturbs_only_when_asked():
    energy, start = quadratic(1.0, torch.zeros(2, 3)), torch.ones(2, 3)
    quiet = minimize_energy(energy, None, start, 0.5, 1)
    noisy = minimize_energy(energy, None, start, 0.5, 1, langevin_noise=0.1)
    assert torch.equal(quiet.final, torch.full((2, 3), 0.5))
    assert not torch.equal(noisy.final, quiet.final)


def test_replay_buffer_replays_whole_rows():
    """Each replayed candidate comes back with its own context and target, never another sample's."""
    buffer = ReplayBuffer(capacity=4)
    context = torch.arange(4.0)[:, None].expand(4, 3)
    buffer.push(context=context, candidate=context * 10, target=context * 100)
    assert len(buffer) == 4
    fresh = {
        "context": torch.full((6, 3), -1.0),
        "candidate": torch.full((6, 3), -2.0),
        "target": torch.full((6, 3), -3.0),
    }
    mixed = buffer.mix(0.5, torch.Generator().manual_seed(0), **fresh)
    replayed = mixed["context"][:3, 0]
    assert set(replayed.tolist()) <= {0.0, 1.0, 2.0, 3.0}
    torch.testing.assert_close(mixed["candidate"][:3], mixed["context"][:3] * 10)
    torch.testing.assert_close(mixed["target"][:3], mixed["context"][:3] * 100)
    assert torch.all(mixed["candidate"][3:] == -2.0)
    buffer.push(context=torch.full((2, 3), 9.0), candidate=torch.zeros(2, 3), target=torch.zeros(2, 3))
    assert len(buffer) == 4 and (buffer.storage["context"][:, 0] == 9.0).sum() == 2  # the oldest were overwritten
    with pytest.raises(ValueError, match="holds"):
        buffer.push(context=torch.zeros(1, 5), candidate=torch.zeros(1, 3), target=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="fields"):
        buffer.push(context=torch.zeros(1, 3), candidate=torch.zeros(1, 3))


def test_step_size_is_positive_and_learnable():
    step = StepSize(3.0)
    assert torch.isclose(step(), torch.tensor(3.0))
    (grad,) = torch.autograd.grad(step() * 2, step.log_value)
    assert grad.item() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        StepSize(0.0)


def test_graph_through_the_last_steps_only_equals_a_short_descent_from_the_reached_state():
    """graph_steps=1 over 4 steps: the loss gradient is that of one training step taken from x3, the state the three
    first-order steps reached; and only the last candidate carries the graph."""
    torch.set_default_dtype(torch.float64)
    try:
        theta = torch.tensor([0.7, -0.4], requires_grad=True)
        context, start, clean = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2)

        def energy(ctx, x):
            return (theta[0] * torch.cos(x - ctx) + theta[1] * x**3 / 3 + 0.5 * x**2).sum(1)

        truncated = minimize_energy(
            energy, context, start, 0.1, 4, training=TrainingDescent(min_steps=4, graph_steps=1)
        )
        assert truncated.graph_from == 4 and not truncated.candidates[3].requires_grad
        (grad,) = torch.autograd.grad(((truncated.final - clean) ** 2).sum(), theta)
        with torch.no_grad():
            x3 = minimize_energy(energy, context, start, 0.1, 3).final
        one = minimize_energy(energy, context, x3, 0.1, 1, training=TrainingDescent(min_steps=1))
        (expected,) = torch.autograd.grad(((one.final - clean) ** 2).sum(), theta)
        torch.testing.assert_close(grad, expected)
    finally:
        torch.set_default_dtype(torch.float32)


def test_with_graph_steps_every_sample_ends_with_its_graph_step():
    """Randomised counts with graph_steps: a sample's steps are its last ones, so the final step (the one with the
    graph) moves every sample."""
    training = TrainingDescent(min_steps=1, graph_steps=1, generator=torch.Generator().manual_seed(0))
    x = torch.randn(32, 2, requires_grad=True)
    traj = minimize_energy(quadratic(1.0, torch.zeros(32, 2)), None, x, 0.1, 6, training=training)
    assert len(set(traj.steps_taken.tolist())) > 1
    assert torch.all((traj.candidates[-1] - traj.candidates[-2]).abs().sum(1) > 0)
    steps = zip(traj.candidates, traj.candidates[1:], strict=False)
    moving = [int(((b - a).abs().sum(1) > 0).sum()) for a, b in steps]
    assert moving == sorted(moving)  # more samples move as the descent goes on, none stops early


def test_stop_tolerance_stops_positions_that_have_converged():
    """Curvature 1 converges in a few steps of 0.5, curvature 0.05 slowly: with a tolerance the fast position stops
    once its energy falls by less than it, the slow one keeps descending; no energy ever rises."""
    curvatures = torch.tensor([1.0, 0.05])
    start = torch.ones(1, 2, 3)
    traj = minimize_energy(per_row_quadratic(curvatures), None, start, 0.5, 12, stop_when_energy_rises=True,
                           stop_tolerance=1e-3)  # fmt: skip
    fast, slow = traj.steps_taken[0].tolist()
    assert fast < 12 and slow == 12 and fast < slow
    assert torch.all(traj.position_energies[1:] <= traj.position_energies[:-1])
    steps = traj.position_energies[:, 0, 0]
    assert (steps[fast - 1] - steps[fast]) < 1e-3 <= (steps[fast - 2] - steps[fast - 1])

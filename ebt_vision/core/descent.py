"""The energy-descent core: the one place in the project where a candidate is refined by gradient steps.

Every energy model (image, video, text) is an ``energy_fn(context, candidate)`` returning one energy per sample (B,)
or one per position (B, *P): per patch, per frame, per token. Prediction is
``candidate <- candidate - step_size * dE/dcandidate`` with the gradient of the *sum* of the energies, repeated.
Per-position energies are kept in the trajectory, so stopping (a position whose energy rose stops there), best-of-N
and uncertainty work per frame or per token, not only per sample.

Training backpropagates through the steps, which needs a second-order graph; evaluation needs only first derivatives.
The options only training uses are grouped in ``TrainingDescent``; a call without it is an evaluation descent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .config import DescentConfig

EnergyFn = Callable[[Tensor, Tensor], Tensor]
GradientFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (context, candidate) -> (dE/dcandidate, E)
Projection = Callable[[Tensor], Tensor]
PositionExpander = Callable[[Tensor, Tensor], Tensor]  # (values (B, *P), candidate) -> broadcastable to candidate
PositionReducer = Callable[
    [Tensor, Tensor], Tensor
]  # (per-element values like the candidate, energy (B, *P)) -> (B, *P)


def compiled_energy_gradient(model: nn.Module) -> GradientFn:
    """``model``'s energy gradient, written with ``torch.func.grad_and_value`` and compiled with ``torch.compile``.

    ``torch.compile`` cannot differentiate a graph that itself calls ``torch.autograd.grad`` ("does not support
    double backward"), but it can compile the gradient *function*: AOTAutograd then traces its derivative, the
    second-order graph training needs, and Inductor fuses both. The parameters go in explicitly (fetched at every
    call), so the outer backward reaches the real ``nn.Parameter``s (and DDP's hooks on them). Keyword arguments of
    the model (e.g. ``sigma``) are passed at call time: ``fn(context, x, sigma=...)``.
    """

    def energy_gradient(params: dict[str, Tensor], context: Tensor, x: Tensor, model_kwargs: dict):
        def total(candidate: Tensor):
            energy = torch.func.functional_call(model, params, (context, candidate), model_kwargs)
            return energy.sum(), energy

        grad, (_, energy) = torch.func.grad_and_value(total, has_aux=True)(x)
        return grad, energy

    compiled = torch.compile(energy_gradient)

    def call(context: Tensor, x: Tensor, **model_kwargs) -> tuple[Tensor, Tensor]:
        return compiled(dict(model.named_parameters()), context, x, model_kwargs)

    return call


class StepSize(nn.Module):
    """A positive, optionally learnable step size, stored as its logarithm.

    The log parameterisation keeps it positive without clamping and makes its learning rate scale-free; the
    objective gives it its own optimiser group.
    """

    def __init__(self, initial: float, learnable: bool = True) -> None:
        super().__init__()
        if initial <= 0:
            raise ValueError(f"step size must be positive, got {initial}")
        self.log_value = nn.Parameter(torch.tensor(math.log(initial)), requires_grad=learnable)

    def forward(self) -> Tensor:
        return self.log_value.exp()


@dataclass
class TrainingDescent:
    """What only a training descent uses: the second-order graph, per-sample randomised step counts and step sizes,
    detaching between steps, recomputing each step's graph in the backward pass (``checkpoint_steps``), and keeping
    the graph through the last ``graph_steps`` steps only (0: all of them).

    With ``graph_steps`` a sample's steps are its LAST ``steps_wanted`` steps (it waits, then descends), so every
    sample ends with the steps that carry the graph; the earlier steps run without one (first order, cheaper): the
    loss trains the energy on the states a long test-time descent reaches.
    """

    min_steps: int = 1
    step_size_jitter: float = 1.0
    detach_between_steps: bool = True
    checkpoint_steps: bool = False
    graph_steps: int = 0
    generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, cfg: DescentConfig, generator: torch.Generator | None = None) -> TrainingDescent:
        return cls(cfg.min_steps, cfg.step_size_jitter, cfg.detach_between_steps, cfg.checkpoint_steps,
                   cfg.graph_steps, generator)  # fmt: skip

    def keeps_graph(self, k: int, num_steps: int) -> bool:
        """Whether step k (0-based) of ``num_steps`` carries the second-order graph."""
        return not self.graph_steps or k >= num_steps - self.graph_steps

    def active(self, k: int, num_steps: int, wanted: Tensor) -> Tensor:
        """Which samples take step k: their first ``wanted`` steps, or their last ones with ``graph_steps``."""
        return k >= num_steps - wanted if self.graph_steps else k < wanted

    def schedule(self, batch: int, num_steps: int, device) -> tuple[Tensor, Tensor]:
        """Per-sample number of steps (B,) in [min_steps, num_steps] and step-size factor (B,)."""
        low = min(self.min_steps, num_steps)
        steps = torch.randint(low, num_steps + 1, (batch,), generator=self.generator, device="cpu").to(device)
        uniform = torch.rand(batch, generator=self.generator, device="cpu").to(device)
        return steps, torch.exp((2 * uniform - 1) * math.log(self.step_size_jitter))


@dataclass
class Trajectory:
    """What a descent produced. ``candidates[k]`` is the candidate after k steps (k = 0..K).

    ``position_energies[k]`` is the energy of ``candidates[k]`` per sample (B,) or per position (B, *P), as the
    energy model returned it; ``energies`` sums it per sample. With ``final_energy`` there are K + 1 of them.
    """

    candidates: list[Tensor]
    position_energies: Tensor  # (K or K + 1, B, *P)
    graph_from: int  # candidates[graph_from:] carry the training graph (1 unless only the last steps keep it)
    grad_norms: Tensor  # (K, B): |dE/dcandidate| at candidates[k]
    steps_taken: Tensor  # (B, *P): steps actually applied to each position (randomised or stopped early)
    forward_passes: int  # energy evaluations of the whole batch
    backward_passes: int  # gradient computations of the whole batch

    @property
    def final(self) -> Tensor:
        return self.candidates[-1]

    @property
    def energies(self) -> Tensor:
        """(K or K + 1, B): the energy of each candidate, summed over positions."""
        return self.position_energies.flatten(2).sum(2) if self.position_energies.dim() > 2 else self.position_energies


def expand_to_candidate(values: Tensor, candidate: Tensor) -> Tensor:
    """Per-sample (B,) or per-position (B, *P) values -> broadcastable against a candidate whose leading dimensions
    are (B, *P) (e.g. frames (B, T, C, H, W) with energies (B, T), tokens (B, L, V) with energies (B, L))."""
    if candidate.shape[: values.dim()] != values.shape:
        raise ValueError(
            f"per-position energies {tuple(values.shape)} do not line up with the candidate's leading dimensions "
            f"{tuple(candidate.shape)}; pass expand_positions to map positions onto the candidate"
        )
    return values.reshape(*values.shape, *([1] * (candidate.dim() - values.dim())))


def mean_over_positions(values: Tensor, energy: Tensor) -> Tensor:
    """Per-element values shaped like the candidate -> their mean per position (B, *P), the positions being the
    candidate's leading dimensions (as ``expand_to_candidate``) or the whole sample for per-sample energies."""
    return values.flatten(energy.dim()).mean(-1)


def _energy_and_gradient(
    energy_fn: EnergyFn, gradient_fn: GradientFn | None, context: Tensor, x: Tensor, create_graph: bool | None = None
) -> tuple[Tensor, Tensor]:
    """The body of every descent step: (dE/dx, E) at x, with a graph through the gradient when ``create_graph``
    (``None``: whenever grad mode is on, which is how activation checkpointing's recompute asks for it)."""
    create_graph = torch.is_grad_enabled() if create_graph is None else create_graph
    if gradient_fn is not None:
        with torch.set_grad_enabled(create_graph):  # no backward graph compiled where none is needed
            return gradient_fn(context, x)
    with torch.enable_grad():
        evaluated = x if x.requires_grad else x.detach().requires_grad_(True)
        energy = energy_fn(context, evaluated)
        (grad,) = torch.autograd.grad(energy.sum(), evaluated, create_graph=create_graph)
    return grad, energy


def _check_energy(energy: Tensor, batch: int) -> None:
    if energy.dim() < 1 or energy.shape[0] != batch:
        raise ValueError(
            f"energy_fn must return shape ({batch},) or ({batch}, positions...), got {tuple(energy.shape)}"
        )


def minimize_energy(
    energy_fn: EnergyFn,
    context: Tensor,
    candidate: Tensor,
    step_size: Tensor | float,
    num_steps: int,
    *,
    stop_when_energy_rises: bool = False,
    stop_tolerance: float = 0.0,
    stop_step_below: float = 0.0,
    momentum: float = 0.0,
    final_energy: bool = False,
    langevin_noise: float = 0.0,
    project: Projection | None = None,
    expand_positions: PositionExpander = expand_to_candidate,
    reduce_positions: PositionReducer = mean_over_positions,
    gradient_fn: GradientFn | None = None,
    training: TrainingDescent | None = None,
) -> Trajectory:
    """Descend ``energy_fn(context, .)`` from ``candidate`` for ``num_steps`` steps: (B, ...), (B, ...) -> Trajectory.

    ``stop_when_energy_rises``: a step that raises a position's energy is undone there and that position stops (for
    positions that interact, such as the patches of one image, the others then continue from a slightly different
    neighbourhood than the one they were evaluated in); this needs the energy after the last step, so it implies
    ``final_energy`` (one more forward pass). ``stop_tolerance`` (with it): a position whose energy fell by less than
    this also stops (the step is kept): adaptive compute per position. ``langevin_noise``: Gaussian noise of this
    scale after every step.
    ``stop_step_below``: a position stops (without taking the step) once the step it would take is smaller than this,
    as the root mean square of ``step_size * dE/dx`` over its elements (in candidate units, e.g. pixels in [-1, 1]):
    on a landscape whose gradient vanishes at the answer, "the gradient has become small" means "arrived".
    ``momentum``: Nesterov-accelerated descent: each step evaluates the gradient at ``x + momentum * v`` (v the last
    step taken) and moves by ``momentum * v - step_size * dE/dx`` there; the recorded energies are those of the
    evaluated points. It does not combine with ``stop_when_energy_rises`` (which compares candidates' energies).
    ``project``: applied to the candidate after every step (e.g. a clamp to the valid pixel range).
    ``expand_positions(values (B, *P), x)``: how per-position energies map onto the candidate (default: the candidate's
    leading dimensions are the positions); ``reduce_positions(values like x, energy (B, *P))`` the way back (the mean
    per position), for ``stop_step_below``. ``gradient_fn(context, x) -> (dE/dx, E)``, when given, replaces
    ``energy_fn`` plus ``torch.autograd.grad`` for the steps (e.g. ``compiled_energy_gradient``).
    ``training``: keep the second-order graph (when grad mode is on) so a loss on the candidates trains the energy,
    and apply the training-only options; with ``training.checkpoint_steps`` the loss must be reduced with
    ``.backward()``, not ``torch.autograd.grad``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "minimize_energy needs autograd, which torch.inference_mode() disables even inside enable_grad(). "
            "Use torch.no_grad() around evaluation code instead; the descent turns gradients on where it needs them."
        )
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if momentum and stop_when_energy_rises:
        raise ValueError("momentum does not combine with stop_when_energy_rises; stop on the step size instead")
    create_graph = training is not None and torch.is_grad_enabled()
    checkpointed = create_graph and training.checkpoint_steps
    if checkpointed and gradient_fn is not None:
        raise ValueError("checkpoint_steps does not combine with a (compiled) gradient_fn")
    final_energy = final_energy or stop_when_energy_rises
    batch, device = candidate.shape[0], candidate.device
    if training is not None:
        steps_wanted, jitter = training.schedule(batch, num_steps, device)
    else:
        steps_wanted, jitter = torch.full((batch,), num_steps, device=device), torch.ones(batch, device=device)

    candidates, energies, grad_norms = [candidate], [], []
    stopped = steps_taken = None  # (B, *P), once the energy's shape is known
    graph_from = 1
    x, velocity = candidate, None
    for k in range(num_steps + int(final_energy)):
        step_graph = create_graph and k < num_steps and training.keeps_graph(k, num_steps)
        if k < num_steps and not step_graph:
            graph_from = k + 2  # candidate k + 1, this step's result, carries no graph
        if not step_graph or training.detach_between_steps or not x.requires_grad:
            x = x.detach().requires_grad_(True)
            velocity = velocity.detach() if velocity is not None else None
        evaluated = x if velocity is None or k == num_steps else x + momentum * velocity  # Nesterov's look-ahead
        if k == num_steps:  # the final energy only: no gradient
            with torch.no_grad():
                grad, energy = None, energy_fn(context, x)
        elif checkpointed and step_graph:  # keep only x; the step's graph is rebuilt and differentiated in backward
            grad, energy = torch.utils.checkpoint.checkpoint(
                _energy_and_gradient, energy_fn, None, context, evaluated, use_reentrant=True
            )
        else:
            grad, energy = _energy_and_gradient(energy_fn, gradient_fn, context, evaluated, step_graph)
        _check_energy(energy, batch)
        recorded = energy.detach()
        if stopped is None:
            stopped = torch.zeros_like(recorded, dtype=torch.bool)
            steps_taken = torch.zeros_like(recorded, dtype=torch.long)
        if stop_when_energy_rises and k > 0:
            # Undo the last step where it raised the energy; those positions, and those whose energy fell by less
            # than the tolerance, stay put from now on.
            rose = (recorded > energies[-1]) & ~stopped
            stalled = (recorded > energies[-1] - stop_tolerance) & ~stopped
            x = torch.where(expand_positions(rose, x), candidates[-2], x)
            candidates[-1] = x
            recorded = torch.where(rose, energies[-1], recorded)
            steps_taken = steps_taken - rose.long()
            stopped = stopped | stalled
        energies.append(recorded)
        if grad is None:
            break
        grad_norms.append(grad.detach().flatten(1).norm(dim=1))
        if stop_step_below > 0:  # arrived: the step this position would take is too small to matter
            step_rms = reduce_positions((float(step_size) * grad.detach()).pow(2), recorded).sqrt()
            stopped = stopped | (step_rms < stop_step_below)
        wanted = steps_wanted.reshape(-1, *([1] * (stopped.dim() - 1)))
        taking = training.active(k, num_steps, wanted) if training is not None else k < wanted
        active = taking & ~stopped  # (B, *P)
        with torch.set_grad_enabled(torch.is_grad_enabled() and (step_graph or not create_graph)):
            # (without momentum: from x, which an undone step may have moved back since it was evaluated)
            moved = (x if velocity is None else evaluated) - expand_positions(
                active * jitter.reshape(wanted.shape), x
            ) * step_size * grad
            if velocity is not None:  # the look-ahead is taken only where the position moves
                moved = moved - expand_positions(~active, x) * momentum * velocity
            if langevin_noise > 0:
                moved = moved + expand_positions(active, x) * langevin_noise * torch.randn_like(x)
            if project is not None:
                moved = project(moved)
            velocity = moved - x if momentum else None
            x = moved
        steps_taken = steps_taken + active.long()
        candidates.append(x)
    if not create_graph:
        candidates = [c.detach() for c in candidates]
    empty = candidate.new_zeros((0, batch))
    return Trajectory(
        candidates=candidates,
        position_energies=torch.stack(energies) if energies else empty,
        graph_from=min(graph_from, len(candidates)) if create_graph else len(candidates),
        grad_norms=torch.stack(grad_norms) if grad_norms else empty,
        steps_taken=steps_taken if steps_taken is not None else torch.zeros(batch, dtype=torch.long, device=device),
        forward_passes=len(energies),
        backward_passes=len(grad_norms),
    )


# Tolerances of the step-size stop that evaluations try (root-mean-square move of a step, in candidate units); the
# one to use is chosen on validation.
STEP_STOP_TOLERANCES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def stop_on_step_size(trajectory: Trajectory, step_size: float, tolerance: float) -> tuple[Tensor, Tensor]:
    """What ``stop_step_below=tolerance`` would have returned, read off a plain descent (one energy per sample) of the
    same inputs: per sample, the candidate at the first step whose root-mean-square move ``step_size |dE/dx| /
    sqrt(n)`` is below ``tolerance`` (the last candidate if none is). -> (estimates (B, ...), steps taken (B,))."""
    candidates = torch.stack(trajectory.candidates)  # (K + 1, B, ...)
    elements = math.prod(candidates.shape[2:])
    moves = step_size * trajectory.grad_norms / math.sqrt(elements)  # (K, B)
    small = torch.cat([moves < tolerance, torch.ones_like(moves[:1], dtype=torch.bool)])  # (K + 1, B)
    taken = small.float().argmax(dim=0)  # the first step that would be too small
    return candidates[taken, torch.arange(candidates.shape[1])], taken


def lowest_energy(finals: Tensor, energies: Tensor, expand_positions: PositionExpander = expand_to_candidate) -> Tensor:
    """Best-of-N selection: (N, B, ...) candidates and their (N, B, *P) energies -> (B, ...) taking, per position, the
    candidate with the lowest energy (per sample when the energies are (N, B))."""
    best = energies.argmin(dim=0)  # (B, *P)
    chosen = finals[0]
    for n in range(1, finals.shape[0]):
        chosen = torch.where(expand_positions(best == n, chosen), finals[n], chosen)
    return chosen


class ReplayBuffer:
    """A ring buffer of past rows, each a set of named tensors that belong together (for a conditional task: the
    context, the candidate the descent reached and the target), replayed together as a fraction of a batch."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.storage: dict[str, Tensor] = {}
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def push(self, **rows: Tensor) -> None:
        """Store B rows (each field (B, ...), detached), overwriting the oldest when full."""
        batch = {k: v.detach() for k, v in rows.items()}
        sizes = {v.shape[0] for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"replay fields differ in batch size: { {k: v.shape[0] for k, v in batch.items()} }")
        if not self.storage:
            self.storage = {k: v.new_zeros((self.capacity, *v.shape[1:])) for k, v in batch.items()}
        if set(batch) != set(self.storage):
            raise ValueError(f"replay buffer holds fields {sorted(self.storage)}, got {sorted(batch)}")
        for key, value in batch.items():
            if value.shape[1:] != self.storage[key].shape[1:]:
                held, got = tuple(self.storage[key].shape[1:]), tuple(value.shape[1:])
                raise ValueError(f"replay buffer holds {key} of shape {held}, got {got}")
        count = min(sizes.pop(), self.capacity)
        index = (self.cursor + torch.arange(count)) % self.capacity
        for key, value in batch.items():
            self.storage[key][index.to(self.storage[key].device)] = value[-count:].to(self.storage[key])
        self.cursor = (self.cursor + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def mix(self, fraction: float, generator: torch.Generator | None = None, **rows: Tensor) -> dict[str, Tensor]:
        """Rows (each (B, ...)); the first ``round(fraction * B)`` replaced, all fields together, by stored ones."""
        batch = next(iter(rows.values())).shape[0]
        count = min(round(fraction * batch), self.size)
        if count == 0:
            return dict(rows)
        if set(rows) != set(self.storage):
            raise ValueError(f"replay buffer holds fields {sorted(self.storage)}, got {sorted(rows)}")
        index = torch.randint(self.size, (count,), generator=generator)  # CPU generator
        return {
            key: torch.cat([self.storage[key][index.to(self.storage[key].device)].to(value), value[count:]])
            for key, value in rows.items()
        }

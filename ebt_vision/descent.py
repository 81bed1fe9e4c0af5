"""The energy-descent core: the one place in the project where a candidate is refined by gradient steps.

Every energy model (image, video, text) is an ``energy_fn(context, candidate) -> (B,)``; prediction is
``candidate <- candidate - step_size * dE/dcandidate``, repeated. Training backpropagates through the steps,
which needs a second-order graph (``create_graph=True``); evaluation needs only first derivatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .config import DescentConfig

EnergyFn = Callable[[Tensor, Tensor], Tensor]
GradientFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (context, candidate) -> (dE/dcandidate, E)


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
    optimiser gives it its own parameter group (see ``train.build_optimizer``).
    """

    def __init__(self, initial: float, learnable: bool = True) -> None:
        super().__init__()
        if initial <= 0:
            raise ValueError(f"step size must be positive, got {initial}")
        self.log_value = nn.Parameter(torch.tensor(math.log(initial)), requires_grad=learnable)

    def forward(self) -> Tensor:
        return self.log_value.exp()


class ReplayBuffer:
    """A ring buffer of past final candidates, reused as starting points for a fraction of a batch."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.storage: Tensor | None = None
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def push(self, candidates: Tensor) -> None:
        """(B, ...) -> stored (detached) rows, overwriting the oldest when full."""
        rows = candidates.detach()
        if self.storage is None:
            self.storage = rows.new_zeros((self.capacity, *rows.shape[1:]))
        if rows.shape[1:] != self.storage.shape[1:]:
            raise ValueError(f"replay buffer holds {tuple(self.storage.shape[1:])}, got {tuple(rows.shape[1:])}")
        for row in rows[-self.capacity :]:
            self.storage[self.cursor] = row
            self.cursor = (self.cursor + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def mix(self, candidate: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
        """(B, ...) -> (B, ...) whose first ``round(fraction * B)`` rows come from the buffer (when it has them)."""
        count = min(round(fraction * candidate.shape[0]), self.size)
        if count == 0 or self.storage is None:
            return candidate
        index = torch.randint(self.size, (count,), generator=generator).to(self.storage.device)  # CPU generator
        replayed = self.storage[index].to(device=candidate.device, dtype=candidate.dtype)
        return torch.cat([replayed, candidate[count:]])


@dataclass
class Trajectory:
    """What a descent produced. ``candidates[k]`` is the candidate after k steps (k = 0..K)."""

    candidates: list[Tensor]
    energies: Tensor  # (K, B), or (K + 1, B) with the final energy: E at candidates[k]
    grad_norms: Tensor  # (K, B): |dE/dcandidate| at candidates[k]
    steps_taken: Tensor  # (B,): steps actually applied to each sample (randomised or stopped early)
    forward_passes: int  # energy evaluations of the whole batch
    backward_passes: int  # gradient computations of the whole batch

    @property
    def final(self) -> Tensor:
        return self.candidates[-1]


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) broadcastable against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _sample_schedule(cfg: DescentConfig, batch: int, num_steps: int, randomize: bool, generator, device):
    """Per-sample number of steps (B,) and step-size factor (B,)."""
    if not randomize:
        return torch.full((batch,), num_steps, device=device), torch.ones(batch, device=device)
    low = min(cfg.min_steps, num_steps)
    steps = torch.randint(low, num_steps + 1, (batch,), generator=generator, device="cpu").to(device)
    log_jitter = math.log(cfg.step_size_jitter)
    uniform = torch.rand(batch, generator=generator, device="cpu").to(device)
    return steps, torch.exp((2 * uniform - 1) * log_jitter)


def _check_energy(energy: Tensor, batch: int) -> None:
    if energy.shape != (batch,):
        raise ValueError(f"energy_fn must return shape ({batch},), got {tuple(energy.shape)}")


def _add_langevin_noise(x: Tensor, active: Tensor, scale: float) -> Tensor:
    return x + _per_sample(active, x) * scale * torch.randn_like(x) if scale > 0 else x


def _checkpointed_step(energy_fn: EnergyFn, batch: int, context: Tensor, x: Tensor, scale: Tensor):
    """One descent step under reentrant activation checkpointing -> (next x, energy, gradient norm).

    The checkpoint runs this twice: first with grad mode off (the forward pass: only the first-order gradient is
    needed, no graph is kept), then with grad mode on during the backward pass, where the step is recomputed with
    its second-order graph and differentiated at once.
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        evaluated = x if x.requires_grad else x.detach().requires_grad_(True)
        energy = energy_fn(context, evaluated)
        _check_energy(energy, batch)
        (grad,) = torch.autograd.grad(energy.sum(), evaluated, create_graph=create_graph)
    return x - scale * grad, energy.detach(), grad.detach().flatten(1).norm(dim=1)


def minimize_energy(
    energy_fn: EnergyFn,
    context: Tensor,
    candidate: Tensor,
    cfg: DescentConfig,
    step_size: Tensor | float,
    *,
    create_graph: bool = False,
    randomize: bool = False,
    num_steps: int | None = None,
    final_energy: bool = False,
    langevin_noise: float | None = None,
    replay_buffer: ReplayBuffer | None = None,
    generator: torch.Generator | None = None,
    checkpoint_steps: bool = False,
    gradient_fn: GradientFn | None = None,
) -> Trajectory:
    """Descend ``energy_fn(context, .)`` from ``candidate``: (B, ...), (B, ...) -> Trajectory.

    ``create_graph`` keeps the second-order graph so a loss on the candidates trains the energy (training only).
    ``randomize`` draws per-sample step counts and step sizes from ``cfg`` (training only). With
    ``cfg.stop_when_energy_rises`` a step that raises a sample's energy is undone and that sample stops; this
    needs the energy after the last step, so it implies ``final_energy`` (one more forward pass).
    ``checkpoint_steps`` (with ``create_graph``): keep only each step's input and recompute the step's graph during
    the backward pass, so memory holds one step's second-order graph instead of all of them, for one more forward
    and gradient per step. The loss must then be reduced with ``.backward()``, not ``torch.autograd.grad``.
    ``gradient_fn(context, x) -> (dE/dx, E)``, when given, replaces ``energy_fn`` plus ``torch.autograd.grad`` for
    the steps (e.g. ``compiled_energy_gradient``); ``energy_fn`` still gives energies that need no gradient.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "minimize_energy needs autograd, which torch.inference_mode() disables even inside enable_grad(). "
            "Use torch.no_grad() around evaluation code instead; the descent turns gradients on where it needs them."
        )
    num_steps = cfg.num_steps if num_steps is None else num_steps
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    noise_scale = cfg.langevin_noise if langevin_noise is None else langevin_noise
    stop_on_rise = cfg.stop_when_energy_rises
    final_energy = final_energy or stop_on_rise
    checkpoint_steps = checkpoint_steps and create_graph
    if checkpoint_steps and (stop_on_rise or gradient_fn is not None):
        raise ValueError("checkpoint_steps goes with neither stop_when_energy_rises nor a (compiled) gradient_fn")
    batch, device = candidate.shape[0], candidate.device
    steps_wanted, jitter = _sample_schedule(cfg, batch, num_steps, randomize, generator, device)
    if replay_buffer is not None:
        candidate = replay_buffer.mix(candidate, cfg.replay_fraction, generator)

    candidates, energies, grad_norms = [candidate], [], []
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    steps_taken = torch.zeros(batch, dtype=torch.long, device=device)
    forward_passes = backward_passes = 0
    x = candidate
    with torch.enable_grad():
        for k in range(num_steps + int(final_energy)):
            if cfg.detach_between_steps or not create_graph or not x.requires_grad:
                x = x.detach().requires_grad_(True)
            if checkpoint_steps and k < num_steps:
                active = (k < steps_wanted) & ~stopped
                scale = _per_sample(active * jitter, x) * step_size
                step = partial(_checkpointed_step, energy_fn, batch)
                x, recorded, grad_norm = torch.utils.checkpoint.checkpoint(step, context, x, scale, use_reentrant=True)
                forward_passes, backward_passes = forward_passes + 1, backward_passes + 1
                energies.append(recorded.detach())
                grad_norms.append(grad_norm.detach())
                x = _add_langevin_noise(x, active, noise_scale)
                steps_taken = steps_taken + active.long()
                candidates.append(x)
                continue
            evaluated = x
            if gradient_fn is not None and k < num_steps:
                # grad mode off unless training: a compiled gradient function then compiles without a backward
                with torch.set_grad_enabled(create_graph):
                    grad, energy = gradient_fn(context, evaluated)
            else:
                grad, energy = None, energy_fn(context, evaluated)
            forward_passes += 1
            _check_energy(energy, batch)
            recorded = energy.detach()
            if stop_on_rise and k > 0:
                # Undo the last step where it raised the energy; those samples stay put from now on.
                rose = (recorded > energies[-1]) & ~stopped
                x = torch.where(_per_sample(rose, x), candidates[-2], x)
                candidates[-1] = x
                recorded = torch.where(rose, energies[-1], recorded)
                steps_taken = steps_taken - rose.long()
                stopped = stopped | rose
            energies.append(recorded)
            if k == num_steps:
                break
            if grad is None:
                (grad,) = torch.autograd.grad(energy.sum(), evaluated, create_graph=create_graph)
            backward_passes += 1
            grad_norms.append(grad.detach().flatten(1).norm(dim=1))
            active = (k < steps_wanted) & ~stopped
            x = x - _per_sample(active * jitter, x) * step_size * grad
            x = _add_langevin_noise(x, active, noise_scale)
            steps_taken = steps_taken + active.long()
            candidates.append(x)
    if not create_graph:
        candidates = [c.detach() for c in candidates]
    if replay_buffer is not None:
        replay_buffer.push(candidates[-1])
    empty = candidate.new_zeros((0, batch))
    return Trajectory(
        candidates=candidates,
        energies=torch.stack(energies) if energies else empty,
        grad_norms=torch.stack(grad_norms) if grad_norms else empty,
        steps_taken=steps_taken,
        forward_passes=forward_passes,
        backward_passes=backward_passes,
    )

"""System-2 inference with a trained text EBT: descend the next-token logits for longer than trained, with Langevin
noise, stopping per token when a step raises its energy, and best-of-N by the lowest energy per token.

Everything goes through ``core.descent.minimize_energy`` (the one descent loop) and ``core.descent.lowest_energy``;
the per-token energies (B, L) make stopping and selection per token, not per window. Evaluation descents need only
first derivatives: run them under ``torch.no_grad()`` or plain, never ``torch.inference_mode()`` (docs/design.md, trap 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.descent import Trajectory, lowest_energy, minimize_energy
from ..core.errors import InputError
from .objective import TextEBTObjective

MAX_STEPS = 64
MAX_CANDIDATES = 32


@dataclass(frozen=True)
class Thinking:
    """How long and how an EBT thinks at test time.

    ``num_steps`` None: the trained count. ``step_scale`` multiplies the learned step size. ``stop_when_energy_rises``
    undoes a step where it raised a token's energy and stops that token. ``langevin_noise``: Gaussian noise on the
    logits after every step. ``n_candidates`` > 1: best-of-N, the first start the configured one, the others it plus
    Gaussian logits of ``start_noise``; per token the candidate of lowest final energy wins.
    """

    num_steps: int | None = None
    step_scale: float = 1.0
    stop_when_energy_rises: bool = False
    langevin_noise: float = 0.0
    n_candidates: int = 1
    start_noise: float = 0.1  # small: far from the starts it was trained from the learned landscape diverges

    def check(self) -> None:
        if self.num_steps is not None and not 0 <= self.num_steps <= MAX_STEPS:
            raise InputError(f"num_steps must be in [0, {MAX_STEPS}], got {self.num_steps}")
        if not 1 <= self.n_candidates <= MAX_CANDIDATES:
            raise InputError(f"n_candidates must be in [1, {MAX_CANDIDATES}], got {self.n_candidates}")
        if not self.step_scale > 0:
            raise InputError(f"step_scale must be > 0, got {self.step_scale}")
        if self.langevin_noise < 0 or self.start_noise < 0:
            raise InputError("langevin_noise and start_noise must be >= 0")


@dataclass
class Prediction:
    """What a System-2 descent found: per token, the chosen logits and their energy, and the whole descent.

    ``trajectory`` holds all N x B rows (candidate n of window b is row n * B + b); ``candidate_energies`` (K + 1, N,
    B, L) is the energy of every candidate after every step, so any step count and any N <= n_candidates can be
    scored from one descent (``select``).
    """

    logits: Tensor  # (B, L, V)
    energies: Tensor  # (B, L)
    trajectory: Trajectory
    candidate_energies: Tensor  # (K + 1, N, B, L)

    def candidates(self, step: int) -> Tensor:
        """(N, B, L, V): every start's logits after ``step`` steps."""
        n, batch = self.candidate_energies.shape[1:3]
        return self.trajectory.candidates[step].reshape(n, batch, *self.logits.shape[1:])

    def select(self, step: int, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Best-of-``n`` (default: all) after ``step`` steps: (B, L, V) logits and (B, L) energies."""
        n = n or self.candidate_energies.shape[1]
        energies = self.candidate_energies[step, :n]
        return lowest_energy(self.candidates(step)[:n], energies), energies.min(dim=0).values


def starts(
    objective: TextEBTObjective, context: Tensor, n: int, start_noise: float, generator: torch.Generator | None
) -> Tensor:
    """(B, L) -> (N * B, L, V): the configured start for every window, then N - 1 perturbed copies of it."""
    start = objective.start(context, generator)
    if n == 1:
        return start
    noise = torch.randn((n - 1, *start.shape), generator=generator) * start_noise
    return torch.cat([start[None], start[None] + noise.to(start)]).flatten(0, 1)


def think(objective: TextEBTObjective, context: Tensor, thinking: Thinking = Thinking(), seed: int = 0) -> Prediction:
    """(B, L) context token ids -> Prediction: next-token logits (B, L, V) found by descent, with their energies.

    ``seed`` fixes the starts and the Langevin noise (the global RNG is restored afterwards). The energy of the last
    candidate is always evaluated (one more forward pass), so the prediction carries its per-token energies.
    """
    thinking.check()
    cfg = objective.cfg
    device = next(objective.parameters()).device
    context = context.to(device)
    steps = cfg.descent.num_steps if thinking.num_steps is None else thinking.num_steps
    n, batch = thinking.n_candidates, context.shape[0]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # Langevin noise draws from the global RNG inside the descent
        with torch.no_grad():
            step_size = objective.step_size() * thinking.step_scale
            memory = objective.model.encode_context(context)  # once for every step and every start
        trajectory = minimize_energy(
            objective.model,
            memory.repeat(n, *[1] * (memory.dim() - 1)),  # (N * B, ...): every start with its own window
            starts(objective, context, n, thinking.start_noise, generator),
            step_size,
            steps,
            stop_when_energy_rises=thinking.stop_when_energy_rises,
            final_energy=True,
            langevin_noise=thinking.langevin_noise,
        )
    energies = trajectory.position_energies.reshape(steps + 1, n, batch, -1)  # (K + 1, N, B, L)
    final = trajectory.final.reshape(n, batch, *trajectory.final.shape[1:])
    return Prediction(lowest_energy(final, energies[-1]), energies[-1].min(dim=0).values, trajectory, energies)

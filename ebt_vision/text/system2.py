"""System-2 inference with a trained text EBT: descend the next-token logits for longer than trained, with Langevin
noise, stopping per token when a step raises its energy, and best-of-N by the lowest energy per token.

The descent is ``EnergyObjective.infer`` with the shared ``Thinking`` options, the selection
``core.descent.lowest_energy``; the per-token energies (B, L) make stopping and selection per token, not per window.
Evaluation descents need only first derivatives: run them under ``torch.no_grad()`` or plain, never
``torch.inference_mode()`` (docs/design.md, trap 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..core.descent import Trajectory, lowest_energy
from ..core.inference import Thinking
from .objective import TextEBTObjective

# Best-of-N starts after the first: Gaussian noise of this std on the start (on its logits for a probability
# candidate: ``TextEBT.perturb``). Small: the landscape is learned near the starts it was trained from (measured on a
# CPU-trained EBT, V = 1024, trained from the uniform start: from noise 1.0 its descents diverged, perplexity ~1e13;
# from 0.3 they were 3x worse; from 0.1 within 10% of the plain descent).
START_NOISE = 0.1


@dataclass
class Prediction:
    """What a System-2 descent found: per token, the chosen logits and their energy, and the whole descent.

    ``trajectory`` holds all N x B rows (candidate n of window b is row n * B + b); ``candidate_energies`` (K + 1, N,
    B, L) is the energy of every candidate after every step, so any step count and any N <= n_candidates can be
    scored from one descent (``select``).
    """

    logits: Tensor  # (B, L, V): the chosen candidates read as next-token logits
    energies: Tensor  # (B, L)
    trajectory: Trajectory
    candidate_energies: Tensor  # (K + 1, N, B, L)
    readout: Callable[[Tensor], Tensor]  # candidates of the model's space -> logits (``TextEBTObjective.logits``)

    def candidates(self, step: int) -> Tensor:
        """(N, B, L, candidate_size): every start's candidate after ``step`` steps, in the model's space."""
        n, batch = self.candidate_energies.shape[1:3]
        steps = self.trajectory.candidates[step]
        return steps.reshape(n, batch, *steps.shape[1:])

    def select(self, step: int, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Best-of-``n`` (default: all) after ``step`` steps: (B, L, V) logits and (B, L) energies."""
        n = n or self.candidate_energies.shape[1]
        energies = self.candidate_energies[step, :n]
        return self.readout(lowest_energy(self.candidates(step)[:n], energies)), energies.min(dim=0).values


def starts(
    objective: TextEBTObjective,
    context: Tensor,
    n: int,
    start_noise: float,
    generator: torch.Generator | None,
    memory: Tensor | None = None,
) -> Tensor:
    """(B, L) -> (N * B, L, candidate_size): the configured start for every window, then N - 1 perturbed copies.
    ``memory``: the context's encoding, when at hand (the guess start reads it)."""
    with torch.no_grad():
        start = objective.start(context, generator, memory)
    if n == 1:
        return start
    noise = torch.randn((n - 1, *start.shape), generator=generator) * start_noise
    others = objective.model.perturb(start[None].expand_as(noise), noise.to(start))
    return torch.cat([start[None], others]).flatten(0, 1)


def think(objective: TextEBTObjective, context: Tensor, thinking: Thinking = Thinking(), seed: int = 0) -> Prediction:
    """(B, L) context token ids -> Prediction: next-token logits (B, L, V) found by descent, with their energies.

    ``seed`` fixes the starts and the Langevin noise (the global RNG is restored afterwards). The energy of the last
    candidate is always evaluated (one more forward pass), so the prediction carries its per-token energies.
    """
    noise = START_NOISE if thinking.start_noise is None else thinking.start_noise
    thinking = replace(thinking, start_noise=noise, final_energy=True)
    thinking.check(objective.cfg.descent.num_steps)
    device = next(objective.parameters()).device
    context = context.to(device)
    steps = thinking.steps(objective.cfg.descent.num_steps)
    n, batch = thinking.n_candidates, context.shape[0]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # Langevin noise draws from the global RNG inside the descent
        with torch.no_grad():
            memory = objective.model.encode_context(context)  # once for every step and every start
        trajectory = objective.infer(
            memory.repeat(n, *[1] * (memory.dim() - 1)),  # (N * B, ...): every start with its own window
            starts(objective, context, n, noise, generator, memory),
            thinking,
        )
    energies = trajectory.position_energies.reshape(steps + 1, n, batch, -1)  # (K + 1, N, B, L)
    final = trajectory.final.reshape(n, batch, *trajectory.final.shape[1:])
    readout = torch.no_grad()(objective.logits)  # an embedding's readout has weights: no graph to them at test time
    chosen = readout(lowest_energy(final, energies[-1]))
    return Prediction(chosen, energies[-1].min(dim=0).values, trajectory, energies, readout)

"""How an EBT thinks at test time: ``Thinking``, the one set of descent options that image, video and text inference
share. ``EnergyObjective.infer`` runs a descent with it through ``minimize_energy``; each workload adds only what is
its own (tiling a photo, rolling out frames, encoding tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from .defaults import MAX_CANDIDATES, MAX_PASSES, MAX_STEPS
from .errors import InputError


@dataclass(frozen=True)
class Thinking:
    """Test-time descent options (see ``minimize_energy`` for each stopping rule).

    ``num_steps`` None: the trained count. ``step_scale`` multiplies the learned step size. ``stop_when_energy_rises``
    undoes a step where it raised a position's energy and stops that position; with ``stop_tolerance`` a position whose
    energy fell by less than that stops too. ``stop_step_below``: a position stops once its step would move it by less
    than this (root mean square, candidate units). ``momentum``: Nesterov-accelerated descent. ``langevin_noise``:
    Gaussian noise after every step (none by default at test time, whatever training used). ``n_candidates`` > 1:
    best-of-N, the first start the workload's own, the others perturbed by noise of ``start_noise`` (None: the
    workload's default, in its units); per position the candidate of lowest final energy wins. ``clamp``: project
    every step onto the valid range (None: as trained, ``descent.clamp_candidate``). ``final_energy``: also evaluate
    the last candidate's energy (one more forward pass); a workload turns it on where its selection needs it.
    ``passes`` > 1 (image denoising only, whose energy reads the noisy image as its context): a re-anchored descent,
    ``num_steps`` steps per pass, after which the estimate (clamped) replaces the noisy image as the context and the
    start of the next pass; the candidates of all passes follow one another in the trajectory. ``keep_noise``: the
    fraction of what the pass removed that the next pass's noisy image keeps (estimate + keep_noise x (noisy image -
    estimate)): 0 re-anchors on the estimate itself, 0.5 on an image half as noisy along the same noise, as a
    two-step DDIM re-noises its first estimate.
    """

    num_steps: int | None = None
    step_scale: float = 1.0
    stop_when_energy_rises: bool = False
    stop_tolerance: float = 0.0
    stop_step_below: float = 0.0
    momentum: float = 0.0
    langevin_noise: float = 0.0
    n_candidates: int = 1
    start_noise: float | None = None
    clamp: bool | None = None
    final_energy: bool = True
    passes: int = 1
    keep_noise: float = 0.0

    def steps(self, trained: int) -> int:
        """The number of descent steps: ``num_steps``, or ``trained`` when it is None."""
        return trained if self.num_steps is None else self.num_steps

    def check(self, trained: int = 0) -> None:
        """Clear errors for options no descent can take (``trained``: the step count ``num_steps`` None stands for)."""
        steps = self.steps(trained)
        if not 0 <= steps <= MAX_STEPS:
            raise InputError(f"num_steps must be in [0, {MAX_STEPS}], got {steps}")
        if not 1 <= self.n_candidates <= MAX_CANDIDATES:
            raise InputError(f"best-of-N needs n_candidates in [1, {MAX_CANDIDATES}], got {self.n_candidates}")
        if not 1 <= self.passes <= MAX_PASSES:
            raise InputError(f"passes must be in [1, {MAX_PASSES}], got {self.passes}")
        if not self.step_scale > 0:
            raise InputError(f"step_scale must be > 0, got {self.step_scale}")
        if not 0 <= self.momentum < 1:
            raise InputError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.keep_noise < 1:
            raise InputError(f"keep_noise must be in [0, 1), got {self.keep_noise}")
        if min(self.langevin_noise, self.stop_tolerance, self.stop_step_below, self.start_noise or 0.0) < 0:
            raise InputError("langevin_noise, stop_tolerance, stop_step_below and start_noise must be >= 0")

"""Objectives compose a model, (for an EBT) the descent, and a loss. The training loop depends on the ``Objective``
interface alone and knows nothing EBT-specific; ``EnergyObjective`` is the shared base of every EBT workload: it holds
the EBT's own steps (the descent, which candidates carry the graph, the unrolled and equilibrium objectives, the
landscape terms, the metrics), so a workload states only its data, its start, its target and its loss."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ExperimentConfig, OptimConfig, TrainConfig
from .descent import (
    EnergyFn,
    GradientFn,
    PositionExpander,
    Projection,
    ReplayBuffer,
    StepSize,
    TrainingDescent,
    Trajectory,
    compiled_energy_gradient,
    expand_to_candidate,
    minimize_energy,
)
from .errors import InputError
from .inference import Thinking


@dataclass
class Descended:
    """A training or evaluation descent and the rows it descended (after replay, the replayed rows' own context,
    target and conditioning)."""

    trajectory: Trajectory
    context: Tensor
    target: Tensor
    conditioning: dict[str, Tensor]


def _per_sample(energy: Tensor) -> Tensor:
    """(B,) or (B, *P) -> (B,): per-position energies summed."""
    return energy.flatten(1).sum(1) if energy.dim() > 1 else energy


@dataclass
class StepOutput:
    loss: Tensor
    metrics: dict[str, Tensor]  # detached scalars for logging; "energy_abs_max" is watched for divergence


@runtime_checkable
class Objective(Protocol):
    """What the training loop needs (besides ``nn.Module``'s ``parameters``, ``state_dict``, ``train``, ``to``)."""

    def forward(self, batch: Any) -> StepOutput: ...

    def param_groups(self, optim: OptimConfig) -> list[dict]: ...

    def compile_for_training(self) -> None: ...


def clamp_unit_range(x: Tensor) -> Tensor:
    """The projection of pixel candidates (images, frames) onto their valid range [-1, 1]."""
    return x.clamp(-1.0, 1.0)


# The floor of ``log_mse``: a per-sample MSE of 4e-4 in [-1, 1] units is 40 dB PSNR on 0-255 pixels; below it a sample's
# weight stops growing, so near-noiseless samples (whose error is tiny) cannot take over the gradient.
LOG_MSE_FLOOR = 4e-4


def reconstruction_loss(prediction: Tensor, target: Tensor, kind: str) -> Tensor:
    """``train.loss`` of a batch (B, ...): "mse", "smooth_l1" (beta 1: half the MSE for errors under 1), or "log_mse",
    the mean over samples of log(their MSE + ``LOG_MSE_FLOOR``): mean PSNR up to sign and scale, so each sample's
    gradient is weighted by 1 / its error and lightly noisy samples count as much as heavily noisy ones (in a plain
    MSE, whose gradient the noisiest samples dominate, they hardly count)."""
    if kind == "mse":
        return F.mse_loss(prediction, target)
    if kind == "log_mse":
        per_sample = (prediction - target).pow(2).flatten(1).mean(dim=1)
        return (per_sample + LOG_MSE_FLOOR).log().mean()
    return F.smooth_l1_loss(prediction, target, beta=1.0)


def weight_decay_groups(module: nn.Module, optim: OptimConfig, skip: frozenset[int] = frozenset()) -> list[dict]:
    """Decay matrices only; biases, norms, embeddings-as-vectors and ``skip`` parameters get none."""
    decay, no_decay = [], []
    for param in module.parameters():
        if not param.requires_grad or id(param) in skip:
            continue
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class DirectObjective(nn.Module):
    """The shared half of every baseline that predicts in one pass (plain transformers, DiTs): its network
    ``model``, optimiser groups that decay matrices only, and ``train.compile`` compiling the network in place (its
    state-dict keys stay the same). Subclasses write ``forward(batch) -> StepOutput``."""

    def __init__(self, model: nn.Module, cfg: ExperimentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model

    def prediction_step(self, prediction: Tensor, target: Tensor, **metrics: Tensor) -> StepOutput:
        """The configured reconstruction loss (``train.loss``) of a prediction shaped like its target, with its MSE
        (and ``metrics``) for the log."""
        loss = reconstruction_loss(prediction.float(), target, self.cfg.train.loss)
        mse = F.mse_loss(prediction.detach().float(), target)
        return StepOutput(loss, {"loss": loss.detach(), "mse_last": mse, **metrics})

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        return weight_decay_groups(self, optim)

    def compile_for_training(self) -> None:
        self.model.compile()


class EnergyObjective(nn.Module):
    """The shared half of every EBT objective: the energy model, its learned step size, the optional replay buffer
    and compiled gradient; ``descend``, which calls the one descent loop with the training options when training;
    and ``energy_step``, the training step of ``train.objective``. Subclasses write ``forward(batch) -> StepOutput``
    (their data, start and target, usually one call of ``energy_step``) and, when it is not the configured
    reconstruction loss, ``loss(prediction, target)``."""

    def __init__(self, model: nn.Module, cfg: ExperimentConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        descent = self.descent_cfg = cfg.descent
        self.step_size = StepSize(descent.step_size, descent.learn_step_size)
        self.replay = ReplayBuffer(descent.replay_buffer_size) if descent.replay_buffer_size > 0 else None
        self.gradient_fn = None

    def compile_for_training(self) -> None:
        """Compile the energy's gradient function (``train.compile``); see ``compiled_energy_gradient``."""
        self.gradient_fn = compiled_energy_gradient(self.model)

    def encode(self, context: Tensor) -> Any:
        """The part of the energy that depends on the context alone, computed once per descent and passed to the
        model as its context at every step (e.g. a causal model's keys and values of the real tokens); the model
        must accept it in place of the raw context. Default: the context itself."""
        return context

    def projection(self) -> Projection | None:
        """The projection applied after each step when ``descent.clamp_candidate`` is on; workloads override it."""
        return None

    def expand_positions(self) -> PositionExpander:
        """How the model's per-position energies map onto its candidate; workloads override it."""
        return expand_to_candidate

    def descend_rows(
        self,
        context: Tensor,
        start: Tensor,
        target: Tensor,
        conditioning: dict[str, Tensor] | None = None,
        num_steps: int | None = None,
    ) -> Descended:
        """Descend from ``start``; -> the trajectory and the rows actually descended.

        In training mode the descent keeps its second-order graph, draws its randomised schedule, and (with replay
        on) starts ``replay_fraction`` of the rows from stored (context, candidate, target, conditioning) rows, so
        the returned context, target and conditioning belong to the rows actually descended. ``conditioning``:
        per-row keyword arguments of the model (e.g. the noise sigma of a non-blind denoiser).
        """
        cfg, conditioning = self.descent_cfg, dict(conditioning or {})
        if self.training and self.replay is not None:
            rows = self.replay.mix(cfg.replay_fraction, context=context, candidate=start, target=target, **conditioning)
            context, start, target = rows.pop("context"), rows.pop("candidate"), rows.pop("target")
            conditioning = rows
        energy_fn, gradient_fn = self._energy_functions(conditioning)
        trajectory = minimize_energy(
            energy_fn,
            self.encode(context),
            start,
            self.step_size(),
            cfg.num_steps if num_steps is None else num_steps,
            langevin_noise=cfg.langevin_noise if self.training else 0.0,
            project=self._projection(cfg.clamp_candidate),
            expand_positions=self.expand_positions(),
            gradient_fn=gradient_fn,
            training=TrainingDescent.from_config(cfg) if self.training else None,
        )
        if self.training and self.replay is not None:
            self.replay.push(context=context, candidate=trajectory.final, target=target, **conditioning)
        return Descended(trajectory, context, target, conditioning)

    def infer(
        self,
        context: Any,
        start: Tensor,
        thinking: Thinking = Thinking(),
        energy: EnergyFn | None = None,
        expand_positions: PositionExpander | None = None,
        gradient_fn: GradientFn | None = None,
    ) -> Trajectory:
        """Test-time descent from ``start`` (B, ...) with ``thinking``'s options -> its Trajectory.

        The one way inference reaches ``minimize_energy``: the learned step size times ``thinking.step_scale``, the
        workload's projection when clamping (as trained unless ``thinking.clamp`` says), no second-order graph.
        ``context`` goes to the energy as given (encode it first where a workload encodes once per descent);
        ``energy`` replaces the model (e.g. a tiled energy over a whole photo), ``expand_positions`` the workload's
        mapping of per-position energies, ``gradient_fn`` the autograd gradient (e.g. the compiled one).
        """
        thinking.check(self.descent_cfg.num_steps)
        if thinking.passes != 1:
            raise InputError(
                f"passes={thinking.passes}: only image denoising re-anchors its descent (ebt_vision.image.inference."
                "denoise runs the passes); one descent takes passes=1"
            )
        with torch.no_grad():
            step_size = self.step_size() * thinking.step_scale
        return minimize_energy(
            self.model if energy is None else energy,
            context,
            start,
            step_size,
            thinking.steps(self.descent_cfg.num_steps),
            stop_when_energy_rises=thinking.stop_when_energy_rises,
            stop_tolerance=thinking.stop_tolerance,
            stop_step_below=thinking.stop_step_below,
            momentum=thinking.momentum,
            final_energy=thinking.final_energy,
            langevin_noise=thinking.langevin_noise,
            project=self._projection(self.descent_cfg.clamp_candidate if thinking.clamp is None else thinking.clamp),
            expand_positions=expand_positions or self.expand_positions(),
            gradient_fn=gradient_fn,
        )

    def _projection(self, clamp: bool) -> Projection | None:
        """The rule every descent follows: the workload's projection after each step when clamping, else none."""
        return self.projection() if clamp else None

    def _energy_functions(self, conditioning: dict[str, Tensor]):
        energy_fn, gradient_fn = self.model, self.gradient_fn
        if conditioning:
            energy_fn = partial(energy_fn, **conditioning)
            gradient_fn = gradient_fn and partial(gradient_fn, **conditioning)
        return energy_fn, gradient_fn

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The workload's loss of one candidate against its target (default: ``train.loss`` on the values)."""
        return reconstruction_loss(prediction.float(), target, self.cfg.train.loss)

    def step_losses(self, trajectory: Trajectory, target: Tensor) -> tuple[Tensor, Tensor]:
        """(loss over the configured steps, loss of the last step) of the descent's candidates vs ``target``; in
        training only the candidates that carry the graph count (see ``TrainingDescent.graph_steps``)."""
        first = trajectory.graph_from if self.training and trajectory.graph_from < len(trajectory.candidates) else 1
        losses = [self.loss(c, target) for c in trajectory.candidates[first:]]
        loss = losses[-1] if self.cfg.train.loss_on_steps == "last" else torch.stack(losses).mean()
        return loss, losses[-1]

    def equilibrium_loss(
        self, context: Tensor, start: Tensor, target: Tensor, conditioning: dict[str, Tensor] | None = None
    ) -> Tensor:
        """The equilibrium objective (``train.objective``): at a point x, the step the descent would take there,
        ``step_size * dE/dx``, is regressed (with the workload's loss, on where it lands) onto the move towards the
        target that Equilibrium Matching's truncated decay asks for (Wang and Du 2025, with the noise replaced by the
        descent's start): with gamma = |x - target| / |start - target| and m = ``train.equilibrium_max_move``, a
        point within m lands on the target, a point further away moves m |start - target| towards it. So the
        gradient vanishes at the target and points at it from everywhere the points cover.

        The points: ``target + gamma (start - target)`` with gamma uniform in [0, 1] (the way from the start to the
        answer); with ``train.equilibrium_visited`` K > 0, half the rows instead take the state a first-order descent
        from the start reaches after 1..K steps (drawn per row): the field is then also trained where the descent
        actually goes, off that line. Candidate-shaped targets (pixels, frames), or targets a workload turns into
        candidates (``candidate_target``: the next token as a one-hot distribution); the landed point is scored by
        ``field_loss`` (default: the workload's loss)."""
        target = self.candidate_target(target)
        if target.shape != start.shape:
            raise ValueError(
                f"the equilibrium objective needs candidate-shaped targets: {target.shape} vs {start.shape}"
            )
        rows = (start.shape[0], *([1] * (start.dim() - 1)))
        offset = (start - target).detach()
        point = target + torch.rand(rows, device=start.device) * offset
        energy_fn, _ = self._energy_functions(dict(conditioning or {}))
        encoded = self.encode(context)
        if self.cfg.train.equilibrium_visited:
            point = torch.where(torch.rand(rows, device=start.device) < 0.5, point,
                                self._visited_states(energy_fn, encoded, start))  # fmt: skip
        point = point.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = energy_fn(encoded, point)
            (grad,) = torch.autograd.grad(energy.sum(), point, create_graph=True)
        landed = point - self.step_size() * grad
        distance, reach = (point - target).detach(), offset.flatten(1).norm(dim=1).view(rows)
        gamma = distance.flatten(1).norm(dim=1).view(rows) / reach.clamp_min(1e-12)
        kept = 1 - (self.cfg.train.equilibrium_max_move / gamma.clamp_min(1e-12)).clamp(max=1.0)
        return self.field_loss(landed, (target + kept * distance).detach())

    def candidate_target(self, target: Tensor) -> Tensor:
        """The target as a candidate, for the equilibrium objective (default: it is one already)."""
        return target

    def field_loss(self, landed: Tensor, goal: Tensor) -> Tensor:
        """How the equilibrium objective scores where a step landed against the candidate it should reach (default:
        the workload's loss)."""
        return self.loss(landed, goal)

    def _visited_states(self, energy_fn, encoded, start: Tensor) -> Tensor:
        """Per row, the state of a first-order descent from ``start`` after a random 1..K steps (K =
        ``train.equilibrium_visited``): the whole batch takes K steps, each row keeps its own one (a fixed cost)."""
        steps = self.cfg.train.equilibrium_visited
        trajectory = minimize_energy(
            energy_fn, encoded, start.detach(), self.step_size().detach(), steps,
            project=self.projection() if self.descent_cfg.clamp_candidate else None,
            expand_positions=self.expand_positions(),
        )  # fmt: skip
        states = torch.stack(trajectory.candidates[1:])  # (K, B, ...)
        chosen = torch.randint(steps, (start.shape[0],), device=start.device)
        return states[chosen, torch.arange(start.shape[0], device=start.device)]

    def energy_step(
        self, context: Tensor, start: Tensor, target: Tensor, conditioning: dict[str, Tensor] | None = None
    ) -> tuple[StepOutput, Descended | None]:
        """One step of ``train.objective`` on rows descended from ``start`` towards ``target``: the unrolled loss
        (over the descent's steps, plus the landscape terms), the equilibrium loss, or both; with the metrics the
        training loop logs. -> (the step's output, the descent it ran, None for a pure equilibrium training step)."""
        train = self.cfg.train
        terms: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        rows = None
        if train.objective != "equilibrium" or not self.training:
            rows = self.descend_rows(context, start, target, conditioning)
            terms["reconstruction"], loss_last = self.step_losses(rows.trajectory, rows.target)
            metrics["loss_last"] = loss_last.detach()
            metrics.update(self.descent_metrics(rows.trajectory))
            if self.training:
                terms.update(self.landscape_losses(rows, train))
        if train.objective != "unrolled" and self.training:
            terms["equilibrium"] = self.equilibrium_loss(context, start, target, conditioning)
        weights = {
            "reconstruction": 1.0,
            "stationarity": train.stationarity_weight,
            "rank": train.rank_weight,
            "equilibrium": 1.0 if train.objective == "equilibrium" else train.equilibrium_weight,
        }
        loss = sum(weights[name] * value for name, value in terms.items())
        metrics = {"loss": loss.detach(), **{f"loss_{name}": v.detach() for name, v in terms.items()}, **metrics}
        if rows is None:
            metrics["step_size"] = self.step_size().detach()
        elif rows.target.shape == rows.trajectory.final.shape:  # candidate-shaped targets: the error of the answer
            metrics["mse_last"] = F.mse_loss(rows.trajectory.final.detach().float(), rows.target)
        return StepOutput(loss, metrics), rows

    def landscape_losses(self, rows: Descended, train: TrainConfig) -> dict[str, Tensor]:
        """The terms that shape the energy landscape itself (weights in ``train``; off when 0):

        - ``stationarity``: the loss of the step the descent would take at the target, ``target - step * dE/dtarget``
          against the target (so the answer is a fixed point of the descent);
        - ``rank``: ``relu(E(target) + margin * |x - target|^2 / (2 s0) - E(x))`` for the descent's final candidate
          and a perturbed target (so lower energy means a smaller error: what stopping and best-of-N read), with s0
          the configured initial step size: ``|x - y|^2 / (2 s0)`` is the depth of the quadratic bowl one step of that
          size would cross from x to its bottom y, so ``margin`` is unit-free. (Scaling by the learned step size
          instead ran away, measured: a steeper energy shrinks the step, which raises the required gap, and so on.)
        Energies are per sample (summed over positions).
        """
        terms: dict[str, Tensor] = {}
        if not (train.stationarity_weight or train.rank_weight):
            return terms
        energy_fn, _ = self._energy_functions(rows.conditioning)
        target = rows.target.detach().requires_grad_(True)
        with torch.enable_grad():
            energy_target = energy_fn(rows.context, target)
            if train.stationarity_weight:
                (grad,) = torch.autograd.grad(energy_target.sum(), target, create_graph=True)
                moved = target - self.step_size() * grad
                terms["stationarity"] = self.loss(moved, rows.target)
            if train.rank_weight:
                final = rows.trajectory.final.detach()
                perturbed = rows.target + (final - rows.target).flatten(1).std(1).view(-1, *[1] * (final.dim() - 1)) * (
                    torch.randn_like(final)
                )
                hinges = []
                for negative in (final, perturbed.detach()):
                    gap = _per_sample(energy_fn(rows.context, negative)) - _per_sample(energy_target)
                    distance = ((negative - rows.target) ** 2).flatten(1).sum(1)
                    needed = train.rank_margin * distance / (2 * self.descent_cfg.step_size)
                    hinges.append(F.relu(needed - gap).mean())
                terms["rank"] = torch.stack(hinges).mean()
        return terms

    def descent_metrics(self, trajectory: Trajectory) -> dict[str, Tensor]:
        return {
            "energy_mean": trajectory.energies.mean(),
            "energy_abs_max": trajectory.energies.abs().max(),
            "grad_norm_mean": trajectory.grad_norms.mean(),
            "step_size": self.step_size().detach(),
        }

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """AdamW groups; the log step size learns at its own rate without weight decay."""
        log_step = self.step_size.log_value
        groups = weight_decay_groups(self, optim, skip=frozenset({id(log_step)}))
        if log_step.requires_grad:
            lr = optim.lr * self.descent_cfg.step_size_lr_multiplier
            groups.append({"params": [log_step], "weight_decay": 0.0, "lr": lr})
        return groups

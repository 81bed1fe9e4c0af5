"""Next-token prediction with the text EBT: descend every position's candidate (logits by default; see
``model.candidate_space``) from a stated start; cross-entropy of every step's candidate, read as logits, against the
next tokens, averaged over the steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.hub import HubModel, as_config
from ..core.objective import EnergyObjective, StepOutput
from .config import CandidateConfig, TextConfig
from .data import TextBatch
from .model import TextEBT


def start_candidates(model: TextEBT, context: Tensor, cfg: CandidateConfig, generator: torch.Generator | None = None):
    """(B, L) context -> (B, L, candidate_size) starting candidates of ``model``'s space: the uniform distribution
    (``start: zeros``; zero logits, 1/V, a zero embedding), or that plus Gaussian noise of ``start_std``.
    ``generator`` (CPU) makes the start reproducible; without it the global RNG draws (seeded by the train loop).
    The model's own guess (``start: guess``) is ``TextEBTObjective.start``'s."""
    if cfg.start == "guess":
        raise ValueError("candidate.start=guess is read off the model: use TextEBTObjective.start")
    uniform = model.uniform(tuple(context.shape), context.device)
    if cfg.start == "zeros":
        return uniform
    return uniform + (torch.randn(uniform.shape, generator=generator) * cfg.start_std).to(context.device)


def onto_simplex(candidate: Tensor) -> Tensor:
    """(..., V) -> (..., V): the Euclidean projection of every row onto the probability simplex (entries >= 0 that sum
    to 1): subtract the one threshold that makes the positive parts sum to 1, found from the sorted row, and clamp at 0.
    Piecewise linear, so a descent trains through it. What ``descent.clamp_candidate`` applies to a probability
    candidate after every step."""
    values = candidate.float()
    ranked = values.sort(dim=-1, descending=True).values
    excess = ranked.cumsum(dim=-1) - 1.0  # the sum of the k largest, minus 1
    counts = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
    kept = (ranked - excess / counts > 0).sum(dim=-1, keepdim=True)  # how many entries stay positive (>= 1)
    threshold = excess.gather(-1, kept - 1) / kept.to(values.dtype)
    return (values - threshold).clamp_min(0.0).to(candidate.dtype)


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, L, V), (B, L) -> (B, L) cross-entropy per token, in float32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)


class TextEBTObjective(EnergyObjective, HubModel):
    """The text EBT trained through its descent: the loss is the cross-entropy of every step's candidate logits
    (``train.loss_on_steps``: averaged over all steps, or the last one only); ``train.loss`` does not apply, and the
    image landscape terms (``train.stationarity_weight``, ``rank_weight``) are refused by ``TextConfig``."""

    def __init__(self, cfg: TextConfig) -> None:
        cfg = as_config(cfg)
        super().__init__(TextEBT(cfg.model, guess=cfg.candidate.start == "guess"), cfg)

    @property
    def guesses(self) -> bool:
        """Whether the descent starts from the model's own one-pass guess (``candidate.start: guess``: the model was
        built with its readout)."""
        return self.model.guesses

    def start(self, context: Tensor, generator: torch.Generator | None = None, memory: Tensor | None = None) -> Tensor:
        """(B, L) -> (B, L, candidate_size): where the descent starts (``candidate`` section of the config). The guess
        start reads the context's encoding: pass ``memory`` when it is at hand (else the context is encoded here)."""
        if self.guesses:
            return self.model.guess(self.model.encode_context(context) if memory is None else memory)
        return start_candidates(self.model, context, self.cfg.candidate, generator)

    def projection(self):
        """``descent.clamp_candidate`` keeps a probability candidate on the simplex (``config`` refuses it for the
        other spaces, which are unbounded)."""
        return onto_simplex if self.model.space == "probabilities" else None

    def candidate_target(self, target: Tensor) -> Tensor:
        """(B, L) next tokens -> (B, L, V) one-hot distributions: the point a probability candidate's descent should
        reach (the equilibrium objective; ``config`` allows it for probability candidates only)."""
        return F.one_hot(target, self.cfg.model.vocab_size).float()

    def field_loss(self, landed: Tensor, goal: Tensor) -> Tensor:
        """Squared distance per token between where a step from a probability candidate landed and where it should
        have (summed over the V probabilities, averaged over tokens)."""
        return (landed.float() - goal).pow(2).sum(-1).mean()

    def logits(self, candidate: Tensor) -> Tensor:
        """Candidates of the model's space (``model.candidate_space``) -> next-token logits (float32)."""
        return self.model.logits(candidate)

    def encode(self, context: Tensor) -> Tensor:
        """The real tokens' keys and values do not depend on the candidate: encoded once per descent, not per step
        (their graph is shared by the steps, so the gradients are those of encoding at every step). The descent
        encodes after replay, so replayed rows stay token ids (stored encodings would come from older weights); an
        encoding given in place of the ids (a guess-start training step encodes first) passes through."""
        return context if context.is_floating_point() else self.model.encode_context(context)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of candidates (B, L, candidate_size), read as logits, against the next tokens (B, L)."""
        return token_cross_entropy(self.logits(prediction), target).mean()

    def forward(self, batch: TextBatch) -> StepOutput:
        if not self.guesses:
            out, _ = self.energy_step(batch.context, self.start(batch.context), batch.targets)
        else:  # encode once: the guess and every descent step read the same encoding (and its graph)
            memory = self.encode(batch.context)
            guess = self.start(batch.context, memory=memory)
            # With replay the descent mixes stored rows in by their token ids and encodes after mixing (a stored
            # encoding would be detached and come from older weights); without, the guess and the descent share one.
            replaying = self.training and self.replay is not None
            out, _ = self.energy_step(batch.context if replaying else memory, guess, batch.targets)
            guess_loss = self.loss(guess, batch.targets)
            loss = out.loss + guess_loss
            out = StepOutput(loss, {**out.metrics, "loss": loss.detach(), "loss_guess": guess_loss.detach()})
        if "loss_last" in out.metrics:  # a pure equilibrium training step runs no descent
            out.metrics["perplexity_last"] = out.metrics["loss_last"].exp()
        return out

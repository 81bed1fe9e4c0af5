"""Scoring text models on fixed windows: perplexity per test-time configuration, energy as uncertainty, cost.

One descent of ``max_steps`` steps scores every smaller step count too (its trajectory holds every step's
candidate), and one best-of-N descent scores every N' <= N; each evaluation is one pass over the windows per
variant. Costs are counted per token: the context is encoded once per descent, then one descent step is one forward
and one backward pass of the candidate stream over the window (all positions at once), so a pass count is a
per-token count as well (``experiments.text.run`` turns them into FLOPs).

Bits per byte: the summed negative log-likelihood, in bits, of the predicted tokens of every window (positions
1..L of a window of L + 1 tokens; token 0 is context only and is not charged) divided by the number of UTF-8 bytes
those predicted tokens stand for (``predicted_bytes``: each token's exact bytes from the tokenizer, the end-of-text
token as one separator byte). Unlike perplexity it does not depend on the tokenizer, so it compares with general
compressors: ``compressor_rows`` compresses exactly those bytes, as one stream, with gzip, bz2 and xz.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.inference import Thinking
from ..core.progress import progress as progress_bar
from .baseline import TransformerPlusPlusObjective
from .objective import TextEBTObjective, token_cross_entropy
from .system2 import START_NOISE, Prediction, think


@dataclass(frozen=True)
class System2Settings:
    """The test-time configurations an evaluation measures."""

    max_steps: int = 8  # plain and stopped descents are scored at every step count 0..max_steps
    best_of: int = 4  # best-of-N is scored for N = 2..best_of (0 or 1: off)
    best_of_steps: int | None = None  # the step count of best-of-N descents (None: the trained count)
    start_noise: float = START_NOISE  # std of the other best-of-N starts' Gaussian logits (see system2.START_NOISE)
    langevin_noise: float = 0.0  # Langevin noise of a separate noisy descent (0: not measured)
    batch_size: int = 8  # windows per descent (memory: (K + 1) x N x batch x L x V logits are kept)
    seed: int = 0


@dataclass
class Scores:
    """Per-configuration token cross-entropy sums and counts; per-token (uncertainty, loss) pairs: the EBT's energy
    at its trained step count, or the baseline's predictive entropy."""

    totals: dict[tuple, list[float]]
    uncertainty: Tensor  # (T,) for every scored token
    losses: Tensor  # (T,) the matching cross-entropies

    def rows(self, n_bytes: int | None = None) -> list[dict]:
        """One row per configuration: method, steps, n_candidates, passes per token, perplexity, tokens; with
        ``n_bytes`` (the bytes of the scored tokens, ``predicted_bytes``) also bits per byte and that byte count."""
        out = []
        for (method, steps, n, forward, backward), (total, count) in self.totals.items():
            row = {"method": method, "steps": steps, "forward_passes": forward, "backward_passes": backward}
            if n > 1:
                row["n_candidates"] = n
            row.update(perplexity=float(torch.tensor(total / count).exp()), tokens=int(count))
            if n_bytes is not None:
                row.update(bits_per_byte=bits_per_byte(total, n_bytes), bytes=int(n_bytes))
            out.append(row)
        return out


def predicted_bytes(windows: Tensor, table: list[bytes]) -> bytes:
    """(W, L + 1) windows -> the bytes their predicted tokens stand for, window after window: tokens 1..L of each
    window (token 0 is only ever context). ``table``: each id's bytes (``TextTokenizer.token_bytes``)."""
    return b"".join(table[i] for i in windows[:, 1:].flatten().tolist())


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """A summed negative log-likelihood in nats over the bytes it predicted -> bits per byte."""
    if n_bytes <= 0:
        raise ValueError("bits per byte of no bytes")
    return nats / math.log(2) / n_bytes


# The reference compressors at their strongest settings; each output includes its container (gzip's 18-byte header
# and trailer, xz's stream header, index and footer, about 60 bytes), as a .gz/.bz2/.xz file of the text would.
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "xz": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def compressor_rows(data: bytes) -> list[dict]:
    """``data`` compressed as one stream by each of ``COMPRESSORS`` -> rows of method, bits per byte (compressed
    bits over ``len(data)``), bytes and compressed bytes. A compressor starts from nothing (no training data, unlike
    the models), so on a small input its container and its own learning weigh heavily."""
    if not data:
        raise ValueError("nothing to compress")
    rows = []
    for name, compress in COMPRESSORS.items():
        size = len(compress(data))
        rows.append(
            {"method": name, "bits_per_byte": size * 8 / len(data), "bytes": len(data), "compressed_bytes": size}
        )
    return rows


def _add(totals: dict, key: tuple, losses: Tensor) -> None:
    entry = totals.setdefault(key, [0.0, 0])
    entry[0] += float(losses.double().sum())
    entry[1] += losses.numel()


def _score_descent(
    totals, method: str, objective, context, targets, thinking: Thinking, seed: int
) -> tuple[Prediction, Tensor]:
    """Cross-entropy of every step count of one descent; -> the prediction and its (K + 1, B, L) losses."""
    prediction = think(objective, context, thinking, seed)
    steps = prediction.candidate_energies.shape[0] - 1
    losses = torch.stack([token_cross_entropy(prediction.select(k)[0], targets) for k in range(steps + 1)])
    stop = thinking.stop_when_energy_rises  # the energy check after the last step is one more forward pass
    for k in range(steps + 1):
        _add(totals, (method, k, 1, k + int(stop), k), losses[k])
    return prediction, losses


def score_ebt(
    objective: TextEBTObjective, windows: Tensor, settings: System2Settings, progress: bool = False
) -> Scores:
    """(W, L + 1) windows -> the EBT's scores: plain descent, stopping when the energy rises, Langevin noise (when
    asked) at every step count up to ``max_steps``, and best-of-N at the trained (or given) step count."""
    objective.eval()
    trained = objective.cfg.descent.num_steps
    totals: dict[tuple, list[float]] = {}
    energies, losses_at_trained = [], []
    chunks = windows.split(settings.batch_size)
    for i, chunk in enumerate(progress_bar(chunks, desc="text EBT", disable=not progress, unit="batch")):
        chunk = chunk.to(next(objective.parameters()).device)
        context, targets = chunk[:, :-1], chunk[:, 1:]
        seed = settings.seed + i
        plain, losses = _score_descent(totals, "ebt", objective, context, targets, Thinking(settings.max_steps), seed)
        step = min(trained, settings.max_steps)
        energies.append(plain.candidate_energies[step, 0].flatten().cpu())
        losses_at_trained.append(losses[step].flatten().cpu())
        stop = Thinking(settings.max_steps, stop_when_energy_rises=True)
        _score_descent(totals, "ebt_stop", objective, context, targets, stop, seed)
        if settings.langevin_noise > 0:
            noisy = Thinking(settings.max_steps, langevin_noise=settings.langevin_noise)
            _score_descent(totals, "ebt_langevin", objective, context, targets, noisy, seed)
        if settings.best_of > 1:
            _score_best_of(totals, objective, context, targets, settings, seed)
    return Scores(totals, torch.cat(energies), torch.cat(losses_at_trained))


def _score_best_of(totals, objective, context, targets, settings: System2Settings, seed: int) -> None:
    """Best-of-N' for every N' in 2..best_of from one descent of N starts (N' = the first N' starts)."""
    steps = objective.cfg.descent.num_steps if settings.best_of_steps is None else settings.best_of_steps
    thinking = Thinking(steps, n_candidates=settings.best_of, start_noise=settings.start_noise)
    prediction = think(objective, context, thinking, seed)
    for n in range(2, settings.best_of + 1):
        logits, _ = prediction.select(steps, n)
        # n descents of `steps` steps, plus the energy of each final candidate to choose by
        _add(totals, ("ebt_best_of_n", steps, n, n * (steps + 1), n * steps), token_cross_entropy(logits, targets))


def score_transformer(objective: TransformerPlusPlusObjective, windows: Tensor, batch_size: int = 8) -> Scores:
    """(W, L + 1) windows -> the baseline's scores (one forward pass); its uncertainty is the per-token predictive
    entropy, what a plain language model offers beside the EBT's energy."""
    objective.eval()
    totals: dict[tuple, list[float]] = {}
    entropies, losses = [], []
    device = next(objective.parameters()).device
    with torch.no_grad():
        for chunk in windows.split(batch_size):
            chunk = chunk.to(device)
            logits = objective.model(chunk[:, :-1]).float()
            loss = token_cross_entropy(logits, chunk[:, 1:])
            _add(totals, ("transformer", 0, 1, 1, 0), loss)
            log_probs = logits.log_softmax(-1)
            entropies.append(-(log_probs.exp() * log_probs).sum(-1).flatten().cpu())
            losses.append(loss.flatten().cpu())
    return Scores(totals, torch.cat(entropies), torch.cat(losses))


def correlation(x: Tensor, y: Tensor) -> dict[str, float]:
    """(T,), (T,) -> Pearson and Spearman correlation (NaN when either is constant or fewer than 2 tokens)."""
    from scipy import stats

    a, b = x.double().numpy(), y.double().numpy()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(stats.pearsonr(a, b)[0]), "spearman": float(stats.spearmanr(a, b)[0])}

"""The text workload's configuration: model sizes, corpus and tokenizer, the descent's starting candidate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.config import (
    ConfigError,
    DescentConfig,
    ExperimentConfig,
    OptimConfig,
    TransformerConfig,
    check,
    check_energy_model,
    check_transformer,
)

GPT2_VOCAB_SIZE = 50257  # GPT-2's BPE: 50,000 merges + 256 bytes + <|endoftext|>
TOKENIZERS = ("bpe", "gpt2")
CANDIDATE_STARTS = ("normal", "zeros", "guess")
CANDIDATE_SPACES = ("logits", "probabilities", "embedding")


@dataclass(frozen=True)
class TextModelConfig(TransformerConfig):
    """The causal trunk shared by the text EBT and its Transformer++ baseline (RMSNorm, SwiGLU, rotary positions).

    The SwiGLU hidden size is ``2/3 * mlp_ratio * width`` (rounded to a multiple of 8), so its three matrices hold as
    many weights as a GELU MLP of ``mlp_ratio``; both models use the same blocks, so their sizes match by design.
    """

    vocab_size: int = 4096  # must equal the tokenizer's: data.vocab_size for "bpe", 50257 for "gpt2"
    context_length: int = 128  # the longest window the model is trained on and may be given
    # EBT only: the candidate for token t + 1 also gets the embedding of real token t added to its input, so the token
    # it follows reaches it directly (as in the Transformer++), not only through attention to the real stream.
    candidate_token: bool = False
    # EBT only: what the descent moves (``text.model.TextEBT``): "logits" (V per token, softmaxed inside the model and
    # mixed into a token embedding; the original work's), "probabilities" (V per token, mixed linearly; the
    # cross-entropy reads them clamped and renormalised) or "embedding" (D per token, fed to the model as it is; the
    # cross-entropy reads it through an RMSNorm and the tied token embedding, as the Transformer++ reads its logits).
    candidate_space: str = "logits"


@dataclass(frozen=True)
class TextDataConfig:
    # "sotu": the State of the Union addresses (scripts/fetch-data.sh), held out by year (see text.corpora); a folder
    # of .txt files; or a folder of memory-mapped tokens written by ``ebt-vision prepare-text`` (text.prepare).
    corpus: str = "sotu"
    tokenizer: str = "bpe"  # "bpe": trained on the training split (tokenizers); "gpt2": GPT-2's BPE (tiktoken)
    vocab_size: int = 4096  # size of the trained BPE (a few thousand keeps the candidate logits affordable on CPU)
    seq_len: int = 128  # tokens predicted per window; windows hold seq_len + 1 tokens
    batch_size: int = 16


@dataclass(frozen=True)
class CandidateConfig:
    """Where the descent starts: next-token logits at every position.

    "zeros" (the uniform distribution) by default: measured at tiny scale, a tiny EBT started from Gaussian logits
    of std 1 did not fit one batch in 60 steps (its first step must undo noise it only sees through the mixed
    embedding), while from zeros it fit faster than the same-size Transformer++. Best-of-N draws its other starts
    around this one (``text.system2``).
    """

    # "zeros": the uniform distribution; "normal": Gaussian logits of std start_std; "guess": the model's own one-pass
    # guess, read off the real stream's last block through an RMSNorm and the tied token embedding as the
    # Transformer++ reads its logits (the real stream is computed anyway; the readout adds the norm's D weights),
    # trained by its own cross-entropy beside the descent's (reports/text.md).
    start: str = "zeros"
    start_std: float = 0.0


# The text workload's own defaults of the shared sections. Energies are summed per token and the descent takes the
# gradient of the sum, so the step size acts per token whatever the sequence length. dE/dlogit of a token carries
# that token's probability (the softmax Jacobian), about 1/V near the uniform start, so the step size is of the
# order of the vocabulary size V (it is learnable; measured on CPU at V = 1024, it settled near 0.8 V from 1000 and
# from 5000, and starting at 5000 fit worse). Two randomised steps with a jittered step size, as trap 7 of
# docs/design.md asks for if thinking longer is to help.
TEXT_ENERGIES = ("linear", "residual")
TEXT_DESCENT = dict(num_steps=2, min_steps=1, step_size=3000.0, step_size_jitter=2.0)
TEXT_OPTIM = dict(lr=1e-3, warmup_steps=100)


@dataclass(frozen=True)
class TextConfig(ExperimentConfig):
    name: str = "ebt-text"
    task: str = "text"
    model: TextModelConfig = field(default_factory=TextModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    candidate: CandidateConfig = field(default_factory=CandidateConfig)
    descent: DescentConfig = field(default_factory=lambda: DescentConfig(**TEXT_DESCENT))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(**TEXT_OPTIM))

    @classmethod
    def expand(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A partial ``descent`` or ``optim`` section is merged onto the text defaults, not the core ones."""
        merged = dict(values)
        for section, defaults in (("descent", TEXT_DESCENT), ("optim", TEXT_OPTIM)):
            given = merged.get(section) or {}
            if not isinstance(given, dict):
                raise ConfigError(f"{section}: expected a mapping, got {type(given).__name__}")
            merged[section] = {**defaults, **given}
        return merged

    def validate(self) -> None:
        super().validate()
        m, data, cand = self.model, self.data, self.candidate
        check_transformer(m)
        check(
            m.energy in TEXT_ENERGIES,
            f"model.energy={m.energy!r}: the text EBT's energies are {TEXT_ENERGIES} (ebt_vision.text.model)",
        )
        check_energy_model(m, self.descent)
        check(
            m.candidate_space in CANDIDATE_SPACES,
            f"model.candidate_space must be one of {CANDIDATE_SPACES}, got {m.candidate_space!r}",
        )
        check(
            not self.descent.clamp_candidate or m.candidate_space == "probabilities",
            "descent.clamp_candidate keeps a probability candidate on the simplex; logits and embeddings have no range "
            f"to clamp to (model.candidate_space={m.candidate_space!r})",
        )
        check(
            m.energy != "residual" or m.candidate_space == "logits",
            "model.energy=residual compares the candidate with proposed logits: it needs "
            f"model.candidate_space=logits, not {m.candidate_space!r}",
        )
        check(
            self.train.objective == "unrolled" or m.candidate_space == "probabilities",
            f"train.objective={self.train.objective!r} needs a candidate-shaped target: text has one for probability "
            f"candidates (the next token, one-hot), not for model.candidate_space={m.candidate_space!r}",
        )
        check(
            not (self.train.stationarity_weight or self.train.rank_weight),
            "train.stationarity_weight and train.rank_weight are not defined for text (the targets are token ids, "
            "not candidate logits); leave them at 0",
        )
        check(
            (m.width // m.heads) % 2 == 0,
            f"model.width / model.heads = {m.width // m.heads} must be even for rotary positions",
        )
        check(m.context_length >= 2, f"model.context_length must be >= 2, got {m.context_length}")
        check(data.tokenizer in TOKENIZERS, f"data.tokenizer must be one of {TOKENIZERS}, got {data.tokenizer!r}")
        check(bool(data.corpus), "data.corpus must be 'sotu', a folder of .txt files or a prepared token folder")
        check(data.vocab_size >= 260, f"data.vocab_size must be >= 260 (256 bytes + specials), got {data.vocab_size}")
        wanted = data.vocab_size if data.tokenizer == "bpe" else GPT2_VOCAB_SIZE
        check(
            m.vocab_size == wanted,
            f"model.vocab_size ({m.vocab_size}) must equal the tokenizer's vocabulary ({wanted} for "
            f"data.tokenizer={data.tokenizer}" + (", i.e. data.vocab_size)" if data.tokenizer == "bpe" else ")"),
        )
        length = m.context_length
        check(2 <= data.seq_len <= length, f"data.seq_len must be in [2, model.context_length = {length}], got "
                                           f"{data.seq_len}")  # fmt: skip
        check(data.batch_size >= 1, f"data.batch_size must be >= 1, got {data.batch_size}")
        check(cand.start in CANDIDATE_STARTS, f"candidate.start must be one of {CANDIDATE_STARTS}, got {cand.start!r}")
        check(cand.start_std >= 0, f"candidate.start_std must be >= 0, got {cand.start_std}")
        check(cand.start != "normal" or cand.start_std > 0, "candidate.start=normal needs candidate.start_std > 0")


def swiglu_hidden(cfg: TextModelConfig) -> int:
    """SwiGLU hidden size: 2/3 of the GELU MLP's (three matrices instead of two), rounded up to a multiple of 8."""
    hidden = int(2 * cfg.mlp_ratio * cfg.width / 3)
    return hidden + (-hidden % 8)

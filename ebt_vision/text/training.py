"""Training a text model: corpus, tokenizer, token windows, objective and the one training loop wired together. What
``ebt-vision train`` runs for ``task: text`` (registered in ``core.config.TASKS``)."""

from __future__ import annotations

from pathlib import Path

from ..core import distributed
from ..core.errors import UserError
from ..core.train import TrainResult, seed_everything, train
from .baseline import TransformerPlusPlusObjective
from .config import TextConfig
from .corpora import Document, corpus_splits
from .data import WindowSampler
from .objective import TextEBTObjective
from .prepare import is_prepared, open_tokens, prepared_tokenizer, prepared_tokens, token_dtype, write_tokens
from .tokenizer import TOKENIZER_FILE, BPETokenizer, TextTokenizer, build_tokenizer

MODELS = ("ebt", "transformer")
TOKENS_FOLDER = "tokens"  # the training split tokenised into a run folder (a corpus not prepared beforehand)


def prepare_tokenizer(cfg: TextConfig, folder: str | Path, training: list[Document]) -> TextTokenizer:
    """The tokenizer saved in ``folder`` if there is one (a resumed or shared run keeps its own), else one built
    from the training split and saved there."""
    folder = Path(folder)
    if cfg.data.tokenizer == "bpe" and (folder / TOKENIZER_FILE).is_file():
        tokenizer = BPETokenizer.load(folder)
    elif is_prepared(cfg.data.corpus):  # the tokenizer the corpus was encoded with
        tokenizer = prepared_tokenizer(cfg.data.corpus)
        if tokenizer.kind != cfg.data.tokenizer:
            raise UserError(f"{cfg.data.corpus} was encoded with the {tokenizer.kind} tokenizer, the config asks for "
                            f"data.tokenizer={cfg.data.tokenizer}")  # fmt: skip
        tokenizer.save(folder)
    else:
        tokenizer = build_tokenizer(cfg.data, training)
        tokenizer.save(folder)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise UserError(f"the tokenizer in {folder} has {tokenizer.vocab_size} tokens, more than model.vocab_size "
                        f"= {cfg.model.vocab_size}; use another run folder or matching sizes")  # fmt: skip
    return tokenizer


def train_model(
    cfg: TextConfig,
    run_dir: str | Path,
    model: str = "ebt",
    resume: bool = False,
    progress: bool = True,
    tokenizer: TextTokenizer | None = None,
    splits: dict[str, list[Document]] | None = None,
) -> TrainResult:
    """Train the text EBT (``model="ebt"``) or the Transformer++ (``"transformer"``) on the training split of
    ``cfg.data.corpus``, resumable; the run folder holds the weights, the config and the tokenizer.

    ``tokenizer`` (shared by models that are compared) is saved into ``run_dir`` unless it holds one already;
    without it, the run folder's own tokenizer is used or trained. A corpus prepared by ``ebt-vision prepare-text``
    is read through its memory-mapped ``train.bin``; any other corpus is tokenised into ``run_dir/tokens/train.bin``
    first and read the same way. Windows come from a ``WindowSampler`` seeded with ``train.seed``: two models with
    the same seed, batch and length train on the same tokens.
    """
    if model not in MODELS:
        raise UserError(f"text model must be one of {MODELS}, got {model!r}")
    run_dir = Path(run_dir)
    prepared = is_prepared(cfg.data.corpus)
    if not prepared:
        splits = splits or corpus_splits(cfg.data.corpus)
    if tokenizer is None:
        tokenizer = prepare_tokenizer(cfg, run_dir, [] if prepared else splits["train"])
    elif not (run_dir / TOKENIZER_FILE).is_file():
        tokenizer.save(run_dir)
    seed_everything(cfg.train.seed)
    objective = TextEBTObjective(cfg) if model == "ebt" else TransformerPlusPlusObjective(cfg)
    ctx = distributed.current()  # under torchrun each process keeps its slice of every global batch
    if prepared:
        stream = prepared_tokens(cfg.data.corpus, "train")
    else:
        path = run_dir / TOKENS_FOLDER / "train.bin"
        write_tokens(tokenizer, splits["train"], path)
        stream = open_tokens(path, token_dtype(tokenizer.vocab_size))
    data = cfg.data
    sampler = WindowSampler(stream, data.seq_len, data.batch_size, cfg.train.seed, ctx.rank, ctx.world_size)
    return train(objective, iter(sampler), cfg, run_dir, resume=resume, sampler_state=sampler, progress=progress)

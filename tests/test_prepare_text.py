"""ebt-vision prepare-text: a corpus tokenised once into memory-mapped token files; training windows read from the
memory map are the windows of the in-memory stream; the web-text config's tiny twin trains on a prepared corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ebt_vision.cli import main
from ebt_vision.core.config import flatten, load_config, to_dict
from ebt_vision.core.errors import UserError
from ebt_vision.text.corpora import folder_documents, split_folder
from ebt_vision.text.data import WindowSampler, evaluation_windows, token_stream
from ebt_vision.text.prepare import (
    PrepareOptions,
    is_prepared,
    prepare_corpus,
    prepared_tokenizer,
    prepared_tokens,
    token_dtype,
)
from ebt_vision.text.training import TOKENS_FOLDER, train_model

REPO = Path(__file__).resolve().parents[1]
WORDS = "the union state congress people nation law year war peace trade work school money freedom".split()


def corpus(root: Path, documents: int = 12) -> Path:
    """``documents`` .txt files of seeded pseudo-sentences."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for number in range(documents):
        sentences = [" ".join(rng.choice(WORDS, 8)).capitalize() + "." for _ in range(40)]
        (root / f"doc{number:02d}.txt").write_text(" ".join(sentences), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("text")
    source = corpus(folder / "corpus")
    assert main(["prepare-text", str(source), "-o", str(folder / "tokens"), "--vocab-size", "300"]) == 0
    return source, folder / "tokens"


def test_prepared_tokens_are_the_in_memory_token_streams(prepared):
    source, tokens = prepared
    meta = json.loads((tokens / "corpus.json").read_text())
    assert is_prepared(str(tokens)) and meta["dtype"] == "uint16" and meta["documents"]["validation"] == 1
    tokenizer = prepared_tokenizer(tokens)
    splits = split_folder(folder_documents(source))
    for split in ("train", "validation", "test"):
        memmap = prepared_tokens(tokens, split)
        assert isinstance(memmap, np.memmap) and meta["tokens"][split] == len(memmap)
        assert torch.equal(torch.from_numpy(memmap.astype(np.int64)), token_stream(tokenizer, splits[split]))
    stream = token_stream(tokenizer, splits["train"])
    from_memory = WindowSampler(stream, 16, 4, seed=3)
    from_disk = WindowSampler(prepared_tokens(tokens, "train"), 16, 4, seed=3)
    for _ in range(3):
        assert torch.equal(from_memory.sample().tokens, from_disk.sample().tokens)
    assert torch.equal(evaluation_windows(prepared_tokens(tokens, "test"), 16, 5), evaluation_windows(
        token_stream(tokenizer, splits["test"]), 16, 5))  # fmt: skip


def test_jsonl_documents_large_vocabularies_and_bad_inputs(tmp_path):
    lines = [json.dumps({"text": f"document number {i} " + " ".join(WORDS)}) for i in range(20)]
    (tmp_path / "web.jsonl").write_text("\n".join(lines) + "\n")
    meta = prepare_corpus([str(tmp_path / "web.jsonl")], tmp_path / "out", PrepareOptions(vocab_size=280))
    assert meta["documents"] == {"train": 16, "validation": 2, "test": 2}  # document i % 10 == 3 / 7 held out
    assert token_dtype(50257) == np.uint16 and token_dtype(100_000) == np.uint32
    (tmp_path / "bad.jsonl").write_text('{"title": "no text"}\n')
    with pytest.raises(UserError, match="'text'"):
        prepare_corpus([str(tmp_path / "bad.jsonl")], tmp_path / "bad", PrepareOptions(vocab_size=280))
    with pytest.raises(UserError, match="no such corpus"):
        prepare_corpus([str(tmp_path / "missing")], tmp_path / "none")


def test_the_webtext_config_and_its_tiny_twin_train_from_a_memory_map(prepared, tmp_path):
    big, tiny = load_config(REPO / "configs/webtext.yaml"), load_config(REPO / "configs/webtext-tiny.yaml")
    differ = {k for k, v in flatten(to_dict(big)).items() if flatten(to_dict(tiny))[k] != v}
    assert differ <= {"name", "model.width", "model.depth", "model.heads", "model.vocab_size", "model.context_length",
                      "data.tokenizer", "data.vocab_size", "data.seq_len", "data.batch_size", "descent.step_size",
                      "optim.warmup_steps", "train.steps", "train.log_every", "train.checkpoint_every"}  # fmt: skip
    cfg = load_config(REPO / "configs/webtext-tiny.yaml", [f"data.corpus={prepared[1]}"])
    result = train_model(cfg, tmp_path / "run", progress=False)
    assert result.step == 3 and (tmp_path / "run" / "tokenizer.json").is_file()
    assert not (tmp_path / "run" / TOKENS_FOLDER).exists()  # read from the prepared corpus, not copied
    longer = load_config(REPO / "configs/webtext-tiny.yaml", [f"data.corpus={prepared[1]}", "train.steps=4"])
    assert train_model(longer, tmp_path / "run", resume=True, progress=False).step == 4


def test_a_corpus_that_was_not_prepared_is_tokenised_into_the_run_folder(prepared, tmp_path):
    cfg = load_config(REPO / "configs/webtext-tiny.yaml", [f"data.corpus={prepared[0]}"])
    train_model(cfg, tmp_path / "run", progress=False)
    written = np.memmap(tmp_path / "run" / TOKENS_FOLDER / "train.bin", dtype=np.uint16, mode="r")
    assert np.array_equal(written, prepared_tokens(prepared[1], "train"))  # the same BPE, the same tokens

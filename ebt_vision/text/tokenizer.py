"""Tokenizers, offline: a small byte-level BPE trained on the training split (``tokenizers``), or GPT-2's BPE
(``tiktoken`` with the ``gpt2.tiktoken`` ranks that ``scripts/fetch-data.sh`` takes from the openai-whisper sdist).

Both are byte-level, so any text round-trips exactly, and every token stands for a fixed byte string
(``token_bytes``: exact even for a token holding part of a UTF-8 character, which bits per byte are counted from).
The trained BPE is saved as ``tokenizer.json`` (the Hugging
Face ``tokenizers`` format) beside the weights, so a checkpoint folder carries its own tokenizer. The reports use
the trained BPE (``data.tokenizer: bpe``), the default: its few-thousand-token vocabulary keeps the candidate
logits, which the EBT descends at every position, affordable on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from ..core.errors import UserError
from ..core.paths import data_root
from .config import GPT2_VOCAB_SIZE, TextDataConfig
from .corpora import FETCH_HINT, Document

END_OF_TEXT = "<|endoftext|>"  # separates documents in a token stream
TOKENIZER_FILE = "tokenizer.json"
# The bytes the end-of-text token stands for when bytes are counted (bits per byte, compressor references): one
# separator byte (ASCII record separator), not the 13 characters of its name, which are a marker rather than text.
SEPARATOR_BYTES = b"\x1e"
GPT2_RANKS = "pypi/gpt2.tiktoken"
# GPT-2's pre-tokenisation: contractions, letters, digits and other symbols, each with an optional leading space.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class TokenizerError(UserError):
    """A tokenizer that cannot be trained, found or loaded."""


class TextTokenizer(Protocol):
    """What the text workload needs of a tokenizer."""

    kind: str  # "bpe" | "gpt2"
    vocab_size: int
    end_of_text: int  # the id separating documents

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, folder: str | Path) -> None: ...

    def token_bytes(self) -> list[bytes]: ...


def token_texts(tokenizer: TextTokenizer, ids: Iterable[int]) -> list[str]:
    """Each token's own text (for colouring tokens); a token holding part of a UTF-8 character shows U+FFFD."""
    return [tokenizer.decode([i]) for i in ids]


def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE's stand-in character for each byte -> that byte: bytes that print as themselves ('!' to
    '~', '\u00a1' to '\u00ac', '\u00ae' to '\u00ff') keep their code point, the other 68 (controls, space, ...) take
    the code points 256, 257, ... in byte order, so every token's string is printable."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    alphabet, spare = {}, 256
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(spare)] = byte
            spare += 1
    return alphabet


class BPETokenizer:
    """A byte-level BPE from the ``tokenizers`` library."""

    kind = "bpe"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.end_of_text = tokenizer.token_to_id(END_OF_TEXT)
        if self.end_of_text is None:
            raise TokenizerError(f"the tokenizer has no {END_OF_TEXT} token; was it trained by ebt-vision?")

    @classmethod
    def train(cls, documents: list[Document], vocab_size: int) -> BPETokenizer:
        """Train on ``documents`` (the training split only) up to ``vocab_size`` tokens, bytes and specials
        included; a small corpus may stop earlier, when no pair is left to merge."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if not any(doc.text for doc in documents):
            raise TokenizerError("cannot train a tokenizer on an empty training split")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text can be encoded
            show_progress=False,
        )
        tokenizer.train_from_iterator((doc.text for doc in documents), trainer, length=len(documents))
        return cls(tokenizer)

    @classmethod
    def load(cls, folder: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"no {TOKENIZER_FILE} in {folder}: the trained BPE is saved beside the weights")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as error:  # the Rust library raises plain Exceptions for malformed files
            raise TokenizerError(f"{path} is not a readable tokenizer ({error})") from None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self) -> list[bytes]:
        """Every id's bytes (``SEPARATOR_BYTES`` for the end-of-text token), read from the vocabulary's byte-level
        strings: exact per token, where decoding one token alone turns a partial UTF-8 character into U+FFFD."""
        alphabet, table = byte_level_alphabet(), [b""] * self.vocab_size
        for piece, index in self.tokenizer.get_vocab(with_added_tokens=True).items():
            if index == self.end_of_text:
                table[index] = SEPARATOR_BYTES
            elif all(char in alphabet for char in piece):
                table[index] = bytes(alphabet[char] for char in piece)
            else:
                raise TokenizerError(f"token {index} ({piece!r}) is not byte-level; was it trained by ebt-vision?")
        return table

    def save(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(Path(folder) / TOKENIZER_FILE))


class GPT2Tokenizer:
    """GPT-2's BPE through ``tiktoken``, built from the local ranks file (nothing is downloaded)."""

    kind = "gpt2"

    def __init__(self, ranks: Path | None = None) -> None:
        ranks = ranks or data_root() / GPT2_RANKS
        try:
            import tiktoken
            import tiktoken.load
        except ImportError:
            raise TokenizerError("data.tokenizer=gpt2 needs the tiktoken package (pip install tiktoken)") from None
        if not ranks.is_file():
            raise TokenizerError(f"GPT-2's BPE ranks not found at {ranks}; {FETCH_HINT}")
        mergeable = tiktoken.load.load_tiktoken_bpe(str(ranks))
        self.encoding = tiktoken.Encoding(
            name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=mergeable, special_tokens={END_OF_TEXT: len(mergeable)}
        )
        self.vocab_size = self.encoding.n_vocab
        self.end_of_text = len(mergeable)
        if self.vocab_size != GPT2_VOCAB_SIZE:
            raise TokenizerError(f"{ranks} holds {len(mergeable)} ranks; GPT-2's BPE has {GPT2_VOCAB_SIZE - 1}")

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, disallowed_special=())  # "<|endoftext|>" in a text is just text

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_batch(texts, disallowed_special=())

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def token_bytes(self) -> list[bytes]:
        """Every id's bytes (``SEPARATOR_BYTES`` for the end-of-text token)."""
        table = [self.encoding.decode_single_token_bytes(i) for i in range(self.end_of_text)]
        return [*table, SEPARATOR_BYTES]

    def save(self, folder: str | Path) -> None:
        """Nothing to save: the ranks are fixed and found again through ``data_root()``."""


def build_tokenizer(cfg: TextDataConfig, training: list[Document]) -> TextTokenizer:
    """The configured tokenizer; the BPE is trained on ``training`` (the training split, never a held-out one)."""
    if cfg.tokenizer == "gpt2":
        return GPT2Tokenizer()
    return BPETokenizer.train(training, cfg.vocab_size)


def load_tokenizer(folder: str | Path, cfg: TextDataConfig) -> TextTokenizer:
    """The tokenizer a model in ``folder`` was trained with: its saved BPE, or GPT-2's."""
    return GPT2Tokenizer() if cfg.tokenizer == "gpt2" else BPETokenizer.load(folder)

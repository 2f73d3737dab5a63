"""Character-level corpora: Tiny Shakespeare (downloaded once, verified) or any UTF-8 text file.

Batches follow the lecture: random offsets into one long token stream, y = x shifted by one.
They are gathered with one indexing op (no Python loop) from a seeded `torch.Generator`, whose
state a checkpoint saves so a resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from nanogpt.config import TINY_SHAKESPEARE, TINY_SHAKESPEARE_SHA256

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
LOCAL_COPY_ENV = "NANOGPT_TINYSHAKESPEARE"  # path to an existing copy, for offline machines
CACHE_ENV = "NANOGPT_CACHE"
TRAIN_FRACTION = 0.9


class DataError(Exception):
    """The corpus cannot be used; the message names the path or URL and the fix."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "nanogpt-ablations"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(path: Path, what: str, fix: str) -> Path:
    digest = sha256_of(path)
    if digest != TINY_SHAKESPEARE_SHA256:
        raise DataError(
            f"{what} {path} is not Tiny Shakespeare (sha256 {digest[:12]}… != "
            f"{TINY_SHAKESPEARE_SHA256[:12]}…, truncated or another file?); {fix}"
        )
    return path


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            out.write(response.read())
        os.replace(tmp, dest)  # atomic: a half download never sits at dest
    except (urllib.error.URLError, OSError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(
            f"cannot download Tiny Shakespeare from {url} ({e}). On an offline machine, copy "
            f"input.txt there by hand and pass --data PATH or set {LOCAL_COPY_ENV}=PATH."
        ) from e


def tiny_shakespeare_path() -> Path:
    """A verified local copy: $NANOGPT_TINYSHAKESPEARE, else the cache, else downloaded into the
    cache."""
    local = os.environ.get(LOCAL_COPY_ENV)
    if local:
        path = Path(local)
        if not path.is_file():
            raise DataError(f"{LOCAL_COPY_ENV}={local} does not exist; point it at Tiny "
                            "Shakespeare's input.txt")
        # The user's own file: never advise deleting it, only pointing elsewhere.
        return _verified(path, f"the {LOCAL_COPY_ENV} file",
                         f"point {LOCAL_COPY_ENV} at a correct copy of "
                         "input.txt, or unset it to use the cached download")
    cached = cache_dir() / TINY_SHAKESPEARE / "input.txt"
    if not cached.exists():
        _download(TINY_SHAKESPEARE_URL, cached)
    return _verified(cached, "cached file", "delete it and run again to re-download, or point "
                                            f"{LOCAL_COPY_ENV} "
                     "at a good copy")


def read_corpus(data: str) -> tuple[str, str]:
    """Text and sha256 of the corpus named by `data`: 'tinyshakespeare' or a path to a UTF-8 file.

    A byte-order mark some editors put first is no text (else it would be a vocabulary character):
    the text is decoded without it, and its checksum is the text's, so a copy saved with and one
    without a mark are one corpus (for any other file, the checksum is the file's own).
    """
    path = tiny_shakespeare_path() if data == TINY_SHAKESPEARE else Path(data)
    if not path.is_file():
        raise DataError(f"corpus {path} does not exist or is not a file; pass --data PATH to a "
                        "UTF-8 text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read corpus {path} ({e.strerror}); check that it is a readable "
                        "file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"corpus {path} is not UTF-8 text (byte {e.start}: {e.reason}); convert it, e.g. "
            f"`iconv -f latin1 -t utf-8`"
        ) from e
    if len(set(text)) < 2:
        raise DataError(f"corpus {path} is empty or has fewer than 2 distinct characters; use a "
                        "real text file")
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CharTokenizer:
    chars: str  # the vocabulary, sorted; token i is chars[i]

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = {c: i for i, c in enumerate(self.chars)}
        return [index[c] for c in text]

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.chars[t] for t in tokens)

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars})

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        return cls(json.loads(text)["chars"])


@dataclass(frozen=True)
class Corpus:
    tokenizer: CharTokenizer
    train: torch.Tensor  # int64 token ids
    val: torch.Tensor
    sha256: str

    @classmethod
    def load(cls, data: str) -> Corpus:
        text, digest = read_corpus(data)
        tokenizer = CharTokenizer.from_text(text)
        ids = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)
        # Map code points to token ids with one lookup table instead of a Python loop.
        lut = torch.zeros(max(map(ord, tokenizer.chars)) + 1, dtype=torch.int64)
        lut[torch.tensor([ord(c) for c in tokenizer.chars])] = torch.arange(tokenizer.vocab_size)
        tokens = lut[ids.long()]
        n = int(TRAIN_FRACTION * len(tokens))
        return cls(tokenizer, tokens[:n], tokens[n:], digest)


class Batches:
    """Random (x, y) blocks from one split, drawn from a generator whose state can be saved.

    In data-parallel training every rank holds the same generator and draws the same global
    batch, then keeps only its `shard` (rank, world size) of the rows: N ranks together train
    on exactly the batch one process would, so the run's numbers do not depend on N.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, seed: int,
                 device: str = "cpu", shard: tuple[int, int] = (0, 1)):
        if len(tokens) <= block_size:
            raise ValueError(f"split of {len(tokens)} tokens is too short for block_size "
                             f"{block_size}")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.device = torch.device(device)
        self.rank, self.world_size = shard
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(block_size + 1)

    def next(self, n_batches: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """n_batches consecutive batches stacked into one (n_batches * B / world size, T) pair.

        One draw of n * B starts equals n draws of B (the generator is consumed in order), so
        evaluating many batches in one forward sees the very batches a loop would.
        """
        return self.gather(self.draw(n_batches))

    def draw(self, n_batches: int = 1) -> torch.Tensor:
        """The start offsets of the next n_batches batches (this rank's rows), advancing the
        generator."""
        n_rows = n_batches * self.batch_size
        starts = torch.randint(len(self.tokens) - self.block_size, (n_rows,),
                               generator=self.generator)
        return starts.tensor_split(self.world_size)[self.rank]

    def gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for these start offsets: one gather for any number of rows (an ensemble's members'
        at once)."""
        window = self.tokens[starts[:, None] + self._offsets]  # (rows, T+1)
        if self.device.type == "cuda":
            window = window.pin_memory().to(self.device, non_blocking=True)
        return window[:, :-1], window[:, 1:]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def restore(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

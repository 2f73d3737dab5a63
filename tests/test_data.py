"""The corpus pipeline: the real Tiny Shakespeare, bad corpora, and seeded, restorable batches."""

from __future__ import annotations

import hashlib

import pytest
import torch

from nanogpt import data
from nanogpt.data import Batches, CharTokenizer, Corpus, DataError
from tests.conftest import run_module


def test_real_tiny_shakespeare_checksum_vocab_and_split(shakespeare):
    assert hashlib.sha256(shakespeare.read_bytes()).hexdigest() == data.TINY_SHAKESPEARE_SHA256
    corpus = Corpus.load(data.TINY_SHAKESPEARE)
    assert corpus.tokenizer.vocab_size == 65
    assert (len(corpus.train), len(corpus.val)) == (1_003_854, 111_540)
    text = shakespeare.read_text(encoding="utf-8")
    assert corpus.tokenizer.decode(corpus.train[:200].tolist()) == text[:200]
    assert corpus.tokenizer.decode(corpus.val[-50:].tolist()) == text[-50:]


def test_tokenizer_round_trips_through_json():
    tok = CharTokenizer.from_text("hello, world\n")
    again = CharTokenizer.from_json(tok.to_json())
    assert again == tok and again.decode(again.encode("low word")) == "low word"


def test_any_utf8_file_is_a_corpus(tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    text = tiny_corpus.read_text(encoding="utf-8")
    assert corpus.tokenizer.chars == "".join(sorted(set(text)))
    assert len(corpus.train) + len(corpus.val) == len(text)


@pytest.mark.reliability("bad input", "a corpus saved with a UTF-8 byte-order mark")
def test_a_byte_order_mark_is_no_character_of_the_corpus(tiny_corpus, tmp_path):
    """A BOM-first copy has the vocabulary and checksum of the file without it (the BOM was a
    vocabulary character, and another corpus)."""
    marked = tmp_path / "marked.txt"
    marked.write_bytes(b"\xef\xbb\xbf" + tiny_corpus.read_bytes())
    with_mark, without = Corpus.load(str(marked)), Corpus.load(str(tiny_corpus))
    assert "\ufeff" not in with_mark.tokenizer.chars
    assert (with_mark.tokenizer, with_mark.sha256) == (without.tokenizer, without.sha256)
    assert torch.equal(with_mark.train, without.train)


@pytest.mark.reliability("bad input", "corpus files: empty, one character, not UTF-8")
@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"aaaa", "fewer than 2"), ("caf\u00e9 ol\u00e9".encode("latin-1"),
                                                 "not UTF-8")],
)
def test_unusable_corpus_files_are_refused(tmp_path, content, message):
    """DataError naming the file and the fix."""
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        Corpus.load(str(path))
    assert str(path) in str(err.value)


@pytest.mark.reliability("bad input", "corpus file missing")
def test_missing_corpus_names_the_path(tmp_path):
    """DataError naming the path."""
    with pytest.raises(DataError, match="does not exist"):
        Corpus.load(str(tmp_path / "nope.txt"))


@pytest.mark.reliability("bad input", "Tiny Shakespeare copy truncated (wrong sha256)")
def test_local_copy_with_wrong_checksum_is_refused(tmp_path, monkeypatch, shakespeare):
    """Refused with the path, the checksum mismatch and the env var to fix it; never other data."""
    truncated = tmp_path / "input.txt"
    truncated.write_bytes(shakespeare.read_bytes()[:-100])
    monkeypatch.setenv(data.LOCAL_COPY_ENV, str(truncated))
    with pytest.raises(DataError, match="not Tiny Shakespeare") as err:
        Corpus.load(data.TINY_SHAKESPEARE)
    assert str(truncated) in str(err.value) and data.LOCAL_COPY_ENV in str(err.value)


@pytest.mark.reliability("fault", "damaged dataset cache")
def test_damaged_cache_is_detected(tmp_path, monkeypatch):
    """The cached file fails its checksum and is reported by path."""
    monkeypatch.delenv(data.LOCAL_COPY_ENV)
    cached = tmp_path / "cache" / data.TINY_SHAKESPEARE / "input.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("First Citizen:\nBefore we proceed", encoding="utf-8")
    with pytest.raises(DataError, match="cached file .* is not Tiny Shakespeare"):
        Corpus.load(data.TINY_SHAKESPEARE)


@pytest.mark.reliability("fault", "no network and no local copy of the dataset")
def test_no_network_and_no_local_copy_says_how_to_fix(monkeypatch):
    """Names the URL, --data and the env var; no half download left in the cache."""
    monkeypatch.delenv(data.LOCAL_COPY_ENV)
    # A closed local port: the download fails at once, without touching the internet.
    monkeypatch.setattr(data, "TINY_SHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")
    with pytest.raises(DataError, match="cannot download") as err:
        Corpus.load(data.TINY_SHAKESPEARE)
    assert "--data PATH" in str(err.value) and data.LOCAL_COPY_ENV in str(err.value)
    assert not any((data.cache_dir() / data.TINY_SHAKESPEARE).glob("*"))  # no half download left


def test_batches_are_shifted_windows_of_the_stream():
    tokens = torch.arange(1000)
    x, y = Batches(tokens, block_size=8, batch_size=16, seed=0).next()
    assert x.shape == y.shape == (16, 8)
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # each row is a contiguous window


def test_batches_are_seeded_and_their_state_restores():
    tokens = torch.randint(0, 65, (5000,))
    a, b = Batches(tokens, 8, 4, seed=3), Batches(tokens, 8, 4, seed=3)
    assert torch.equal(a.next()[0], b.next()[0])
    saved = a.state()
    expected = [a.next()[0] for _ in range(3)]
    fresh = Batches(tokens, 8, 4, seed=99)
    fresh.restore(saved)
    assert all(torch.equal(e, fresh.next()[0]) for e in expected)
    assert not torch.equal(Batches(tokens, 8, 4, seed=4).next()[0],
                           Batches(tokens, 8, 4, seed=3).next()[0])


@pytest.mark.reliability("bad input",
                         "NANOGPT_TINYSHAKESPEARE pointing at another file: no advice to delete it")
def test_the_users_own_copy_is_never_to_be_deleted(tmp_path, shakespeare):
    """Through the CLI: exit 2, one line saying the file is not Tiny Shakespeare and to point the variable elsewhere
    or unset it; no advice to delete it, and the file is untouched."""
    mine = tmp_path / "my-notes.txt"
    mine.write_bytes(shakespeare.read_bytes()[:-100])
    before = mine.read_bytes()
    out = run_module("experiments.run", "--preset", "smoke", "--dry-run", "--results",
                     tmp_path / "r", env={data.LOCAL_COPY_ENV: str(mine)})
    [line] = out.stderr.strip().splitlines()
    assert out.returncode == 2 and line.startswith(f"error: the {data.LOCAL_COPY_ENV} file {mine} "
                                                   "is not Tiny "
                                                   "Shakespeare (sha256 "), line
    assert f"point {data.LOCAL_COPY_ENV} at a correct copy" in line and "unset it" in line
    assert "delete" not in line.lower() and mine.read_bytes() == before

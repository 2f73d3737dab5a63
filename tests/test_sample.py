"""`experiments.sample` and --resume against a recorded run: bad arguments or a checkpoint that does
not fit the run's config give one `error:` line and exit 2, never a traceback; an unfinished run
says so."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from experiments import run, sample, store
from experiments.config import resolve
from experiments.runner import train_run
from nanogpt import checkpoint
from nanogpt.model import GPT
from tests.conftest import ROOT, run_module


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_corpus) -> Path:
    """Two finished smoke runs of different widths in one run store; returns the store."""
    results = tmp_path_factory.mktemp("results")
    for width in (16, 32):
        train_run(resolve("smoke", "full", 0, {"data": str(tiny_corpus), "n_embd": width}), results,
                  quiet=True)
    return results


def run_dirs(results: Path) -> list[Path]:
    """The runs, narrowest first."""
    dirs = [p for p in (results / "adhoc").iterdir() if p.is_dir()]
    return sorted(dirs, key=lambda d: json.loads((d / store.CONFIG).read_text())["n_embd"])


SAMPLE_INPUTS = "sample: tokens, temperature, top-k, prompt, seed, folders, checkpoints"
BAD_SAMPLING = [(("--tokens", "-1"), "--tokens must be 0 or more"),
                (("--temperature", "0"), "--temperature must be a finite number above 0"),
                (("--temperature", "-1"), "--temperature must be"),
                (("--top-k", "0"), "--top-k must be at least 1"),
                (("--prompt", ""), "--prompt is empty"),
                (("--prompt", "€"), "outside the run's vocabulary"),
                (("--seed", "-3"), "--seed must be")]


@pytest.mark.reliability("bad input",
                         "sample: tokens, temperature, top-k, prompt, seed, folders, checkpoints")
@pytest.mark.parametrize(("args", "message"), BAD_SAMPLING, ids=[m for _, m in BAD_SAMPLING])
def test_bad_sampling_arguments_are_one_line(trained, capsys, args, message):
    """One `error:` line naming the argument, exit 2, nothing printed on stdout."""
    assert sample.main([str(run_dirs(trained)[0]), *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert (len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
            and not captured.out)


@pytest.mark.reliability("bad input",
                         "sample: tokens, temperature, top-k, prompt, seed, folders, checkpoints")
def test_sampling_a_folder_without_a_run_says_what_to_give(tmp_path, capsys):
    """One `error:` line naming the folder, exit 2, no advice to delete anything."""
    assert sample.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "--force" not in err and "delete" not in err


@pytest.mark.reliability("bad input",
                         "sample: tokens, temperature, top-k, prompt, seed, folders, checkpoints")
@pytest.mark.parametrize("which", ["best", "last"])
def test_sampling_a_checkpoint_that_does_not_fit_its_config_is_one_line(trained, tmp_path, capsys,
                                                                        which):
    """Exit 2 naming the checkpoint; no traceback."""
    narrow, wide = run_dirs(trained)
    mixed = tmp_path / "adhoc" / narrow.name
    shutil.copytree(narrow, mixed)
    shutil.copy(wide / sample.CHECKPOINTS[which], mixed / sample.CHECKPOINTS[which])
    assert sample.main([str(mixed), "--checkpoint", which]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and "does not match the run's config" in err


@pytest.mark.reliability("bad input",
                         "runner --resume onto a checkpoint that does not fit the config")
def test_resuming_from_a_checkpoint_of_another_config_is_refused(trained, tmp_path, tiny_corpus,
                                                                 capsys):
    """Exit 2 naming the checkpoint; the run folder is left as it was."""
    narrow, wide = run_dirs(trained)
    results = tmp_path / "results"
    shutil.copytree(trained, results)
    victim = results / "adhoc" / narrow.name
    shutil.copy(wide / store.CHECKPOINT, victim / store.CHECKPOINT)
    summary = json.loads((victim / store.SUMMARY).read_text()) | {"status": "interrupted"}
    (victim / store.SUMMARY).write_text(json.dumps(summary))
    before = {p.name: p.read_bytes() for p in victim.iterdir()}
    code = run.main(["--preset", "smoke", "--set", "n_embd=16", "--data", str(tiny_corpus),
                     "--results", str(results), "--resume", "--quiet", "--wandb", "off"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: checkpoint ") and "does not match" in err, err
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == before


def test_sampling_an_unfinished_run_warns(trained, tmp_path, capsys):
    narrow, _ = run_dirs(trained)
    diverged = tmp_path / "adhoc" / narrow.name
    shutil.copytree(narrow, diverged)
    summary = json.loads((diverged / store.SUMMARY).read_text()) | {"status": "diverged",
                                                                    "reason": "loss is nan"}
    (diverged / store.SUMMARY).write_text(json.dumps(summary))
    assert sample.main([str(diverged), "--tokens", "5"]) == 0
    assert "warning: this run is diverged (loss is nan)" in capsys.readouterr().err


def test_sampling_reads_the_best_checkpoint_unless_told_last(trained, tmp_path, capsys):
    """best.pt by default, ckpt.pt with --checkpoint last: here best.pt holds other (zeroed)
    weights."""
    narrow, _ = run_dirs(trained)
    run_dir = tmp_path / "adhoc" / narrow.name
    shutil.copytree(narrow, run_dir)
    state = checkpoint.load(run_dir / store.BEST_CHECKPOINT)
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    (run_dir / store.BEST_CHECKPOINT).write_bytes(checkpoint.serialize(state))
    texts = {}
    for args in ((), ("--checkpoint", "best"), ("--checkpoint", "last")):
        assert sample.main([str(run_dir), "--tokens", "40", *args]) == 0
        texts[args] = capsys.readouterr().out
    assert texts[()] == texts[("--checkpoint", "best")] != texts[("--checkpoint", "last")]


@pytest.mark.reliability("bad input", SAMPLE_INPUTS)
@pytest.mark.parametrize("recorded", ["now", "before best.pt"])
def test_a_run_without_a_best_checkpoint_says_why_and_to_sample_the_last(trained, tmp_path, capsys,
                                                                         recorded):
    """best.pt deleted, or never kept (a run recorded before best checkpoints, whose summary's
    precision has no grad_scaler): one line that says which and points at --checkpoint last, which
    works."""
    narrow, _ = run_dirs(trained)
    old = tmp_path / "adhoc" / narrow.name
    shutil.copytree(narrow, old)
    (old / store.BEST_CHECKPOINT).unlink()
    if recorded == "before best.pt":
        summary = json.loads((old / store.SUMMARY).read_text())
        summary["precision"].pop("grad_scaler")
        (old / store.SUMMARY).write_text(json.dumps(summary))
    assert sample.main([str(old)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    why = ("is missing (deleted?), though metrics.jsonl records evaluations up to step 20"
           if recorded == "now" else "was recorded before best checkpoints were kept")
    assert line.startswith("error: ") and why in line and line.endswith("--checkpoint last"), line
    assert sample.main([str(old), "--checkpoint", "last", "--tokens", "5"]) == 0


@pytest.mark.reliability("bad input", SAMPLE_INPUTS)
def test_a_finished_run_without_its_last_checkpoint_samples_its_best(trained, tmp_path,
                                                                     tiny_corpus, capsys):
    """ckpt.pt deleted, best.pt there: sample reads best.pt (no "train it first"), --checkpoint
    last says to use best, and --resume keeps the finished run as recorded: no circle."""
    narrow, _ = run_dirs(trained)
    run_dir = tmp_path / "adhoc" / narrow.name
    shutil.copytree(narrow, run_dir)
    (run_dir / store.CHECKPOINT).unlink()
    assert sample.main([str(run_dir), "--tokens", "5"]) == 0 and not capsys.readouterr().err
    assert sample.main([str(run_dir), "--checkpoint", "last"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: {run_dir / store.CHECKPOINT} is missing (deleted?), though "
                    "metrics.jsonl records evaluations up to step 20; sample its best checkpoint "
                    "with --checkpoint best")
    assert run.main(["--preset", "smoke", "--data", str(tiny_corpus), "--results", str(tmp_path),
                     "--resume", "--quiet", "--wandb", "off"]) == 0
    assert "already recorded" in capsys.readouterr().out


@torch.inference_mode()
def generate_before_streaming(model: GPT, idx: torch.Tensor, n: int, temperature: float,
                              top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """`GPT.generate` as it was before `stream`: the whole sequence held, its last block_size tokens
    read."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        logits = logits[:, -1, :].float() / max(temperature, 1e-8)
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, -float("inf"))
        idx = torch.cat((idx, torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)),
                        dim=1)
    return idx


@pytest.mark.parametrize(("prompt", "temperature", "top_k"),
                         [("\n", 1.0, None), ("The quick", 0.7, 5)])
def test_streamed_text_is_exactly_what_the_whole_sequence_gave(trained, capsys, prompt, temperature,
                                                               top_k):
    """The CLI's chunked stream prints, for the same seed, exactly the text of the old full-sequence
    loop."""
    run_dir = run_dirs(trained)[0]
    model, tokenizer, _ = sample.load_model(run_dir)
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    tokens = 2 * sample.CHUNK + 37  # across chunk boundaries
    whole = generate_before_streaming(model, idx, tokens, temperature, top_k,
                                      torch.Generator().manual_seed(3))
    args = ["--tokens", str(tokens), "--seed", "3", "--prompt", prompt, "--temperature",
            str(temperature)]
    assert sample.main([str(run_dir), *args, *(["--top-k", str(top_k)] if top_k else [])]) == 0
    assert capsys.readouterr().out == prompt + tokenizer.decode(whole[0,
                                                                      idx.size(1):].tolist()) + "\n"
    assert torch.equal(model.generate(idx, tokens, temperature, top_k,
                                      generator=torch.Generator().manual_seed(3)),
                       whole)


def test_a_long_stream_holds_only_the_models_context(trained):
    """However many characters are drawn, the model never reads (and the stream never holds) more
    than block_size."""
    model, tokenizer, _ = sample.load_model(run_dirs(trained)[0])
    read: list[int] = []
    model.register_forward_pre_hook(lambda module, inputs: read.append(inputs[0].size(1)))
    stream = model.stream(torch.tensor([tokenizer.encode("The quick brown fox jumps")]),
                          generator=torch.Generator())
    assert len(list(itertools.islice(stream, 5000))) == 5000
    assert len(read) == 5000 and max(read) == model.config.block_size < len(
        "The quick brown fox jumps")


@pytest.mark.reliability("fault",
                         "sample --tokens 1000000000 read by a pipe that closes (`| head`)")
def test_a_billion_tokens_stream_until_the_reader_stops(trained):
    """Text arrives at once, chunk by chunk; when the reader closes the pipe, sample exits 0 without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sample", str(run_dirs(trained)[0]),
                             "--tokens", "1000000000"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    head = proc.stdout.read(3 * sample.CHUNK)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and not err, err
    assert len(head) == 3 * sample.CHUNK and head.startswith(b"\n")


@pytest.fixture(scope="module")
def one_line_run(tmp_path_factory, tiny_corpus) -> Path:
    """A finished smoke run on a corpus with no newline in it."""
    corpus = tmp_path_factory.mktemp("one-line") / "one-line.txt"
    corpus.write_text(tiny_corpus.read_text().replace("\n", " "), encoding="utf-8")
    results = tmp_path_factory.mktemp("results")
    train_run(resolve("smoke", "full", 0, {"data": str(corpus), "max_iters": 20,
                                           "eval_interval": 10}), results,
              quiet=True)
    [run_dir] = [p for p in (results / "adhoc").iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.reliability(
    "bad input", "sample: the default prompt on a corpus without newlines, a prompt outside it")
def test_the_default_prompt_works_on_a_corpus_without_newlines(one_line_run):
    """No --prompt: the text starts at the vocabulary's first character, exit 0; an explicit newline is one line."""
    out = run_module("experiments.sample", one_line_run, "--tokens", "30")
    assert out.returncode == 0 and not out.stderr, out.stderr
    # " " sorts first in this vocabulary
    assert out.stdout.startswith(" ") and len(out.stdout) == 1 + 30 + 1
    refused = run_module("experiments.sample", one_line_run, "--prompt", "\n")
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr.splitlines() == [
        "error: prompt has characters outside the run's vocabulary: '\\n'"]

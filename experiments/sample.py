"""Print text from a recorded run: `python -m experiments.sample RUN_DIR`.

The text streams to stdout as it is drawn, a chunk at a time, holding only the model's context: any
--tokens runs in bounded memory, and stops at Ctrl-C, or quietly when the reader goes (`| head`).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from experiments import exits, store
from experiments.config import ConfigError, RunConfig
from experiments.runner import USER_ERRORS, load_weights
from nanogpt import checkpoint
from nanogpt.data import CharTokenizer
from nanogpt.model import GPT

CHECKPOINTS = {"best": store.BEST_CHECKPOINT, "last": store.CHECKPOINT}
CHUNK = 256  # characters decoded and flushed at a time


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m experiments.sample", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run folder (results/<experiment>/<run_id>)")
    p.add_argument("--tokens", type=int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature > 0 (default 1.0)")
    p.add_argument("--top-k", type=int, default=None,
                   help="sample only from the k likeliest characters (k >= 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--prompt", help="text to continue (default a newline; on a corpus without one, "
                                    "the first "
                   "character of the run's vocabulary)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="best",
                   help="best: the weights of the run's lowest val loss (default); last: its last "
                        "evaluation's")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.tokens < 0:
        raise ConfigError(f"--tokens must be 0 or more, got {args.tokens}")
    if not 0 < args.temperature < float("inf"):
        raise ConfigError(f"--temperature must be a finite number above 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.prompt == "":
        raise ConfigError("--prompt is empty; give at least one character, or leave it out (a "
                          "newline)")
    if not 0 <= args.seed < 2**63:
        raise ConfigError(f"--seed must be a whole number in 0..{2**63 - 1}, got {args.seed}")


def load_model(run_dir: Path, which: str = "best") -> tuple[GPT, CharTokenizer, dict]:
    """The run's model with the weights of its `which` checkpoint (best or last), its tokenizer and
    its summary. A run whose files disagree (`store.check_run`) is refused, as by every reader."""
    if not (run_dir / store.CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {store.CONFIG}); give "
                          "results/<experiment>/<run_id>")
    record = store.read_run(run_dir)
    if record.damage:
        raise store.RunFolderError(str(record.damage))
    path = run_dir / CHECKPOINTS[which]
    if not path.is_file():
        raise store.RunFolderError(missing_checkpoint(record, which))
    try:
        tokenizer = CharTokenizer.from_json((run_dir / store.VOCAB).read_text(encoding="utf-8"))
        cfg = RunConfig.from_flat(record.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{run_dir}: unreadable config or vocabulary ({e}); retrain the run with "
                          "--force") from None
    model = GPT(cfg.model)
    state = checkpoint.load(path)
    load_weights(model, state["model"], path)
    return model.eval(), tokenizer, record.summary | {"checkpoint_step": state["step"]}


def missing_checkpoint(record: store.RunRecord, which: str) -> str:
    """Why a run has no `which` checkpoint, and what to sample instead (or do first)."""
    name = CHECKPOINTS[which]
    other = next(w for w in CHECKPOINTS if w != which)
    status = record.summary["status"]
    if not record.metrics:  # a checkpoint is written at each evaluation
        if status in (store.RUNNING, "interrupted"):
            return (f"{record.path} has no checkpoint yet: the run saves one at its first "
                    "evaluation; train it (python -m experiments.run ... --resume) first")
        return f"{record.path} has no checkpoint: the run {status} before its first evaluation"
    if which == "best" and not keeps_best_checkpoint(record.summary):
        return (f"{record.path} has no {name}: its run was recorded before best checkpoints were "
                f"kept; use --checkpoint {other}")
    best = store.loss_summary(record.metrics)["best_val_loss"]
    if which == "best" and not (isinstance(best, float) and math.isfinite(best)):
        return (f"{record.path} has no {name}: no evaluation of its run had a finite val loss; "
                f"use --checkpoint {other}")
    if (record.path / CHECKPOINTS[other]).is_file():
        instead = f"sample its {other} checkpoint with --checkpoint {other}"
    else:
        instead = "restore it, or retrain the run with --force"
    return (f"{record.path / name} is missing (deleted?), though {store.METRICS} records "
            f"evaluations up to step {record.metrics[-1]['step']}; {instead}")


def keeps_best_checkpoint(summary: dict) -> bool:
    """Whether the run's recorder kept best.pt: every recorder that does records its gradient
    scaler in the summary's `precision` (the two came together); an older run has no best.pt."""
    return "grad_scaler" in (summary.get("precision") or {})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exits.run_command(lambda: _sample(args), USER_ERRORS,
                             "the text so far was printed; nothing was written")


def default_prompt(tokenizer: CharTokenizer) -> str:
    """A newline, as the runner's samples start; where the corpus has none, its vocabulary's first
    character."""
    return "\n" if "\n" in tokenizer.chars else tokenizer.chars[0]


def _sample(args: argparse.Namespace) -> int:
    check_args(args)
    model, tokenizer, summary = load_model(args.run_dir, args.checkpoint)
    prompt = default_prompt(tokenizer) if args.prompt is None else args.prompt
    unknown = sorted(set(prompt) - set(tokenizer.chars))
    if unknown:
        raise ConfigError("prompt has characters outside the run's vocabulary: "
                          f"{''.join(unknown)!r}")
    if summary.get("status") != "completed":
        print(f"warning: this run is {summary.get('status', 'unknown')} "
              f"({summary.get('reason') or 'no reason'}); the text comes from its checkpoint at "
              f"step {summary['checkpoint_step']}", file=sys.stderr)
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    tokens = model.stream(idx, args.temperature, args.top_k,
                          generator=torch.Generator().manual_seed(args.seed))
    try:
        _write(prompt)
        for start in range(0, args.tokens, CHUNK):
            _write(tokenizer.decode(
                [int(t) for t in itertools.islice(tokens, min(CHUNK, args.tokens - start))]))
        _write("\n")
    except BrokenPipeError:  # the reader stopped reading (`| head`): that is all the text it wanted
        # so exit's flush finds no pipe either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())

"""Side by side with the peers, on this machine, in one session: nanoGPT's train.py and the
lecture's gpt.py.

    python -m benchmarks.peers --nanogpt ~/src/nanoGPT --lecture ~/src/ng-video-lecture --rounds 2

Bring the peers yourself (`git clone`; for the lecture, check out the commit "and add layernorms,
down to 2.06"); they run unchanged from their own folders, and no code of theirs is copied here.
Runs alternate (peer, ours, peer, ours, ...) so a drifting machine slows both alike; each speed is a
ratio of runs measured minutes apart.

- nanoGPT: its README's CPU recipe (config/train_shakespeare_char.py shrunk to 4x128, block 64, 2000
  iterations, fp32 on CPU) against our `cpu` preset with its defaults (dtype auto). Speed = median
  time of a training iteration (nanoGPT logs every iteration; ours is the median of its evaluation
  windows).
- the lecture: v2.py at the layernorm stage (n_embd 32, block 8, 4 heads x 3 blocks, 5000
  iterations) against our tutorial preset's `layernorm` rung, both on one thread. Speed = wall time
  of the process (the lecture's script also samples 2000 characters at the end; ours samples 500).

Results go into docs/benchmarks.md's `peers` section.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.train_speed import last_line, machine, write_section
from experiments import PROJECT_ROOT, exits
from experiments.runner import USER_ERRORS
from nanogpt.data import tiny_shakespeare_path

NANOGPT_CPU_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                      "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
                      "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                      "--lr_decay_iters=2000", "--dropout=0.0"]


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    out = subprocess.run(args, cwd=cwd, env=os.environ | env, capture_output=True, text=True)
    if out.returncode != 0:
        raise exits.CommandFailed(f"{' '.join(args)} failed in {cwd}: {last_line(out.stderr)}")
    return out.stdout, time.perf_counter() - start


def last_val(text: str) -> float:
    return float(re.findall(r"val loss ([\d.]+)", text)[-1])


def ours(preset: str, variant: str, results: Path, env: dict[str, str]) -> dict[str, float]:
    args = [sys.executable, "-m", "experiments.run", "--preset", preset, "--variant", variant,
            "--force", "--quiet", "--results", str(results), "--experiment", "peers", "--wandb",
            "off"]
    stdout, wall = timed(args, PROJECT_ROOT, env)
    run_dir = Path(stdout.rsplit("-> ", 1)[-1].strip())
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    rates = [json.loads(line)["tokens_per_sec"]
             for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r for r in rates if r][1:] or [r for r in rates if r]
    tokens_per_iter = config["batch_size"] * config["block_size"]
    return {"wall": wall, "val": summary["final_val_loss"], "dtype": config["dtype"],
            "ms_per_iter": 1000 * tokens_per_iter / statistics.median(rates)}


def nanogpt(folder: Path, env: dict[str, str]) -> dict[str, float]:
    stdout, wall = timed([sys.executable, "train.py", *NANOGPT_CPU_RECIPE], folder, env)
    times = [float(t) for t in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", stdout,
                                          re.MULTILINE)]
    return {"wall": wall, "val": last_val(stdout), "ms_per_iter": statistics.median(times),
            "dtype": "float32"}


def lecture(folder: Path, env: dict[str, str]) -> dict[str, float]:
    stdout, wall = timed([sys.executable, "v2.py"], folder, env)
    return {"wall": wall, "val": last_val(stdout)}


def prepare_nanogpt(folder: Path, corpus: Path) -> None:
    """nanoGPT's own prepare.py, run unchanged; it downloads only when input.txt is missing, so give
    it ours."""
    data = folder / "data" / "shakespeare_char"
    if not (data / "train.bin").exists():
        shutil.copy(corpus, data / "input.txt")
        timed([sys.executable, "prepare.py"], data, {})


def main(argv: Sequence[str] | None = None) -> int:
    p = exits.ArgumentParser(prog="python -m benchmarks.peers",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT")
    p.add_argument("--lecture", type=Path, help="karpathy/ng-video-lecture at 'and add layernorms, "
                                                "down to 2.06'")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    return exits.run_command(lambda: _compare(args, argv), USER_ERRORS, "nothing was written")


def _compare(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    corpus = tiny_shakespeare_path()
    sections = []
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        if args.lecture:
            if not (args.lecture / "input.txt").exists():
                (args.lecture / "input.txt").symlink_to(corpus)
            one_thread = {"OMP_NUM_THREADS": "1"}
            pairs = [(lecture(args.lecture, one_thread),
                      ours("tutorial", "layernorm", Path(tmp), one_thread))
                     for _ in range(args.rounds)]
            sections.append(_lecture_table(pairs))
        if args.nanogpt:
            prepare_nanogpt(args.nanogpt, corpus)
            pairs = [(nanogpt(args.nanogpt, {}), ours("cpu", "full", Path(tmp), {}))
                     for _ in range(args.rounds)]
            sections.append(_nanogpt_table(pairs))
    command = f"python -m benchmarks.peers {' '.join(sys.argv[1:] if argv is None else argv)}"
    text = f"Measured on {machine()}.\n\n`{command}`\n\n" + "\n".join(sections)
    print(text)
    if not args.no_write:
        write_section("peers", text)
    return 0


def _lecture_table(pairs: list[tuple[dict, dict]]) -> str:
    ratios = [theirs["wall"] / mine["wall"] for theirs, mine in pairs]
    lines = ["**The lecture's gpt.py (layernorm stage, 5000 iterations) vs our "
             f"`tutorial/layernorm`, one thread each: ours is {statistics.median(ratios):.2f}x "
             "faster** (wall time, median of per-round ratios "
             f"{', '.join(f'{r:.2f}' for r in ratios)}).", "",
             "| round | lecture s | lecture val | ours s | ours val | speed-up |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {t['wall']:.1f} | {t['val']:.3f} | {m['wall']:.1f} | {m['val']:.3f} | "
              f"{r:.2f}x |"
              for i, ((t, m), r) in enumerate(zip(pairs, ratios, strict=True))]
    return "\n".join(lines) + "\n"


def _nanogpt_table(pairs: list[tuple[dict, dict]]) -> str:
    ratios = [theirs["ms_per_iter"] / mine["ms_per_iter"] for theirs, mine in pairs]
    lines = ["**nanoGPT's train.py (README CPU recipe, 2000 iterations) vs our `cpu` preset (dtype "
             f"auto -> {pairs[0][1]['dtype']}): ours {statistics.median(ratios):.2f}x nanoGPT's "
             "tokens/s** (median ms per training iteration; per-round ratios "
             f"{', '.join(f'{r:.2f}' for r in ratios)}).", "",
             "| round | nanoGPT ms/iter | nanoGPT val | nanoGPT s | ours ms/iter | ours val | ours "
             "s | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {t['ms_per_iter']:.1f} | {t['val']:.4f} | {t['wall']:.0f} | "
              f"{m['ms_per_iter']:.1f} | {m['val']:.4f} | {m['wall']:.0f} | {r:.2f}x |"
              for i, ((t, m), r) in enumerate(zip(pairs, ratios, strict=True))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

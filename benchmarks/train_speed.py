"""Training speed: `python -m benchmarks.train_speed` (`make bench`).

Every measurement is one real run, `python -m experiments.run` in a fresh process, read back
from its run folder: the path users train on, not a copy of the loop. Per case it reports
ms/iter and tokens/s (median over evaluation windows after the first, which holds warm-up and
compilation), model FLOPs per token (training = 3x forward), achieved FLOP/s, MFU against a
matmul peak measured in this process in the run's dtype and thread count, peak memory, the
final val loss and the time to reach a target val loss.

On a shared machine absolute numbers drift, so `--compare` judges a change by a ratio: it runs
two configurations alternately (A B A B ...) and reports B/A per pair.

    python -m benchmarks.train_speed                                  # table of the default cases
    python -m benchmarks.train_speed --compare cpu/full dtype=float32 dtype=bfloat16 --rounds 3
    python -m benchmarks.train_speed --compare cpu/full code=/path/to/old/checkout code=.  #
        before/after a change

A spec is comma-separated KEY=VALUE: any run setting (see `python -m experiments.run
--list-settings`; compile=true|false and device=D among them), plus threads=N (OMP_NUM_THREADS of
the run), target=LOSS (the val loss to time; default per preset) and code=PATH (the checkout whose
code runs). Results go to docs/benchmarks.md, each mode into its own marked section, so hand-written
notes around them survive a re-run.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.interleave import RUN_KEYS, interleave, spec_settings
from experiments import PROJECT_ROOT, cli, exits, store
from experiments.config import ConfigError, resolve
from experiments.machine import resolve_device
from experiments.runner import USER_ERRORS
from nanogpt import precision

# PRESET/VARIANT[:SPEC]. cpu/full is nanoGPT's CPU recipe (nanoGPT itself: ~35 ms/iter, val 1.886 on
# 2 cores); at 3000 iterations it is the "val <= 1.80 within 80 s" run. On a GPU: the lecture's
# seed run (target val 1.50 in under 60 s) and nanoGPT's 5000-iteration shakespeare_char recipe.
DEFAULT_CASES = ("tutorial/full", "tutorial/bigram", "cpu/full",
                 "cpu/full:max_iters=3000,lr_decay_iters=3000")
NANOGPT_SHAKESPEARE_CHAR = (
    "lr=1e-3,lr_schedule=cosine,warmup_iters=100,min_lr=1e-4,max_iters=5000,lr_decay_iters=5000,"
    "beta2=0.99,weight_decay=0.1,grad_clip=1.0,bias=false,activation=gelu,weight_tying=true,"
    "eval_interval=250,target=1.4697"
)
GPU_CASES = ("seed/full:compile=true", f"seed/full:compile=true,{NANOGPT_SHAKESPEARE_CHAR}")
TARGET_VAL_LOSS = {"tutorial": 2.10, "cpu": 1.80, "seed": 1.50, "smoke": 3.50}
DOC = PROJECT_ROOT / "docs" / "benchmarks.md"


def parse_spec(text: str, given: dict[str, str] | None = None) -> dict[str, str]:
    """'dtype=bfloat16,threads=1' -> {'dtype': 'bfloat16', 'threads': '1'}; '' -> {}. Added to
    `given` (the --set items): a key given twice must agree, as it must for experiments.run."""
    spec = dict(given or {})
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"spec item '{item}' is not KEY=VALUE (e.g. dtype=bfloat16)")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in spec and _typed(key, spec[key]) != _typed(key, value):
            raise ConfigError(f"{key} is given twice ({key}={spec[key]}, {key}={value}); give it "
                              "once")
        spec[key] = value
    spec_settings(spec)  # a setting and its earlier name (layernorm, norm_position) must agree too
    return spec


def _typed(key: str, value: str) -> Any:
    """A spec value as its setting's type (so lr=1e-3 and lr=0.001 agree); threads, code, target as
    text."""
    return value if key in RUN_KEYS else spec_settings({key: value})


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, threads: int,
                      budget_sec: float = 0.5) -> float:
    """Best FLOP/s of a square matmul in `dtype` on `device`: the MFU denominator.

    A bounded probe: a 1024 (CPU) or 8192 (GPU) matmul repeated at most 5 times within `budget_sec`.
    Callers probe only dtypes the device runs natively (an emulated bf16 matmul of that size takes
    seconds on an AVX2 CPU).
    """
    torch.set_num_threads(threads)
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best, spent = float("inf"), 0.0
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_sec:
            break
    return 2 * n**3 / best


def run_case(case: str, spec: dict[str, str], results: Path, jobs: int = 1) -> list[dict[str, Any]]:
    """Train one case in `jobs` fresh processes at once (each its own run store) and measure
    each."""
    preset, variant = case.split("/", 1)
    code = Path(spec.get("code", PROJECT_ROOT)).resolve()
    args = [sys.executable, "-m", "experiments.run", "--preset", preset, "--variant", variant,
            "--experiment", "bench", "--force", "--quiet"]
    args += [arg for key, value in spec.items() if key not in RUN_KEYS for arg in (
        "--set", f"{key}={value}")]
    # W&B mirroring off: its service process would be timed too.
    env = os.environ | {"OMP_NUM_THREADS": spec.get("threads", str(torch.get_num_threads())),
                        "PYTHONPATH": str(code), "WANDB_MODE": "disabled"}
    n = len(list(results.glob("*")))
    # one store per process: the runs are identical
    stores = [results / f"{n + j}" for j in range(jobs)]
    start = time.perf_counter()
    procs = [subprocess.Popen([*args, "--results", str(s)], cwd=code, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in stores]
    rows = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise exits.CommandFailed(f"{case} {spec} failed (exit {proc.returncode}): "
                                      f"{last_line(err)}")
        run_dir = Path(out.rsplit("-> ", 1)[-1].strip())
        row = measure(store.read_run(run_dir), case, spec,
                      time.perf_counter() - start) | {"jobs": jobs}
        print(f"{case} {row['spec']}: {row['ms_per_iter']:.2f} ms/iter, "
              f"{row['tokens_per_sec']:,.0f} tokens/s, val {row['final_val_loss']:.4f} ({run_dir})",
              file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def measure(run: store.RunRecord, case: str, spec: dict[str, str], wall: float) -> dict[str, Any]:
    cfg, summary, metrics = run.config, run.summary, run.metrics
    rates = [m["tokens_per_sec"] for m in metrics if m.get("tokens_per_sec")]
    tokens_per_sec = statistics.median(rates[1:] if len(rates) > 1 else rates)
    tokens_per_iter = cfg["batch_size"] * cfg["block_size"]
    target = float(spec["target"]) if "target" in spec else TARGET_VAL_LOSS.get(cfg["preset"])
    reached = [m["elapsed_sec"] for m in metrics if target is not None and m["val_loss"] <= target]
    return {
        "case": case, "spec": ",".join(f"{k}={v}" for k, v in spec.items()) or "-",
        "dtype": cfg["dtype"], "threads": int(spec.get("threads", torch.get_num_threads())),
        "device": summary["environment"]["device"], "iters": summary["step"],
        "ms_per_iter": 1000 * tokens_per_iter / tokens_per_sec, "tokens_per_sec": tokens_per_sec,
        "flops_per_token": summary["flops_per_token"],
        "achieved_flops": 3 * summary["flops_per_token"] * tokens_per_sec,
        "peak_mem_mb": max((m.get("peak_mem_mb") or 0 for m in metrics), default=0) or None,
        "final_val_loss": summary["final_val_loss"], "target": target,
        "time_to_target_sec": reached[0] if reached else None, "run_sec": summary["wall_time_sec"],
        "process_sec": wall, "curve": [(m["step"], m["val_loss"]) for m in metrics],
    }


def with_mfu(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MFU against the peak of each (device, dtype, threads); none where the dtype is emulated (no
    honest peak)."""
    peaks: dict[tuple[str, str, int], float | None] = {}
    for row in rows:
        key = (row["device"], row["dtype"], row["threads"])
        if key not in peaks:
            device = torch.device(key[0])
            # no honest peak for an emulated dtype
            native = precision.choose(key[1], device).warning is None
            peaks[key] = (peak_matmul_flops(device, getattr(torch, key[1]), key[2]) if native
                          else None)
        row["peak_flops"] = peaks[key]
        row["mfu"] = row["achieved_flops"] / peaks[key] if peaks[key] else None
    return rows


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}{unit}" if abs(value) < 10 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


COLUMNS = (("case", "case"), ("spec", "spec"), ("dtype", "dtype"), ("threads", "threads"),
           ("jobs", "jobs"), ("iters", "iters"),
           ("ms/iter", "ms_per_iter"), ("tokens/s", "tokens_per_sec"),
           ("FLOPs/token (fwd)", "flops_per_token"), ("achieved GFLOP/s", "achieved_gflops"),
           ("peak GFLOP/s", "peak_gflops"), ("MFU", "mfu_pct"), ("peak mem MB", "peak_mem_mb"),
           ("final val", "final_val_loss"), ("target", "target"),
           ("time to target s", "time_to_target_sec"), ("run s", "run_sec"),
           ("process s", "process_sec"))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        emulated = row["peak_flops"] is None
        row = row | {"achieved_gflops": row["achieved_flops"] / 1e9,
                     "peak_gflops": "emulated" if emulated else row["peak_flops"] / 1e9,
                     "mfu_pct": "emulated" if emulated else f"{100 * row['mfu']:.1f}%"}
        lines.append("| " + " | ".join(_fmt(row[key]) for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def curves(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Val loss of A and B at each evaluation, side by side."""
    lines = ["| step | A val | B val | B - A |", "|---|---|---|---|"]
    for (step, va), (_, vb) in zip(a["curve"], b["curve"], strict=False):
        lines.append(f"| {step} | {va:.4f} | {vb:.4f} | {vb - va:+.4f} |")
    return "\n".join(lines)


def compare(case: str, spec_a: dict[str, str], spec_b: dict[str, str], rounds: int, results: Path,
            jobs: int = 1) -> str:
    """A B A B ...: per-pair ratios of throughput (all `jobs` processes together), measured close in
    time."""
    rows, speedups = [], []
    for r in range(rounds):
        pair = []
        for label, spec in (("A", spec_a), ("B", spec_b)):
            print(f"round {r + 1} {label}:", end=" ", file=sys.stderr, flush=True)
            pair.append(
                [row | {"case": f"{label}: {case}"} for row in run_case(case, spec, results, jobs)])
        speedups.append(sum(row["tokens_per_sec"] for row in pair[1]) / sum(row["tokens_per_sec"]
                                                                            for row in pair[0]))
        rows += pair[0] + pair[1]
    rows = with_mfu(rows)
    what = ("tokens/s of B over "
            "A" + (f", {jobs} concurrent processes each summed" if jobs > 1 else ""))
    return (f"A = `{_spec_text(spec_a)}`, B = `{_spec_text(spec_b)}`, case `{case}`, {rounds} "
            f"alternating rounds.\n\n**Speed-up ({what}), per round: "
            f"{', '.join(f'{s:.2f}x' for s in speedups)}; median "
            f"{statistics.median(speedups):.2f}x.**\n\n{table(rows)}\n\nVal-loss curves, last "
            f"round:\n\n{curves(rows[-1 - jobs], rows[-1])}\n")


def interleaved(case: str, spec_a: dict[str, str], spec_b: dict[str, str], turns: int,
                chunk: int) -> str:
    result = interleave(case, spec_a, spec_b, turns, chunk)
    a, b = result["A"], result["B"]
    return (f"A = `{_spec_text(spec_a)}`, B = `{_spec_text(spec_b)}`, case `{case}`, one process, "
            f"{turns} turns of {chunk} steps each.\n\n"
            "**Speed-up (tokens/s of B over A), median of per-turn ratios: "
            f"{result['speedup']:.2f}x** (per turn "
            f"{', '.join(f'{r:.2f}' for r in result['ratios'])}).\n\n| | ms/iter | tokens/s "
            f"|\n|---|---|---|\n| A | {a['ms_per_iter']:.2f} | {a['tokens_per_sec']:,.0f} |\n"
            f"| B | {b['ms_per_iter']:.2f} | {b['tokens_per_sec']:,.0f} |\n")


def _spec_text(spec: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in spec.items()) or "(preset defaults)"


def machine() -> str:
    """CPU model, ISA class and whether bf16 is native: the facts a reader needs to compare numbers
    across machines."""
    cpu = platform.processor() or platform.machine()
    model = re.search(r"model name\s*:\s*(.+)",
                      Path("/proc/cpuinfo").read_text()) if Path("/proc/cpuinfo").exists() \
        else None
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    bf16 = "native" if precision.bf16_native(torch.device("cpu"))[0] else "emulated"
    return (f"{model.group(1) if model else cpu} ({precision.cpu_isa()}, CPU bf16 {bf16}), "
            f"{os.cpu_count()} cores{gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.platform()}; "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average "
            f"{os.getloadavg()[0]:.1f} (over {os.cpu_count()} means other work shared the cores)")


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between this name's markers; leave the rest of the file
    alone."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    text = (pattern.sub(lambda _: block, text) if pattern.search(text)
            else text.rstrip() + f"\n\n{block}\n")
    doc.parent.mkdir(parents=True, exist_ok=True)
    store.write_atomic(doc, text)


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m benchmarks.train_speed",
                             description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    p.add_argument("--case", action="append", metavar="PRESET/VARIANT[:SPEC]",
                   help=f"case to measure; repeatable (default {', '.join(DEFAULT_CASES)}, plus "
                        f"the seed preset on a GPU)")
    p.add_argument("--spec", default="", help="settings for every case in table mode, e.g. "
                                              "dtype=bfloat16")
    p.add_argument("--compare", nargs=3, metavar=("PRESET/VARIANT", "SPEC_A", "SPEC_B"),
                   help="run A and B alternately and report their speed ratio")
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs in --compare (default 3)")
    p.add_argument("--jobs", type=int, default=1,
                   help="in --compare, run each side as this many concurrent processes (parallel "
                        "ablations)")
    p.add_argument("--interleave", type=int, metavar="STEPS",
                   help="in --compare, train A and B in one process in turns of STEPS steps "
                        "(--rounds turns): robust to a shared machine's second-by-second load; see "
                        "benchmarks/interleave.py")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="run setting for every run (e.g. max_iters=300 for a quick comparison)")
    p.add_argument("--section", help="name of the docs section to write (default: table, or "
                                     "compare-<B spec>)")
    cli.add_results_argument(p, help="keep the benchmark's run folders here (default: a temp "
                             "folder)")
    p.add_argument("--doc", type=Path, default=DOC,
                   help=f"where to write (default {DOC.relative_to(PROJECT_ROOT)})")
    p.add_argument("--allow-emulated", action="store_true",
                   help="time cases whose dtype this machine only emulates (bf16 on an AVX2 CPU: "
                        "minutes per case)")
    p.add_argument("--no-write", action="store_true",
                   help=f"print only; leave {DOC.relative_to(PROJECT_ROOT)} alone")
    return p


def last_line(text: str) -> str:
    """What a failed command said last (our commands' one `error:` line)."""
    return next((line for line in reversed(text.splitlines()) if line.strip()), "no output")


def check(case: str, specs: Sequence[dict[str, str]], allow_emulated: bool = False) -> None:
    """Resolve every configuration up front: a typo fails in a second, not after an hour of runs,
    and a case in a dtype this machine only emulates is refused before it runs for minutes."""
    if not re.fullmatch(r"[\w.-]+/([\w.-]+/)?[\w.-]+", case):
        raise ConfigError(f"case '{case}' must be PRESET/VARIANT, e.g. cpu/full")
    for spec in specs:
        cfg = resolve(*case.split("/", 1), 0, spec_settings(spec))
        choice = precision.choose(cfg.train.dtype, resolve_device(cfg.device))
        if choice.warning and not allow_emulated:
            raise ConfigError(f"{case} {_spec_text(spec)}: {choice.reason}, so this case would run "
                              "for minutes; pass --allow-emulated to time the emulation anyway")
        if "code" in spec and not (Path(spec["code"]) / "experiments" / "run.py").is_file():
            raise ConfigError(f"code={spec['code']} is not a checkout of this project (no "
                              "experiments/run.py)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exits.run_command(lambda: _bench(args, argv), USER_ERRORS,
                             f"nothing was written to {args.doc}; run the same command again")


def _bench(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    cases = args.case or [*DEFAULT_CASES, *(GPU_CASES if torch.cuda.is_available() else ())]
    if args.rounds < 1 or args.jobs < 1 or (args.interleave is not None and args.interleave < 1):
        raise ConfigError("--rounds, --jobs and --interleave must be at least 1")
    common = parse_spec(",".join(args.set))
    if args.compare:
        specs = [parse_spec(s, common) for s in args.compare[1:]]
        check(args.compare[0], specs, args.allow_emulated)
    else:
        cases = [(case, parse_spec(spec, parse_spec(args.spec, common)))
                 for case, _, spec in (c.partition(":") for c in cases)]
        for case, spec in cases:
            check(case, [spec], args.allow_emulated)
    command = ("python -m "
               "benchmarks.train_speed " + " ".join(argv if argv is not None else sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        results = args.results or Path(tmp)
        if args.compare and args.interleave:
            body = interleaved(args.compare[0], *specs, args.rounds, args.interleave)
            section = args.section or "interleave-" + re.sub(r"[^\w.=-]+", "_", args.compare[2])
        elif args.compare:
            body = compare(args.compare[0], *specs, args.rounds, results, args.jobs)
            section = args.section or "compare-" + re.sub(r"[^\w.=-]+", "_", args.compare[2])
        else:
            body = (
                table(with_mfu(
                    [row for case, spec in cases for row in run_case(case, spec, results)])) + "\n")
            section = args.section or "table"
    text = f"Measured on {machine()}.\n\n`{command.strip()}`\n\n{body}"
    print(text)
    if not args.no_write:
        write_section(section, text, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

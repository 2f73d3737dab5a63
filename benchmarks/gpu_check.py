"""The GPU check: one prepared script for a machine with one CUDA GPU, at most 8 minutes, every part
timed out.

    python -m benchmarks.gpu_check [--report results/gpu-check.md] [--parts a,b,c,e,f,d] [--jobs N]
        [--dry-run]
    make gpu-check [DRY_RUN=1] [REPORT=path]

(a) the `seed` preset, 2000 iterations, compile on, dtype auto: wall time, tokens/s, MFU, best and
    final val;
(b) the same preset, 200 iterations, eager, dtype=float16 (the T4 path) and float32: their tokens/s
    ratio; and an fp16 run SIGKILLed after its second evaluation, resumed: are its losses those of
    the uninterrupted run?
(c) the default `make ablate` training (ladder + leave-one-out, 45 tutorial runs, W&B off) run by
    run (`--ensemble off`) with the GPU job default of experiments.placement: wall time (the report
    notebooks are not run: they need papermill);
(e) the same 45 runs as ensembles (`--ensemble auto`, experiments.grouping);
(f) the 60-run norms LR grid, as ensembles and run by run;
(d) the CUDA-marked tests and the model/training tests.

It runs on the check machine as it is: its python3 with a CUDA torch, pandas, pyyaml, tqdm and
pytest, no venv, no network, no wandb or optuna (nothing it runs imports them). Tiny Shakespeare
must be there already: $NANOGPT_TINYSHAKESPEARE, or shared/data/tinyshakespeare/input.txt inside the
checkout (that folder travels). A part that runs past its timeout is stopped and reported with what
it measured so far; the Markdown section (GPU model, torch and CUDA versions, one row per part) is
written at the end either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import PROJECT_ROOT as ROOT
from experiments import exits
from experiments.settings import ConfigError

BUDGET_SEC = 480  # the whole check, parts and start included
SHARED_COPY = ROOT / "shared" / "data" / "tinyshakespeare" / "input.txt"
RUN = ("-m", "experiments.run", "--preset", "seed", "--wandb", "off", "--quiet")
EAGER_200 = ("--set", "max_iters=200", "--set", "eval_interval=50", "--set", "eval_iters=20",
             "--set", "compile=false")
TESTS = ("tests/test_cuda.py", "tests/test_model.py", "tests/test_fast_path.py",
         "tests/test_fp16.py", "tests/test_precision.py", "tests/test_best_checkpoint.py",
         "tests/test_compile.py", "tests/test_placement.py")


@dataclass(frozen=True)
class Part:
    key: str
    what: str
    timeout: int  # seconds at most; a part also never runs past what is left of BUDGET_SEC
    # what it runs (shown by --dry-run)
    commands: Callable[[Path, argparse.Namespace], list[list[str]]]
    # runs it; returns the report's cells
    measure: Callable[[Path, argparse.Namespace, float], dict[str, Any]]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


# ---- the parts -----------------------------------------------------------------------------------
def seed_commands(work: Path, _: argparse.Namespace) -> list[list[str]]:
    return [python(*RUN, "--set", "max_iters=2000", "--results", str(work / "a"))]


def seed_measure(work: Path, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    [command] = seed_commands(work, args)
    took, ok = timed(command, timeout, work / "a.log")
    run = read_run(work / "a")
    cells = {"wall": took, "done": ok and run.get("status") == "completed"}
    if run:
        peak = peak_flops(run["dtype"])
        cells |= {"result": f"{run['tokens_per_sec']:,.0f} tokens/s, MFU {mfu(run, peak)}, best "
                            f"val {fmt(run.get('best_val_loss'))} (step "
                            f"{run.get('best_val_step')}), final val "
                            f"{fmt(run.get('final_val_loss'))} at step {run['step']}; dtype "
                            f"{run['dtype']}"}
    return cells


def dtype_commands(work: Path, _: argparse.Namespace) -> list[list[str]]:
    runs = [python(*RUN, *EAGER_200, "--set", f"dtype={dtype}", "--results",
                   str(work / f"b-{dtype}"))
            for dtype in ("float16", "float32")]
    killed = python(*RUN, *EAGER_200, "--set", "dtype=float16", "--results", str(work / "b-killed"))
    return [*runs, killed, [*killed, "--resume"]]


def dtype_measure(work: Path, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    fp16, fp32, killed, resume = dtype_commands(work, args)
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    for command in (fp16, fp32):
        if not timed(command, deadline - time.monotonic(), work / "b.log")[1]:
            return {"wall": time.monotonic() - start, "done": False,
                    "result": "a 200-iteration run did not finish"}
    rates = {dtype: read_run(work / f"b-{dtype}")["tokens_per_sec"]
             for dtype in ("float16", "float32")}
    result = (f"float16 {rates['float16']:,.0f} tokens/s, float32 {rates['float32']:,.0f}: "
              f"ratio {rates['float16'] / rates['float32']:.2f}x")
    killed_at = kill_after_evaluations(killed, work / "b-killed", 2, deadline - time.monotonic(),
                                       work / "b.log")
    resumed = timed(resume, deadline - time.monotonic(), work / "b.log")[1]
    same = (compare_losses(work / "b-float16", work / "b-killed") if resumed
            else "the resumed run did not finish")
    return {"wall": time.monotonic() - start, "done": resumed,
            "result": f"{result}; fp16 killed after step {killed_at}, resumed: {same}"}


NORMS_GRID = ("--experiments", "norms", "--lrs", "1e-3", "2e-3", "5e-3", "1e-2")


def ablate_commands(work: Path, args: argparse.Namespace, name: str = "c", ensemble: str = "off",
                    what: Sequence[str] = ()) -> list[list[str]]:
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    return [python("-m", "experiments.ablate", *what, "--results", str(work / name), "--wandb",
                   "off", "--ensemble", ensemble, *jobs)]


def ablate_measure(work: Path, args: argparse.Namespace, timeout: float, name: str = "c",
                   ensemble: str = "off", what: Sequence[str] = ()) -> dict[str, Any]:
    [command] = ablate_commands(work, args, name, ensemble, what)
    took, ok = timed(command, timeout, work / f"{name}.log")
    log = (work / f"{name}.log").read_text(errors="replace")
    placement = next((line.split("(", 1)[1].rstrip(")") for line in log.splitlines()
                      if "runs planned" in line), "?")
    summaries = (json.loads(p.read_text()) for p in (work / name).glob("*/*/summary.json"))
    finished = sum(s.get("status") == "completed" for s in summaries)
    return {"wall": took, "done": ok, "result": f"{finished} runs completed; {placement}"}


def ensemble_commands(work: Path, args: argparse.Namespace) -> list[list[str]]:
    return ablate_commands(work, args, "e", "auto")


def ensemble_measure(work: Path, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    return ablate_measure(work, args, timeout, "e", "auto")


def grid_commands(work: Path, args: argparse.Namespace) -> list[list[str]]:
    return [*ablate_commands(work, args, "f-auto", "auto", NORMS_GRID),
            *ablate_commands(work, args, "f-off", "off", NORMS_GRID)]


def grid_measure(work: Path, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """The 60-run norms grid as ensembles, then run by run with what is left of the part's time."""
    start = time.monotonic()
    together = ablate_measure(work, args, timeout, "f-auto", "auto", NORMS_GRID)
    alone = ablate_measure(work, args, timeout - (time.monotonic() - start), "f-off", "off",
                           NORMS_GRID)
    ratio = (f"; auto {alone['wall'] / together['wall']:.2f}x as fast"
             if together["done"] and alone["done"] else "")
    return {"wall": time.monotonic() - start, "done": together["done"] and alone["done"],
            "result": f"auto: {together['wall']:.0f} s, {together['result']}; off: "
                      f"{alone['wall']:.0f} s, {alone['result']}{ratio}"}


def tests_commands(_: Path, __: argparse.Namespace) -> list[list[str]]:
    return [python("-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "4", "--dist", "loadgroup",
                   *TESTS)]


def tests_measure(work: Path, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    [command] = tests_commands(work, args)
    took, ok = timed(command, timeout, work / "d.log")
    lines = [line for line in (work / "d.log").read_text(errors="replace").splitlines()
             if line.strip()]
    return {"wall": took, "done": ok, "result": lines[-1].strip("= ") if lines else "no output"}


PARTS = (
    Part("a", "`seed` preset, 2000 iterations, compile on, dtype auto", 90, seed_commands,
         seed_measure),
    Part("b", "`seed` preset, 200 iterations, eager: float16 vs float32; fp16 killed and resumed",
         50, dtype_commands, dtype_measure),
    Part("c", "`make ablate ENSEMBLE=off` training: ladder + leave-one-out, 45 tutorial runs, W&B "
              "off, one process "
         "per run (GPU job default)", 100, ablate_commands, ablate_measure),
    Part("e", "the same 45 runs as ensembles (`ENSEMBLE=auto`): goal under 60 s", 50,
         ensemble_commands, ensemble_measure),
    Part("f", "`EXPERIMENTS=norms LRS=\"1e-3 2e-3 5e-3 1e-2\"` (60 runs): ENSEMBLE=auto, then off",
         100, grid_commands, grid_measure),
    # The last part may use what the others left unspent, up to its own timeout: the budget still
    # holds.
    Part("d", "CUDA-marked tests and the model/training tests", 85, tests_commands, tests_measure),
)


# ---- running and reading -------------------------------------------------------------------------
def timed(command: list[str], timeout: float, log: Path) -> tuple[float, bool]:
    """Run `command` (output appended to `log`) for at most `timeout` seconds: (seconds taken,
    finished with 0)."""
    start = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its whole group: ablate's workers too
            proc.wait()
            out.write(f"-- stopped at its timeout ({timeout:.0f} s)\n")
            return time.monotonic() - start, False
    return time.monotonic() - start, code == 0


def kill_after_evaluations(command: list[str], results: Path, evaluations: int, timeout: float,
                           log: Path) -> int:
    """Start a run, SIGKILL it once its metrics hold `evaluations` lines; the step of the last one
    it wrote."""
    deadline = time.monotonic() + timeout
    with log.open("a") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        while (proc.poll() is None and time.monotonic() < deadline
               and len(metrics(results)) < evaluations):
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    lines = metrics(results)
    return lines[-1]["step"] if lines else -1


def metrics(results: Path) -> list[dict[str, Any]]:
    found = list(results.glob("*/*/metrics.jsonl"))
    if not found:
        return []
    return [json.loads(line) for line in found[0].read_text().splitlines()
            if line.strip().endswith("}")]


def read_run(results: Path) -> dict[str, Any]:
    """The one run under `results`: its summary, and for a run stopped early its last evaluation's
    numbers."""
    found = list(results.glob("*/*/summary.json"))
    if not found:
        return {}
    summary = json.loads(found[0].read_text())
    config = json.loads((found[0].parent / "config.json").read_text())
    evals = metrics(results)
    rates = [m["tokens_per_sec"] for m in evals if m.get("tokens_per_sec")]
    last = evals[-1] if evals else {}
    # Throughput: the median evaluation window after the first (which holds compilation and
    # warm-up).
    steady = sorted(rates[1:] or rates)
    return summary | {"dtype": config["dtype"], "step": last.get("step", 0),
                      "tokens_per_sec": steady[len(steady) // 2] if steady else 0.0}


def compare_losses(reference: Path, resumed: Path) -> str:
    a, b = ([(m["step"], m["train_loss"], m["val_loss"]) for m in metrics(r)]
            for r in (reference, resumed))
    if a == b:
        return f"exact (all {len(a)} evaluations equal to the bit)"
    if [m[0] for m in a] != [m[0] for m in b]:
        return f"NOT the same evaluations (steps {[m[0] for m in a]} vs {[m[0] for m in b]})"
    worst = max(abs(x - y) / abs(x) for m, n in zip(a, b, strict=True) for x, y in zip(m[1:], n[1:],
                                                                                       strict=True))
    return f"not to the bit: losses within {worst:.1e} (relative)"


def peak_flops(dtype: str) -> float:
    import torch

    from benchmarks.train_speed import peak_matmul_flops

    return peak_matmul_flops(torch.device("cuda"), getattr(torch, dtype), torch.get_num_threads())


def mfu(run: dict[str, Any], peak: float) -> str:
    return (f"{100 * run['tokens_per_sec'] * run['train_flops_per_token'] / peak:.1f}% of "
            f"{peak / 1e12:.0f} TFLOP/s")


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def header() -> str:
    import torch

    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                 "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        driver = "?"
    return (f"## GPU check: {name} (compute capability {major}.{minor})\n\n"
            f"`make gpu-check` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC: torch "
            f"{torch.__version__}, CUDA {torch.version.cuda}, driver {driver}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPU cores.\n")


def section(head: str, rows: list[tuple[Part, dict[str, Any]]]) -> str:
    lines = [head, "| part | what | result | wall | within its timeout |",
             "| --- | --- | --- | --- | --- |"]
    for part, cells in rows:
        within = "yes" if cells["done"] else f"no (stopped at {cells['timeout']:.0f} s)"
        lines.append(f"| {part.key} | {part.what} | {cells.get('result', '-')} | "
                     f"{cells['wall']:.1f} s | {within} |")
    return "\n".join(lines) + "\n"


# ---- the command ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m benchmarks.gpu_check",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("--report", type=Path, default=ROOT / "results" / "gpu-check.md",
                   help="the Markdown section's file (default results/gpu-check.md); logs go "
                        "beside it")
    p.add_argument("--parts", default="a,b,c,e,f,d",
                   help="which parts, e.g. c,e (default all: a,b,c,e,f,d)")
    p.add_argument("--jobs", type=int, help="part c: parallel runs instead of the GPU default (try "
                                            "another JOBS=)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run, with the timeouts, and exit")
    return p


def data_path() -> Path | None:
    """The local Tiny Shakespeare copy the runs read (there is no network to download one)."""
    given = os.environ.get("NANOGPT_TINYSHAKESPEARE")
    for path in (Path(given) if given else None, SHARED_COPY,
                 ROOT.parent / SHARED_COPY.relative_to(ROOT)):
        if path and path.is_file():
            return path
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exits.run_command(lambda: _check(args), (ConfigError,),
                             "the report is not written; the parts' logs so far are in the work "
                             "folder")


def _check(args: argparse.Namespace) -> int:
    keys = [k.strip() for k in args.parts.split(",") if k.strip()]
    unknown = sorted(set(keys) - {p.key for p in PARTS})
    if unknown or not keys:
        raise ConfigError(f"--parts {args.parts}: choose among {','.join(p.key for p in PARTS)}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    parts = [p for p in PARTS if p.key in keys]
    # fresh run stores: nothing is cached from earlier runs
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if args.dry_run:
        print(f"gpu check (dry run): {len(parts)} part(s), each stopped at its timeout or when the "
              f"{BUDGET_SEC} s budget is spent, whichever comes first; report -> {args.report}")
        for part in parts:
            print(f"[{part.key}] {part.what} (timeout {part.timeout} s)")
            for command in part.commands(work, args):
                print("    " + " ".join(command))
        print("nothing written")
        work.rmdir()
        return 0
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("the GPU check needs a CUDA GPU and torch.cuda.is_available() is False "
                          "here; run it on a GPU machine (make gpu-check DRY_RUN=1 shows what it "
                          "runs)")
    data = data_path()
    if data is None:
        raise ConfigError(f"no local Tiny Shakespeare: set NANOGPT_TINYSHAKESPEARE=PATH or copy "
                          f"input.txt to {SHARED_COPY} (the check machine has no network to "
                          "download it)")
    os.environ |= {"NANOGPT_TINYSHAKESPEARE": str(data), "WANDB_MODE": "disabled",
                   "PYTHONUNBUFFERED": "1"}
    head = header()
    print(head, flush=True)
    started, rows = time.monotonic(), []
    for part in parts:
        # Never past the budget: a part gets its own timeout or what is left, whichever is less.
        timeout = min(part.timeout, BUDGET_SEC - 5 - (time.monotonic() - started))
        print(f"[{part.key}] {part.what} (timeout {timeout:.0f} s) ...", flush=True)
        cells = part.measure(work, args, timeout) | {"timeout": timeout}
        rows.append((part, cells))
        print(f"[{part.key}] {'done' if cells['done'] else 'STOPPED/FAILED'} in "
              f"{cells['wall']:.1f} s: {cells.get('result', '-')}", flush=True)
    text = section(head, rows)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    for log in work.glob("*.log"):
        (args.report.parent / f"gpu-check-{log.name}").write_text(log.read_text(errors="replace"))
    print(f"\n{text}\nreport: {args.report} (logs beside it); run stores in {work}", flush=True)
    return 0 if all(cells["done"] for _, cells in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

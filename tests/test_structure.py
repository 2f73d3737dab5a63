"""The layout rules a newcomer may rely on: what resolves the machine, and which rooms import which."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from experiments import config, machine
from experiments.config import resolve
from experiments.runner import train_run
from tests.conftest import ROOT

CLI_MODULES = {"experiments.run", "experiments.ablate", "experiments.sample", "sweeps.optuna", "sweeps.dashboard",
               "analysis.report"}


def test_a_run_resolves_its_device_and_dtype_once(tmp_path, tiny_corpus, monkeypatch):
    calls = {"resolve_device": 0, "with_device": 0}

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    counted(machine, "resolve_device")
    counted(machine, "with_device")  # machine's own reference to config.with_device
    cfg = resolve("smoke", overrides={"data": str(tiny_corpus), "max_iters": 2, "eval_interval": 2})
    summary = train_run(cfg, tmp_path, quiet=True)
    assert summary["status"] == "completed"
    assert calls == {"resolve_device": 1, "with_device": 1}
    assert machine.with_device is not config.with_device  # the counter really sat on the path


def test_planning_imports_neither_the_runner_nor_the_trainer_loop_callbacks():
    code = ("import sys, experiments.plan; "
            "print(sorted(m for m in ('experiments.runner', 'experiments.wandb_mirror', 'experiments.recorder', "
            "'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_library_room_imports_a_command_line_module():
    rooms = [p for folder in ("sweeps", "analysis", "benchmarks") for p in (ROOT / folder).glob("*.py")]
    assert len(rooms) > 20
    reaching = {}
    for path in rooms:
        module = f"{path.parent.name}.{path.stem}"
        found = (_imports(path) & CLI_MODULES) - {module}
        if found:
            reaching[module] = sorted(found)
    assert reaching == {}

"""The W&B sweep YAMLs: well formed, and every combination the agent would run is accepted by the
runner.

W&B sweeps cannot run offline (wandb #4586), so the agent's own argument builder
(`create_sweep_command_args`, the `--key=value` form behind `${args}`) expands each config
here, and the runner validates every resulting command with --dry-run.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from experiments import run, store
from experiments.definitions import get_experiment
from tests.conftest import ROOT, run_module

SWEEPS = sorted((ROOT / "sweeps").glob("wandb_*.yaml"))
METHODS = {"grid", "random", "bayes"}
DISTRIBUTIONS = {"uniform", "log_uniform_values", "int_uniform", "categorical", "constant"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def representatives(spec: dict[str, Any]) -> list[Any]:
    """The values of one parameter worth trying: each listed value, or a range's two ends."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def combinations(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every grid point; for a search, enough points that each parameter's every value and bound
    appears."""
    names = list(config["parameters"])
    options = [representatives(config["parameters"][n]) for n in names]
    if config["method"] == "grid":
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*options)]
    width = max(map(len, options))
    return [{n: opts[i % len(opts)] for n, opts in zip(names, options, strict=True)}
            for i in range(width)]


def agent_command(config: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command line `wandb agent` runs for one set of params
    (wandb_agent.Agent._command_run)."""
    macros = {"env": ["/usr/bin/env"], "interpreter": [sys.executable],
              "program": [config["program"]],
              **create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})}
    line = []
    for part in map(str, config["command"]):
        line += macros[part[2:-1]] if part.startswith("${") and part.endswith("}") else [part]
    return line


def test_there_is_a_ladder_grid_and_a_bayes_search():
    methods = {load(p)["method"]: p.name for p in SWEEPS}
    assert {"grid", "bayes"} <= set(methods), methods


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_config_is_well_formed(path):
    config = load(path)
    assert config["method"] in METHODS
    assert config["metric"]["goal"] in ("minimize", "maximize")
    assert (ROOT / config["program"]).is_file()
    command = config["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m",
                           "experiments.run"] and command[-1] == "${args}"
    for name, spec in config["parameters"].items():
        kinds = {"value", "values", "min"} & set(spec)
        assert len(kinds) == 1, f"{name}: give exactly one of value, values, or min/max"
        if "min" in spec:
            assert spec["min"] < spec["max"] and spec.get("distribution",
                                                          "uniform") in DISTRIBUTIONS, name
        if config["method"] == "grid":
            assert "min" not in spec, f"{name}: a grid needs listed values"
    if config["method"] == "bayes":
        stop = config["early_terminate"]
        assert stop["type"] == "hyperband" and stop["min_iter"] >= 1 and stop["eta"] >= 2


def test_ladder_grid_covers_every_rung_of_the_ladder():
    config = next(load(p) for p in SWEEPS if load(p)["method"] == "grid")
    rungs = [v.name for v in get_experiment("ladder").variants]
    assert config["parameters"]["variant"]["values"] == rungs


def test_metric_is_what_the_runner_records(tiny_corpus, tmp_path):
    out = run_module("experiments.run", "--preset", "smoke", "--data", tiny_corpus, "--results",
                     tmp_path, "--quiet")
    assert out.returncode == 0, out.stderr
    (record,) = [r for r in store.RunStore(tmp_path).runs() if not isinstance(r, str)]
    for path in SWEEPS:
        assert load(path)["metric"]["name"] in record.metrics[-1], path.name


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_runner_accepts_every_combination_the_agent_would_pass(path, capsys):
    config = load(path)
    points = combinations(config)
    for params in points:
        line = agent_command(config, params)
        assert all(f"--{k}={v}" in line for k, v in params.items())
        # in-process: the runner's own parser and checks
        assert run.main([*line[4:], "--dry-run"]) == 0, line
        resolved = json.loads(capsys.readouterr().out)
        assert {k: resolved[k] for k in params} == params  # every value reached the config
    # And one exactly as the agent would start it: a real process from the full command line.
    out = subprocess.run([*agent_command(config, points[-1]), "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

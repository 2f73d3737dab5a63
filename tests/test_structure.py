"""The layout rules a newcomer may rely on: what resolves the machine, and which rooms import
which."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import config, exits, machine
from experiments.config import resolve
from experiments.definitions import DefinitionError, _parse
from experiments.runner import train_run
from experiments.settings import ConfigError
from sweeps import dashboard
from tests.conftest import ROOT

CLI_MODULES = {"experiments.run", "experiments.ablate", "experiments.sample", "sweeps.optuna",
               "sweeps.dashboard", "analysis.report"}


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
    versions = {name: summary["environment"][name] for name in ("torch", "numpy", "wandb",
                                                                "optuna")}
    assert versions == {name: importlib.metadata.version(name) for name in versions}
    assert machine.with_device is not config.with_device  # the counter really sat on the path


def test_planning_imports_neither_the_runner_nor_the_trainer_loop_callbacks():
    code = ("import sys, experiments.plan; "
            "print(sorted(m for m in ('experiments.runner', 'experiments.wandb_mirror', "
            "'experiments.recorder', "
            "'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
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
    rooms = [p for folder in ("sweeps", "analysis", "benchmarks")
             for p in (ROOT / folder).glob("*.py")]
    assert len(rooms) > 20
    reaching = {}
    for path in rooms:
        module = f"{path.parent.name}.{path.stem}"
        found = (_imports(path) & CLI_MODULES) - {module}
        if found:
            reaching[module] = sorted(found)
    assert reaching == {}


def _raises(error: BaseException):
    def body() -> int:
        raise error
    return body


def test_every_command_line_ends_the_same_way(capsys):
    cases = [(ConfigError("bad --seeds"), 2, "error: bad --seeds"),
             (exits.CommandFailed("a worker died"), 1, "error: a worker died"),
             (OSError(28, "No space left on device", "/r/x.json"), 1,
              "error: cannot write /r/x.json (No space left"),
             (KeyboardInterrupt(), 130, "interrupted: finished runs are kept")]
    for error, code, says in cases:
        assert exits.run_command(_raises(error), (ConfigError,), "finished runs are kept") == code
        err = capsys.readouterr().err
        assert err.startswith(says) and len(err.splitlines()) == 1, err
    assert exits.run_command(lambda: 0, (ConfigError,), "") == 0


ROOMS = ("experiments", "sweeps", "analysis", "benchmarks")


def entry_points() -> list[str]:
    """Every module run as `python -m MODULE`."""
    return sorted(f"{path.parent.name}.{path.stem}" for room in ROOMS
                  for path in (ROOT / room).glob("*.py")
                  if '__name__ == "__main__"' in path.read_text())


def test_every_entry_point_ends_one_way_and_defines_no_shared_flag_again():
    """The shared parser (argparse's refusals end as ours do) and the shared ending
    (exits.run_command); --results, --data and --wandb only from experiments.cli; no module but
    experiments.exits writes an `error:` line."""
    sources = {m: (ROOT / m.replace(".", "/")).with_suffix(".py").read_text()
               for m in entry_points()}
    assert len(sources) == 16, sorted(sources)
    for module, text in sources.items():
        assert "exits.run_command(" in text and "exits.ArgumentParser(" in text, module
        assert "argparse.ArgumentParser(" not in text, module
    code = {p.name: p.read_text() for room in ROOMS for p in (ROOT / room).glob("*.py")}
    writes_error = [name for name, text in code.items()
                    if re.search(r"""["']error: """, text) and name != "exits.py"]
    flag = re.compile(r"""add_argument\(\s*["']--(results|data|wandb)["']""")
    defines_again = [name for name, text in code.items() if flag.search(text) and name != "cli.py"]
    assert (writes_error, defines_again) == ([], [])


def test_the_exit_codes_are_one_table_in_the_docs():
    """docs/running.md's table lists exactly the codes experiments.exits ends with, and success."""
    text = (ROOT / "docs" / "running.md").read_text()
    table = text.split("## Exit codes", 1)[1].split("\n\n")[2]
    codes = {int(row.split("|")[1]) for row in table.splitlines()[2:]}
    assert codes == {0, exits.FAILED, exits.BAD_INPUT, exits.INTERRUPTED}


NO_FLAGS = "every entry point: an unknown flag, a negative number in scientific notation"


@pytest.mark.reliability("bad input", NO_FLAGS)
@pytest.mark.parametrize("module", entry_points())
def test_every_entry_point_refuses_a_bad_command_line_in_one_line(module, capsys):
    """argparse's refusal ends as ours: one `error:` line pointing at --help, exit 2."""
    try:
        code = importlib.import_module(module).main(["--no-such-flag"])
    except SystemExit as e:  # argparse's refusal
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and err.endswith(" --help\n"), err


@pytest.mark.reliability("bad input", NO_FLAGS)
@pytest.mark.parametrize("args", [["experiments.ablate", "--lrs", "-1e-3", "2e-3"],
                                  ["sweeps.optuna", "create", "--study", "s", "--grid", "ladder",
                                   "--lrs", "-1e-3"]], ids=["ablate", "sweep"])
def test_a_negative_learning_rate_in_scientific_notation_is_refused_as_such(args, tmp_path,
                                                                              capsys):
    """`--lrs -1e-3` reaches the lr check (argparse took it for an option: 'expected at least one
    argument')."""
    module, *rest = args
    assert importlib.import_module(module).main([*rest, "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --lrs: learning rate -0.001 must be a finite number "
                                       "> 0\n")
    assert not any(tmp_path.iterdir())


def test_a_name_that_names_a_folder_is_checked_once_with_one_wording(tmp_path, capsys):
    wording = "must be letters, digits, '_', '-', '.' (it names a folder, so no paths)"
    with pytest.raises(ConfigError, match=re.escape(f"experiment '../x' {wording}")):
        resolve("smoke", experiment="../x")
    assert dashboard.main(["--study", "../x", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: study '../x' {wording}\n"
    definitions = tmp_path / "defs"
    definitions.mkdir()
    (definitions / "bad.yaml").write_text("name: x\nvariants:\n  - {name: ../a}\n")
    with pytest.raises(DefinitionError, match=re.escape(f"line 3: name '../a' {wording}")):
        _parse(definitions / "bad.yaml")


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of the import graph, as the modules along it; [] if there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module], path[len(path):] = "open", [module]
        for nxt in sorted(graph[module]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[module] = "done"
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_no_module_of_analysis_imports_itself_through_others():
    """Imports anywhere in a module count, inside functions too (a lazy import hides a cycle, it
    does not break it)."""
    modules = {f"analysis.{p.stem}": p for p in (ROOT / "analysis").glob("*.py")
               if p.stem != "__init__"}
    graph = {name: {m for m in modules if m != name
                    and any(i == m or i.startswith(f"{m}.") for i in _imports(path))}
             for name, path in modules.items()}
    assert len(graph) > 15
    assert graph["analysis.comparison"] >= {"analysis.tables", "analysis.lr_tables"}
    assert _cycle(graph) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # it finds one

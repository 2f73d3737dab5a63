"""Every command the README and docs/ show that trains nothing (a dry run, a listing, --help) still
works as shown."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TRAINS_NOTHING = ("--dry-run", "DRY_RUN=1", "--help", "--list-settings", "--list-variants",
                  "--print-folder")


def shown_commands() -> list[str]:
    """Commands in ```bash blocks and in `inline code` that start with make or python."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S)
                 for line in block.splitlines()]
        lines += re.findall(r"`((?:make|python|\.venv/bin/python) [^`]+)`", text)
        for line in lines:
            command = re.split(r"\s+#", line)[0].strip()
            if command.startswith(("make ", "python ", ".venv/bin/python ")) and any(
                    marker in command.split() or marker in command for marker in TRAINS_NOTHING):
                found.append(command)
    return sorted(set(found))


def test_the_pages_show_commands_that_train_nothing():
    commands = shown_commands()
    assert any(c.startswith("make ablate") for c in commands) and any("--help" in c
                                                                      for c in commands), commands
    assert len(commands) >= 5, commands


@pytest.mark.parametrize("command", shown_commands())
def test_a_shown_command_runs(command, tmp_path, capsys):
    words = shlex.split(command)
    if words[0] == "make":  # the real Makefile, with this interpreter and a fresh results folder
        out = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", sys.executable,
                              f"PY={sys.executable}", *words[1:], f"RESULTS={tmp_path}"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "nothing written" in out.stdout and not any(tmp_path.iterdir())
        return
    module, args = words[2], words[3:]  # python -m MODULE ARGS: its main, in this process
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        try:
            code = importlib.import_module(module).main([*args, *(["--results", str(tmp_path)]
                                                                  if "--dry-run" in args
                                                                 else [])])
        except SystemExit as e:  # argparse's --help
            code = e.code
    assert code == 0, capsys.readouterr().err
    assert printed.getvalue().strip()
    assert not any(tmp_path.iterdir())


def test_every_relative_link_of_the_pages_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path) and not (page.parent / path).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []

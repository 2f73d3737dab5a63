"""requirements.lock pins every dependency exactly, and this environment is what it pins (`make
setup` installs it).

Refresh it with `make lock` after changing pyproject.toml's dependencies.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def locked() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    return {_name(m.group(1)): m.group(2) for m in map(PIN.match, lines) if m}


def test_the_lock_pins_every_dependency_and_the_environment_matches_it():
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {_name(r) for r in [*project["dependencies"],
                                 *project["optional-dependencies"]["dev"]]}
    assert wanted <= set(pins), sorted(wanted - set(pins))
    assert {"torch", "numpy", "wandb", "optuna", "statsmodels", "wandb-workspaces"} <= set(pins)
    installed = {name: importlib.metadata.version(name) for name in pins}
    assert {n: v for n, v in installed.items()
            if v != pins[n]} == {}, "run `make setup` to install requirements.lock"

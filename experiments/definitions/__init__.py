"""Experiment definitions: plain YAML files beside this module, one experiment each.

A definition lists named variants, each a set of settings applied over a preset's full model.
`cumulative: true` makes every variant start from the one before (the ladder). The value
`preset` stands for the preset's own full-model value. Add an experiment by dropping one more
YAML file here, or in a folder named by $NANOGPT_EXPERIMENTS.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from nanogpt.model import ModelConfig
from nanogpt.train import TrainConfig

HERE = Path(__file__).parent
USER_DIR_ENV = "NANOGPT_EXPERIMENTS"
_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig) + dataclasses.fields(TrainConfig)}


class DefinitionError(ValueError):
    """A definition file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Variant:
    name: str
    adds: str
    set: dict[str, Any]
    only_if: str | None = None  # a setting that must be truthy in the preset for this variant to run
    component: str = ""  # the model component it is about: analysis colours variants by it


@dataclass(frozen=True)
class Experiment:
    name: str
    job_type: str
    description: str
    cumulative: bool
    compare: str  # "previous" (ladder) or a variant name (leave-one-out compares with "full")
    variants: tuple[Variant, ...]
    path: Path
    preset: str | None = None  # the preset it runs on unless one is given

    def variant_names(self, preset_settings: dict[str, Any]) -> list[str]:
        """The variants that apply to a preset (e.g. no `no_dropout` where there is no dropout)."""
        return [v.name for v in self.variants if not v.only_if or preset_settings.get(v.only_if)]

    def settings(self, variant: str, preset_settings: dict[str, Any]) -> dict[str, Any]:
        """The settings a variant changes, with `preset` replaced by the preset's value."""
        names = [v.name for v in self.variants]
        chain = self.variants[: names.index(variant) + 1] if self.cumulative else [self.variants[names.index(variant)]]
        merged: dict[str, Any] = {}
        for v in chain:
            merged |= v.set
        return {k: preset_value(k, preset_settings) if val == "preset" else val for k, val in merged.items()}


def preset_value(key: str, preset_settings: dict[str, Any]) -> Any:
    return preset_settings.get(key, _FIELDS[key].default)


def one_line(e: Exception) -> str:
    """A YAML error as one line: where it is and what is wrong."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(e).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _parse(path: Path) -> Experiment:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DefinitionError(f"{path}: not valid YAML ({one_line(e)}); fix the file's syntax") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("variants"), list) or not raw["variants"]:
        raise DefinitionError(f"{path}: needs a mapping with a non-empty 'variants' list")
    variants = []
    for i, item in enumerate(raw["variants"]):
        if not isinstance(item, dict) or "name" not in item:
            raise DefinitionError(f"{path}: variant #{i + 1} needs a 'name'")
        settings = item.get("set") or {}
        if not isinstance(settings, dict):
            raise DefinitionError(f"{path}: variant '{item['name']}': 'set' must be a mapping")
        unknown = sorted(set(settings) - set(_FIELDS))
        if unknown:
            raise DefinitionError(f"{path}: variant '{item['name']}' sets unknown setting(s) {', '.join(unknown)}")
        variants.append(Variant(str(item["name"]), str(item.get("adds", "")), settings, item.get("only_if"),
                                str(item.get("component", ""))))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise DefinitionError(f"{path}: variant names repeat: {', '.join(sorted(names))}")
    compare = raw.get("compare", "previous")
    if compare != "previous" and compare not in names:
        raise DefinitionError(f"{path}: compare '{compare}' is neither 'previous' nor one of its variants")
    return Experiment(
        name=str(raw.get("name", path.stem)), job_type=str(raw.get("job_type", path.stem)),
        description=str(raw.get("description", "")), cumulative=bool(raw.get("cumulative", False)),
        compare=compare, variants=tuple(variants), path=path, preset=raw.get("preset"),
    )


@cache
def _load_all(user_dir: str | None) -> dict[str, Experiment]:
    paths = sorted(HERE.glob("*.yaml")) + (sorted(Path(user_dir).glob("*.yaml")) if user_dir else [])
    found: dict[str, Experiment] = {}
    for path in paths:
        experiment = _parse(path)
        found[experiment.name] = experiment
    return found


def experiments() -> dict[str, Experiment]:
    return _load_all(os.environ.get(USER_DIR_ENV))


def get_experiment(name: str) -> Experiment:
    known = experiments()
    if name not in known:
        raise DefinitionError(f"unknown experiment '{name}'; choose one of {', '.join(known)}")
    return known[name]


def variant_settings(variant: str, preset_settings: dict[str, Any]) -> dict[str, Any]:
    """Settings for a variant name, from the first definition that has it ('full' changes nothing)."""
    for experiment in experiments().values():
        if variant in {v.name for v in experiment.variants}:
            return experiment.settings(variant, preset_settings)
    known = sorted({v.name for e in experiments().values() for v in e.variants})
    raise DefinitionError(f"unknown variant '{variant}'; choose one of {', '.join(known)}")

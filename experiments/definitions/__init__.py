"""Experiment definitions: plain YAML files beside this module, one experiment each.

A definition lists named variants, each a set of settings applied over the experiment's base
model (a preset, with any --set overrides). `cumulative: true` makes every variant start from
the one before (the ladder). The value `preset` stands for the base model's own value. An
optional top-level `preset:` names the preset used when the user gives none, and the optional
`lrs:`, `widths:` and `depths:` (lists of values) give the experiment axes of its own: every
variant then trains at each point (`--lrs`, `--widths`, `--depths` on the command line replace a
list; see experiments.axes and experiments.plan). Add an experiment by dropping one more YAML file
here, or in a folder named by $NANOGPT_EXPERIMENTS.

Every value, of every key, is parsed to its type when the file is read, by the `coerce` that types
--set (so `cumulative: "false"` is false, and a number where text belongs is refused); an unknown
key, a value of the wrong type, a condition on an unknown setting, or a name defined twice is an
error naming the file and, where YAML gives it, the line. Merge keys follow the YAML spec: in
`<<: [*a, *b]` the earlier mapping wins, and the mapping's own keys win over both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from experiments.axes import AXES, Grid, ordered
from experiments.definitions.yaml_lines import DuplicateKeyError, line_of, load, one_line
from experiments.presets import PRESETS
from experiments.settings import MODEL_AND_TRAIN, ConfigError, canonical, check_name, coerce

HERE = Path(__file__).parent
USER_DIR_ENV = "NANOGPT_EXPERIMENTS"
PRESET_REF = "preset"  # a `set` value meaning "the base model's value"
TOP_KEYS = ("name", "job_type", "description", "preset", "cumulative", "compare",
            *(a.plural for a in AXES), "variants")
VARIANT_KEYS = ("name", "adds", "component", "set", "only_if")


class DefinitionError(ValueError):
    """A definition file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Variant:
    name: str
    adds: str
    set: dict[str, Any]  # typed values; PRESET_REF where the base model's value is meant
    # a setting that must be truthy in the base model for this variant to run
    only_if: str | None = None
    component: str | None = None  # a label analysis colours by


@dataclass(frozen=True)
class Experiment:
    name: str
    job_type: str
    description: str
    cumulative: bool
    compare: str  # "previous" (ladder) or a variant name (leave-one-out compares with "full")
    variants: tuple[Variant, ...]
    path: Path
    preset: str | None = None  # the preset used when none is given
    axes: Grid = field(default_factory=dict)  # its own axes by name (empty: the base model's point)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def applicable(self, base: dict[str, Any]) -> list[Variant]:
        """The variants that apply to a base model (e.g. no `no_dropout` where there is no
        dropout)."""
        return [v for v in self.variants if not v.only_if or base[v.only_if]]

    def _merged(self, variant: str) -> dict[str, Any]:
        names = [v.name for v in self.variants]
        chain = (self.variants[: names.index(variant) + 1] if self.cumulative
                 else [self.variant(variant)])
        merged: dict[str, Any] = {}
        for v in chain:
            merged |= v.set
        return merged

    def changes(self, variant: str, base: dict[str, Any]) -> dict[str, Any]:
        """The settings a variant sets, `preset` read from the base model."""
        return {
            k: base[k] if val == PRESET_REF else val for k, val in self._merged(variant).items()}

    def fixes(self, variant: str) -> set[str]:
        """The settings a variant sets to a value of its own (not `preset`): --set cannot change
        them."""
        return {k for k, val in self._merged(variant).items() if val != PRESET_REF}


def _typed(raw: dict, key: str, hint: Any, path: Path, default: Any = None,
           variant: str | None = None) -> Any:
    """A definition key's value as its type, through the `coerce` that types `set:` values (so
    `cumulative: "false"` is false, as --set reads it); absent: `default`; of another type:
    DefinitionError naming file, line, key and the type it needs."""
    if key not in raw:
        return default
    try:
        return coerce(key, raw[key], hint)
    except ConfigError as e:
        within = f" variant '{variant}':" if variant else ""
        raise DefinitionError(f"{path}{line_of(raw, key)}:{within} {e}") from None


def _name(raw: dict, path: Path, default: str | None = None) -> str:
    """An experiment's or a variant's name: it names run folders, so no paths."""
    return check_name(f"{path}{line_of(raw, 'name')}: name",
                      _typed(raw, "name", str, path, default), DefinitionError)


def _settings(raw: Any, path: Path, variant: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: variant '{variant}': 'set' must be a mapping of settings")
    out = {}
    named: dict[str, str] = {}  # a setting's name now -> the name the file gives it by
    for key, value in raw.items():
        at = f"{path}{line_of(raw, key)}: variant '{variant}'"
        if canonical(key) not in MODEL_AND_TRAIN:
            raise DefinitionError(f"{at}: unknown setting '{key}'; see python -m experiments.run "
                                  "--list-settings")
        if canonical(key) in out:
            raise DefinitionError(f"{at}: sets {canonical(key)} twice (as {named[canonical(key)]} "
                                  f"and as {key}); keep one")
        named[canonical(key)] = key
        try:
            out[canonical(key)] = (value if value == PRESET_REF
                                   else coerce(key, value, MODEL_AND_TRAIN[canonical(key)]))
        except ConfigError as e:
            raise DefinitionError(f"{at}: {e}") from None
    return out


def _variant(item: Any, path: Path, number: int, line: str) -> Variant:
    if not isinstance(item, dict) or "name" not in item:
        raise DefinitionError(f"{path}{line}: variant #{number} needs a 'name'")
    name = _name(item, path)
    unknown = [k for k in item if k not in VARIANT_KEYS]
    if unknown:
        raise DefinitionError(f"{path}{line_of(item, unknown[0])}: variant '{name}': unknown key "
                              f"'{unknown[0]}'; allowed: {', '.join(VARIANT_KEYS)}")
    only_if = _typed(item, "only_if", str, path, variant=name)
    only_if = None if only_if is None else canonical(only_if)
    if only_if is not None and only_if not in MODEL_AND_TRAIN:
        raise DefinitionError(f"{path}{line_of(item, 'only_if')}: variant '{name}': only_if names "
                              f"unknown setting '{only_if}'; use a setting from --list-settings")
    settings = item.get("set")
    return Variant(name, _typed(item, "adds", str, path, "", name),
                   _settings({} if settings is None else settings,
                   path, name), only_if, _typed(item, "component", str, path, variant=name))


def _parse(path: Path) -> Experiment:
    try:
        raw = load(path)
    except (yaml.YAMLError, UnicodeDecodeError, DuplicateKeyError) as e:
        raise DefinitionError(f"{path}: not valid YAML ({one_line(e)}); fix the file's "
                              "syntax") from None
    if (not isinstance(raw, dict) or not isinstance(raw.get("variants"), list)
        or not raw["variants"]):
        raise DefinitionError(f"{path}: needs a mapping with a non-empty 'variants' list")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise DefinitionError(f"{path}{line_of(raw, unknown[0])}: unknown key '{unknown[0]}'; "
                              f"allowed: {', '.join(TOP_KEYS)}")
    variants = [_variant(item, path, i + 1,
                         line_of(item, "name")) for i, item in enumerate(raw["variants"])]
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DefinitionError(f"{path}: variant name(s) defined twice: {', '.join(repeated)}; "
                              "rename one")
    compare = _typed(raw, "compare", str, path, "previous")
    if compare != "previous" and compare not in names:
        raise DefinitionError(f"{path}: compare '{compare}' is neither 'previous' nor one of its "
                              "variants")
    preset = _typed(raw, "preset", str, path)
    if preset is not None and preset not in PRESETS:
        raise DefinitionError(f"{path}{line_of(raw, 'preset')}: unknown preset '{preset}'; choose "
                              f"one of {', '.join(PRESETS)}")
    axes = {}
    for axis in (a for a in AXES if a.plural in raw):
        try:
            axes[axis.name] = axis.parse(raw[axis.plural], f"'{axis.plural}'")
        except ConfigError as e:
            raise DefinitionError(f"{path}{line_of(raw, axis.plural)}: {e}") from None
    return Experiment(
        name=_name(raw, path, path.stem), job_type=_typed(raw, "job_type", str, path, path.stem),
        description=_typed(raw, "description", str, path, ""),
        cumulative=_typed(raw, "cumulative", bool, path, False), compare=compare,
        variants=tuple(variants), path=path, preset=preset, axes=ordered(axes),
    )


@cache
def _load_all(user_dir: str | None) -> dict[str, Experiment]:
    paths = sorted(HERE.glob("*.yaml")) + (sorted(Path(user_dir).glob("*.yaml")) if user_dir
                                           else [])
    found: dict[str, Experiment] = {}
    for path in paths:
        experiment = _parse(path)
        if experiment.name in found:
            raise DefinitionError(f"experiment '{experiment.name}' is defined twice: in "
                                  f"{found[experiment.name].path} and in {path}; rename one")
        found[experiment.name] = experiment
    return found


def experiments() -> dict[str, Experiment]:
    return _load_all(os.environ.get(USER_DIR_ENV))


def get_experiment(name: str) -> Experiment:
    known = experiments()
    if name not in known:
        raise DefinitionError(f"unknown experiment '{name}'; choose one of {', '.join(known)}")
    return known[name]


def candidates(name: str) -> list[tuple[Experiment, Variant]]:
    """The variants `name` may mean: `experiment/variant` names one; a bare name, every
    experiment's."""
    experiment, _, variant = name.rpartition("/")
    scope = [get_experiment(experiment)] if experiment else list(experiments().values())
    found = [(e, e.variant(variant)) for e in scope if variant in {v.name for v in e.variants}]
    if not found:
        known = [f"{e.name}/{v.name}" for e in scope for v in e.variants]
        raise DefinitionError(f"unknown variant '{name}'; choose one of {', '.join(known)}")
    return found

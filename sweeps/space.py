"""A hyperparameter search space, declared in a YAML file (see sweeps/search_space.yaml).

    preset: tutorial                 # the starting config
    variant: full                    # component switches fixed by a variant...
    seed: 0
    n_trials: 30
    set: {lr_schedule: cosine}       # settings fixed for every trial
    pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 1000}   # or hyperband, or none
    params:                          # one trial.suggest_* each
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      n_layer: {type: int, low: 1, high: 4}
      norm_position: {type: categorical, choices: [pre, post]}              # ...or searched

Validated once, here, with messages that name the file and the parameter. A combination that no
single value reveals (n_embd not divisible by n_head) is caught per trial and recorded as invalid.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from experiments.config import SETTINGS, ConfigError, base_model, find_variant, parse_setting, resolve
from experiments.settings import canonical

if TYPE_CHECKING:
    import optuna

TOP_KEYS = {"preset", "variant", "seed", "n_trials", "set", "pruner", "params"}
NOT_HYPERPARAMETERS = {"data", "device", "compile", "experiment"}
PARAM_KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
              "categorical": {"choices"}}
PRUNERS = ("median", "hyperband", "none")
MAX_COMBINATIONS = 4096  # of parameter values tried to check that each value can give a valid model


class SpaceError(ValueError):
    """A search-space file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SearchSpace:
    preset: str
    params: dict[str, dict[str, Any]]
    variant: str = "full"
    seed: int = 0
    n_trials: int = 20
    set: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's settings: one suggest_* call per declared parameter."""
        chosen = {}
        for name, p in self.params.items():
            if p["type"] == "categorical":
                chosen[name] = trial.suggest_categorical(name, p["choices"])
            elif p["type"] == "int":
                chosen[name] = trial.suggest_int(name, p["low"], p["high"], step=p.get("step", 1),
                                                 log=p.get("log", False))
            else:
                chosen[name] = trial.suggest_float(name, p["low"], p["high"], step=p.get("step"),
                                                   log=p.get("log", False))
        return chosen

    def make_pruner(self) -> optuna.pruners.BasePruner:
        import optuna

        kwargs = {k: v for k, v in self.pruner.items() if k != "type"}
        kind = self.pruner["type"]
        if kind == "none":
            return optuna.pruners.NopPruner()
        if kind == "hyperband":
            return optuna.pruners.HyperbandPruner(**kwargs)
        return optuna.pruners.MedianPruner(**kwargs)


def load(path: Path) -> SearchSpace:
    """Read and validate a search-space YAML file (safe-loaded)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SpaceError(f"{path}: cannot read the search space ({e.strerror}); see "
                         "sweeps/search_space.yaml") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpaceError(f"{path}: not valid YAML ({e}); fix the file's syntax") from None
    return parse(raw, str(path))


def parse(raw: Any, source: str) -> SearchSpace:
    """Validate a search space given as a mapping (from a file, or from a study's stored spec)."""
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: expected a mapping with 'preset' and 'params'")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SpaceError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(TOP_KEYS))}")
    if not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise SpaceError(f"{source}: 'params' must map each searched setting to its range, e.g. "
                         "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    n_trials = raw.get("n_trials", 20)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise SpaceError(f"{source}: n_trials must be a whole number >= 1, got {n_trials!r}")
    fixed = raw.get("set") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{source}: 'set' must be a mapping of fixed settings")
    # Names stay as written (an Optuna study knows its params by them); each is compared by its name
    # now.
    params = {
        name: _param(name, p, f"{source}: param '{name}'") for name, p in raw["params"].items()}
    both = sorted(name for name in params if canonical(name) in set(map(canonical, fixed)))
    if both:
        raise SpaceError(f"{source}: {', '.join(both)} both searched and fixed in 'set'; keep one")
    space = SearchSpace(preset=str(raw.get("preset", "tutorial")), params=params,
                        variant=str(raw.get("variant", "full")), seed=raw.get("seed", 0),
                        n_trials=n_trials, set=fixed,
                        pruner=_pruner(raw.get("pruner") or {"type": "median"}, source))
    try:
        _check_searchable(space, source)
    except SpaceError:
        raise
    # ConfigError, DefinitionError: the preset, the variant, the fixed settings
    except ValueError as e:
        raise SpaceError(f"{source}: {e}") from None
    try:
        space.make_pruner()  # optuna checks the pruner's own arguments
    except (TypeError, ValueError) as e:
        raise SpaceError(f"{source}: pruner {space.pruner}: {e}") from None
    return space


def _param(name: str, p: Any, where: str) -> dict[str, Any]:
    if canonical(name) not in SETTINGS or canonical(name) in NOT_HYPERPARAMETERS:
        raise SpaceError(f"{where}: not a model or training setting; see python -m experiments.run "
                         "--list-settings")
    kind = p.get("type") if isinstance(p, dict) else None
    if kind not in PARAM_KEYS:
        raise SpaceError(f"{where}: needs type float, int or categorical, e.g. {{type: int, low: "
                         f"1, high: 4}}")
    extra = sorted(set(p) - PARAM_KEYS[kind] - {"type"})
    if extra:
        raise SpaceError(f"{where}: unknown key(s) {', '.join(extra)} for type {kind}")
    hint = SETTINGS[canonical(name)]
    if kind == "categorical":
        choices = p.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: categorical needs a non-empty list of choices")
        return {"type": kind, "choices": [_value(name, c, where) for c in choices]}
    wanted = hint.__name__ if hint in (int, float) else "categorical"  # bool, text, choices
    if kind != wanted:
        raise SpaceError(f"{where}: is a {getattr(hint, '__name__', 'choice')} setting; declare it "
                         f"as type {wanted}")
    if "low" not in p or "high" not in p:
        raise SpaceError(f"{where}: {kind} needs low and high")
    out = {"type": kind, "low": _value(name, p["low"], where),
           "high": _value(name, p["high"], where)}
    if not out["low"] < out["high"]:
        raise SpaceError(f"{where}: low ({out['low']}) must be below high ({out['high']})")
    if p.get("log"):
        if out["low"] <= 0:
            raise SpaceError(f"{where}: a log range needs low > 0")
        out["log"] = True
    if "step" in p:
        step = _value(name, p["step"], where)
        if step <= 0 or p.get("log"):
            raise SpaceError(f"{where}: step must be positive, and cannot be combined with log")
        out["step"] = step
    return out


def _value(name: str, value: Any, where: str) -> Any:
    """The value parsed as the setting's type (so YAML's `3e-4`, read as text, still works)."""
    try:
        return parse_setting(name, value)
    except ConfigError as e:
        raise SpaceError(f"{where}: {e}") from None


def _pruner(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("type") not in PRUNERS:
        raise SpaceError(f"{source}: pruner needs a type: one of {', '.join(PRUNERS)}, "
                         "e.g. {type: median, n_warmup_steps: 1000}")
    return dict(raw)


def _candidates(p: dict[str, Any]) -> list[Any]:
    """The values of a parameter worth trying: every choice, an int range whole (up to 64 values),
    else its ends."""
    if p["type"] == "categorical":
        return p["choices"]
    if p["type"] == "int" and not p.get("log") and (p["high"] - p["low"]) // p.get("step", 1) < 64:
        return list(range(p["low"], p["high"] + 1, p.get("step", 1)))
    return [p["low"], p["high"]]


def _whole(p: dict[str, Any]) -> bool:
    """Whether `_candidates` tries every value of an int parameter. Choices are tried whole; a float
    range is tried at its ends and counts as whole: no setting's validity depends on a float between
    them."""
    return (p["type"] != "int"
            or len(_candidates(p)) == len(range(p["low"], p["high"] + 1, p.get("step", 1))))


def _combinations(space: SearchSpace, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` combinations of the parameters' candidate values. Floats last: they vary
    fastest, so both ends of every range are tried even when the product is cut."""
    names = sorted(space.params, key=lambda n: space.params[n]["type"] == "float")
    combos = itertools.product(*(_candidates(space.params[n]) for n in names))
    return [dict(zip(names, combo, strict=True)) for combo in itertools.islice(combos, limit)]


def example(space: SearchSpace) -> dict[str, Any]:
    """The first combination of searched values that gives a valid model (a checked space has one):
    the settings its base config is checked against the corpus with, in place of the preset's own
    values."""
    for combo in _combinations(space, MAX_COMBINATIONS):
        try:
            resolve(space.preset, space.variant, space.seed, space.set | combo)
        except ValueError:
            continue
        return combo
    return {}


def _check_searchable(space: SearchSpace, source: str) -> None:
    """Refuse, before a study exists, a parameter the variant fixes anyway, a space of which no
    combination is a valid model, and a value that gives a valid model with no choice of the other
    parameters (a head count that divides no width). The preset's own value of a searched setting
    plays no part: the search replaces it."""
    searched = {canonical(n) for n in space.params}
    find_variant(space.preset, space.variant, base_model(space.preset, space.set), space.set,
                 searched)
    # one more than is tried: was the product cut?
    combos = _combinations(space, MAX_COMBINATIONS + 1)
    names = list(combos[0])  # a space has at least one parameter
    valid: set[tuple[str, Any]] = set()
    first_error = None
    for combo in combos[:MAX_COMBINATIONS]:
        if set(combo.items()) <= valid:
            continue
        try:
            resolve(space.preset, space.variant, space.seed, space.set | combo)
        except ValueError as e:
            first_error = first_error or e
            continue
        valid |= set(combo.items())
    if not valid:
        raise SpaceError(f"{source}: no combination of the searched values gives a valid model "
                         f"({first_error}); fix 'set' or widen the ranges")
    for name in names:
        # Blame a value only when every value of the other parameters was tried with it.
        if (len(combos) > MAX_COMBINATIONS
            or not all(_whole(space.params[n]) for n in names if n != name)):
            continue
        for value in _candidates(space.params[name]):
            if (name, value) not in valid:
                raise SpaceError(f"{source}: param '{name}': {name}={value} gives no valid model "
                                 "with any choice of the other parameters; drop that value or "
                                 "widen the others")

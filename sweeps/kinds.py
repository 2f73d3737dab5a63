"""The two kinds of study, and which run each of their trials trains.

- `GridSweep`: an ablation grid, every (variant, seed) of some experiment definitions exactly once,
  and with axes (`--lrs`, `--widths`, `--depths`, a definition's own) every (variant, point, seed).
  The runs come from `experiments.plan.plan`, so the study reproduces `make ablate` (same run ids,
  same manifest). Every point is enqueued up front and workers only take enqueued trials: a shared
  GridSampler would run about N-1 duplicates with N workers. No pruner: a pruned point is never
  rerun.
- `SearchSweep`: TPE over a declared search space, pruned on the val loss reported at every eval.

A study stores its kind and settings in its own user attrs, so a worker on another machine needs
only the storage and the study name. Trials are labelled (study, trial, group = study, job_type
sweep) without changing the config hash: a retried trial trains the same run folder and resumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import manifest
from experiments.axes import AXES, Grid, ordered
from experiments.config import RunConfig, base_model, owned_settings, resolve, variant_settings
from experiments.definitions import get_experiment
from experiments.machine import Prepared, prepare
from experiments.plan import Plan, plan
from sweeps.space import SearchSpace, example, parse

if TYPE_CHECKING:
    import optuna
    import torch

    from nanogpt.data import Corpus

SPEC_ATTR = "sweep"  # the study user attr holding the kind and settings
JOB_TYPE = "sweep"


class NotAGridPoint(LookupError):  # noqa: N818 - a condition, not a bug
    """A worker got a fresh trial instead of an enqueued grid point (another took the last one)."""


def _labels(study: str, trial: int) -> dict[str, Any]:
    return {"experiment": study, "study": study, "trial": trial, "group": study,
            "job_type": JOB_TYPE}


def run_command(preset: str, variant: str, seed: int, overrides: dict[str, Any]) -> str:
    """The runner command line that trains the same config outside the study."""
    sets = "".join(f" --set {k}={v}" for k, v in overrides.items())
    return f"python -m experiments.run --preset {preset} --variant {variant} --seed {seed}{sets}"


@dataclass(frozen=True)
class GridSweep:
    preset: str
    experiments: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    axes: Grid = field(default_factory=dict)  # for every experiment (empty: the definitions' own)
    kind = "grid"  # a class attribute, not a field

    def grid(self, study: str, results: Path) -> tuple[Plan, Corpus]:
        return plan(self.preset, self.seeds, self.experiments, results, study, self.overrides,
                    self.axes)

    def sampler(self) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.RandomSampler()  # never consulted: every grid parameter is enqueued

    def pruner(self) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.NopPruner()

    def points(self, study: str, results: Path) -> list[tuple[dict[str, Any], str]]:
        """(params, run_id) of every grid point, in training order."""
        grid, _ = self.grid(study, results)
        names = _axis_params(grid)
        return [(_params(c, names), c.run_id) for c in grid.runs]

    def new_trials_left(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        return 0  # a grid only runs what was enqueued

    def bind(self, study: str, results: Path) -> BoundGrid:
        grid, corpus = self.grid(study, results)
        manifest.record(grid.folder, grid.manifest)  # analysis reads it as a `make ablate` folder
        names = _axis_params(grid)
        runs = {tuple(_params(c, names).values()): c for c in grid.runs}
        return BoundGrid(self, study, names, runs, corpus, grid.device)

    def command(self, params: dict[str, Any]) -> str:
        """The single run of a grid point: its variant named with its experiment, without the
        overrides the variant keeps its own value against (the single run would refuse them), with
        the point's settings. An lr a variant scales from its own (the bigram's) is given too, and
        refused: train that point with make ablate."""
        experiment = next(e for e in map(get_experiment, self.experiments)
                          if params["variant"] in {v.name for v in e.variants})
        variant = experiment.variant(params["variant"])
        owns = owned_settings(self.preset, experiment, variant)
        base = base_model(self.preset, self.overrides)
        own = variant_settings(self.preset, experiment, variant, base)
        moved: dict[str, Any] = {}
        for axis in (a for a in AXES if a.setting in params):
            value = params[axis.setting]
            if axis.setting not in owns:  # with what moves along (width's n_head) where it does
                moved |= {k: v for k, v in axis.settings(base, value).items()
                          if k not in owns and (k == axis.setting or v != base[k])}
            elif value != own[axis.setting]:
                moved[axis.setting] = value
        return run_command(self.preset, f"{experiment.name}/{params['variant']}", params["seed"],
                           {k: v for k, v in self.overrides.items() if k not in owns} | moved)


def _axis_params(grid: Plan) -> tuple[str, ...]:
    """The settings that tell a grid's points apart (its axes'), beside variant and seed."""
    present = {a for v in grid.variants for a in v.point}
    return tuple(a.setting for a in AXES if a.name in present)


def _params(cfg: RunConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """A grid point's trial params: the settings the run trains at tell its points apart."""
    flat = cfg.flat()
    return {"variant": cfg.variant, "seed": cfg.seed, **{name: flat[name] for name in names}}


@dataclass(frozen=True)
class BoundGrid:
    sweep: GridSweep
    study: str
    axis_params: tuple[str, ...]  # the trial params beside variant and seed (lr, n_embd, n_layer)
    runs: dict[tuple[Any, ...], RunConfig]  # by trial params: variant, seed, *axis_params
    corpus: Corpus  # loaded once by the plan, shared by every trial
    device: torch.device  # resolved once by the plan

    def config(self, trial: optuna.Trial) -> Prepared:
        if "run_id" not in trial.user_attrs:
            raise NotAGridPoint(f"trial {trial.number} is not an enqueued grid point")
        variants = list(dict.fromkeys(key[0] for key in self.runs))
        seeds = list(self.sweep.seeds)
        key = (trial.suggest_categorical("variant", variants),
               trial.suggest_categorical("seed", seeds))
        for i, name in enumerate(self.axis_params, start=2):
            key += (trial.suggest_categorical(name, sorted({k[i] for k in self.runs})),)
        cfg = dataclasses.replace(self.runs[key], **_labels(self.study, trial.number))
        return Prepared(cfg, self.corpus, self.device)


@dataclass(frozen=True)
class SearchSweep:
    space: SearchSpace
    kind = "search"

    def sampler(self) -> optuna.samplers.BaseSampler:
        import optuna

        # constant_liar: parallel workers do not all sample next to the same running trial.
        return optuna.samplers.TPESampler(constant_liar=True)

    def pruner(self) -> optuna.pruners.BasePruner:
        return self.space.make_pruner()

    def points(self, study: str, results: Path) -> list[tuple[dict[str, Any], str]]:
        """None: TPE proposes each trial when a worker asks. The base config is checked against the
        corpus here, so a bad --data fails before any storage is touched."""
        space = self.space
        prepare(resolve(space.preset, space.variant, space.seed, space.set | example(space)))
        return []

    def new_trials_left(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        finished = sum("outcome" in t.user_attrs for t in trials)
        return max(0, self.space.n_trials - finished)

    def bind(self, study: str, results: Path) -> BoundSearch:
        return BoundSearch(self, study)

    def command(self, params: dict[str, Any]) -> str:
        return run_command(self.space.preset, self.space.variant, self.space.seed,
                           self.space.set | params)


@dataclass
class BoundSearch:
    sweep: SearchSweep
    study: str
    corpus: Corpus | None = None  # loaded by the first trial, reused by the rest

    def config(self, trial: optuna.Trial) -> Prepared:
        space = self.sweep.space
        params = space.suggest(trial)
        cfg = resolve(space.preset, space.variant, space.seed, space.set | params,
                      **_labels(self.study, trial.number))
        ready = prepare(cfg, self.corpus)
        self.corpus = ready.corpus
        return ready


Sweep = GridSweep | SearchSweep


def to_attr(sweep: Sweep) -> dict[str, Any]:
    if isinstance(sweep, GridSweep):
        return {"kind": "grid", "preset": sweep.preset, "experiments": list(sweep.experiments),
                "seeds": list(sweep.seeds), "overrides": sweep.overrides,
                **{a.plural: list(sweep.axes[a.name]) for a in AXES if a.name in sweep.axes}}
    return {"kind": "search", "space": sweep.space.to_dict()}


def from_attr(attr: dict[str, Any], study: str) -> Sweep:
    if attr.get("kind") == "grid":
        return GridSweep(attr["preset"], tuple(attr["experiments"]), tuple(attr["seeds"]),
                         attr["overrides"],
                         ordered({a.name: attr[a.plural] for a in AXES if a.plural in attr}))
    return SearchSweep(parse(attr["space"], f"study {study}"))

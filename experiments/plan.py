"""The plan of an ablation: every (experiment, variant, point, seed) run, resolved and checked;
writes nothing.

The base model is the preset with the --set / SET= overrides applied; each variant's own settings
then apply on top (see experiments.config). Two variants of one experiment that resolve to the same
config (a rung whose one change is a no-op on this base model, experiments.canonical) are one
model: the plan says so and trains it once; where that holds at every point, the later one gets no
row in the tables. A config that two experiments share (the ladder's `full` is leave-one-out's
`full`) is one run, listed in both and said so in the plan.

Axes (experiments.axes: --lrs, --widths, --depths, or a definition's own lrs:, widths:, depths:)
plan every variant at every point of their product. A point's base model is the base model with the
point's settings applied exactly as --set applies them, so the point at the base model's own values
is today's run (same config hash, same run id) and every other point is the run --set would train.
A variant that sets an axis's setting itself keeps it (the ladder's one-block rungs on a depth
axis: one run at every depth), except its own lr, which moves along an lr grid
(experiments.axes.LearningRate.own). An experiment without axes is planned exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import store
from experiments.axes import AXES, BY_NAME, Grid, Point, describe, ordered, points
from experiments.canonical import inert
from experiments.config import (
    RunConfig,
    base_model,
    build,
    inert_notes,
    owned_settings,
    shown,
    variant_settings,
)
from experiments.definitions import Experiment, Variant, get_experiment
from experiments.machine import prepare
from experiments.settings import ConfigError
from nanogpt.data import Corpus

if TYPE_CHECKING:
    import torch

FALLBACK_PRESET = "tutorial"  # for definitions that name no preset of their own
MAX_SEEDS = 10_000


@dataclass(frozen=True)
class PlannedVariant:
    experiment: str
    name: str
    differs: dict[str, Any]  # the settings in which it differs from the base model (at its point)
    kept: dict[str, Any]  # overrides this variant sets itself: its own value wins
    runs: tuple[RunConfig, ...]  # one per seed
    shared_with: str | None = None  # another variant (experiment or point) that is the same run
    point: Point = field(default_factory=dict)  # its point on the experiment's axes ({}: no axes)
    notes: tuple[str, ...] = ()  # what the point leaves to it: its own lr scaled, n_layer kept
    # The variant of its own experiment it is the same model as at this point (its changes are
    # no-ops on this base model, experiments.canonical): trained once; where that holds at every
    # point, no row of its own in the tables.
    same_as: str | None = None
    # One note per setting it or --set gives that changes nothing in its model (as experiments.run
    # says it; `differs` leaves such a setting out, as the run records its canonical value).
    inert: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    folder: Path
    manifest: dict[str, Any]
    runs: tuple[RunConfig, ...]  # unique by config hash, in training order (seed-major)
    variants: tuple[PlannedVariant, ...]
    device: torch.device  # the device its runs were prepared for (their dtypes are resolved for it)


def default_preset(definitions: Sequence[Experiment]) -> str:
    """The preset the definitions name (ladder, leave-one-out: tutorial); they must agree."""
    named = {d.preset: d.name for d in definitions if d.preset}
    if len(named) > 1:
        raise ConfigError("the experiments name different default presets (" + ", ".join(
            f"{name}: {preset}" for preset, name in named.items()) + "); choose one with --preset "
                                                                     "(PRESET=)")
    return next(iter(named), FALLBACK_PRESET)


def plan(preset: str | None, seeds: Sequence[int], experiment_names: Sequence[str], results: Path,
         name: str | None = None, overrides: dict[str, Any] | None = None,
         grid: Grid | None = None) -> tuple[Plan, Corpus]:
    """Resolve every run of the given experiments; validates everything, writes nothing.

    `grid` (parsed: experiments.axes.given) holds axes for every experiment, each replacing a
    definition's own axis of that name; a definition's other axes still apply.
    """
    definitions = [get_experiment(e) for e in experiment_names]
    preset = preset or default_preset(definitions)
    seeds = list(seeds)
    if not seeds or len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{len(seeds)} seeds: give --seeds N with 1 <= N <= {MAX_SEEDS}")
    name = name or preset
    overrides = overrides or {}
    given = grid or {}
    grids = {d.name: ordered(d.axes | given) for d in definitions}
    base = base_model(preset, overrides)
    _check_axes(definitions, grids, given, base, overrides)
    corpus: Corpus | None = None
    device: torch.device | None = None
    planned: list[PlannedVariant] = []
    owner: dict[Any, PlannedVariant] = {}  # config hash (first seed) -> the first variant with it
    for definition in definitions:
        for point in points(grids[definition.name]):
            for variant in definition.applicable(_at(preset, overrides, base, point)):
                labels = {"experiment": name, "group": definition.name,
                          "job_type": definition.job_type}
                at, changes, notes = _at_point(preset, definition, variant, overrides, base, point)
                try:
                    ready = prepare(build(preset, variant.name, seeds[0], at | changes, labels),
                                    corpus)
                except ConfigError as e:
                    if not point:
                        raise
                    raise ConfigError(f"{definition.name}/{variant.name} at {describe(point)}: "
                                      f"{e}") from None
                noop = inert(at | changes).keys() & (changes.keys() | overrides.keys())
                first, corpus, device = ready.cfg, ready.corpus, ready.device
                # Another variant of this experiment at this point with this config: a collapse. Any
                # other variant with it (another experiment's, or at another point) shares its runs;
                # the same variant at another point (a setting it keeps) is one run at both.
                here = (definition.name, tuple(point.items()), first.hash)
                same = owner.get(here)
                earlier = same or owner.get(first.hash)
                itself = earlier and (earlier.experiment, earlier.name) == (definition.name,
                                                                           variant.name)
                shared = None if same or itself else earlier
                owns = owned_settings(preset, definition, variant)
                this = PlannedVariant(
                    definition.name, variant.name,
                    {k: v for k, v in changes.items() if at[k] != v and k not in noop},
                    {k: changes[k] for k in overrides if k in owns and changes[k] != base[k]},
                    earlier.runs if earlier else tuple(replace(first, seed=s) for s in seeds),
                    _named(shared, point) if shared else None, point, tuple(notes),
                    _named(same, point) if same else None,
                    tuple(inert_notes(at | changes, noop, f"{definition.name}/{variant.name}")))
                owner.setdefault(first.hash, this)
                owner.setdefault(here, this)
                planned.append(this)
    assert corpus is not None and device is not None  # every definition has a variant
    runs = _unique_runs(planned, len(seeds))
    doc = {"name": name, "preset": preset, "seeds": seeds, "overrides": overrides,
           "data": runs[0].data, "base_point": {a.name: a.at(base) for a in AXES},
           "experiments": [_entry(d, planned, grids[d.name]) for d in definitions]}
    folder = store.RunStore(results).experiment_dir(name)
    return Plan(folder, doc, runs, tuple(planned), device), corpus


def _named(v: PlannedVariant, point: Point) -> str:
    """`experiment/variant`, and its point where it is another one."""
    return f"{v.experiment}/{v.name}" + (f" @ {describe(v.point)}" if v.point != point else "")


def _check_axes(definitions: Sequence[Experiment], grids: dict[str, Grid], given: Grid,
                base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Refuse a setting given both by --set and by an axis, and points the base model can't take."""
    for axis in AXES:
        users = [d for d in definitions if axis.name in grids[d.name]]
        if users and axis.setting in overrides:
            raise ConfigError(
                f"{axis.setting} is given twice: by --set "
                f"{axis.setting}={shown(overrides[axis.setting])} and by the {axis.axis_name} of "
                f"{', '.join(d.name for d in users)} ({axis.flag}, {axis.make_variable}= or its "
                f"{axis.plural}:); give one")
        for d in users:
            where = axis.flag if axis.name in given else f"{d.path}: '{axis.plural}'"
            axis.check(base, grids[d.name][axis.name], where)


def _at(preset: str, overrides: dict[str, Any], base: dict[str, Any],
        point: Point) -> dict[str, Any]:
    """The base model at a point: each axis's settings applied as --set applies them."""
    if not point:
        return base
    moved: dict[str, Any] = {}
    for axis, value in point.items():
        moved |= BY_NAME[axis].settings(base, value)
    return base_model(preset, overrides | moved)


def _at_point(preset: str, definition: Experiment, variant: Variant, overrides: dict[str, Any],
              base: dict[str, Any], point: Point
              ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The base model a variant starts from at a point, what it sets over it, and what the point
    leaves to it. An axis whose setting the variant sets itself does not apply to it (Axis.own says
    what it trains at instead); a setting an axis moves along with its own (width's n_head) that
    the variant sets keeps the variant's value, as an override would."""
    owns = owned_settings(preset, definition, variant)
    own_axes = {a for a in point if BY_NAME[a].setting in owns}
    at = _at(preset, overrides, base, {a: v for a, v in point.items() if a not in own_axes})
    changes = variant_settings(preset, definition, variant, at)
    notes = []
    for axis in (BY_NAME[a] for a in point):
        value = point[axis.name]
        if axis.name in own_axes:
            own = changes[axis.setting]
            changes[axis.setting] = axis.own(own, value, base)
            notes += [note for note in [axis.own_note(own, value, changes[axis.setting])] if note]
            continue
        notes += [f"keeps its own {k}={shown(changes[k])}: the variant sets it, so "
                  f"{axis.label(value)}'s {k}={shown(v)} does not apply to it"
                  for k, v in axis.settings(base, value).items()
                  if k != axis.setting and k in owns and value != base[axis.setting]
                  and changes[k] != v]
    return at, changes, notes


def _unique_runs(planned: list[PlannedVariant], n_seeds: int) -> tuple[RunConfig, ...]:
    """Each config once, seed-major (seed 0's table fills first), tagged with every experiment it is
    in."""
    member_of: dict[str, list[str]] = {}
    first: dict[str, RunConfig] = {}
    for i in range(n_seeds):
        for v in planned:
            cfg = v.runs[i]
            first.setdefault(cfg.run_id, cfg)
            member_of.setdefault(cfg.run_id, []).append(v.experiment)
    return tuple(
        replace(cfg, tags=tuple(dict.fromkeys(member_of[run_id]))) for run_id, cfg in first.items())


def _entry(definition: Experiment, planned: list[PlannedVariant], grid: Grid) -> dict[str, Any]:
    """The manifest entry of one definition: each variant once, with its runs (per point, then
    seed); a variant that is the same model as another of it at every point is listed under
    `same_models`, not as a variant."""
    mine = [v for v in planned if v.experiment == definition.name]
    collapsed = {v.name for v in mine if v.same_as} - {v.name for v in mine if not v.same_as}
    same = {v.name: v.same_as.split("/", 1)[1] for v in mine if v.name in collapsed and v.same_as}
    variants: dict[str, dict[str, Any]] = {}
    for v in (v for v in mine if v.name not in collapsed):
        component = definition.variant(v.name).component
        entry = variants.setdefault(v.name,
                                    {"name": v.name, "adds": definition.variant(v.name).adds,
                                             **({"component": component} if component else {}),
                                     "runs": []})
        entry["runs"] += [{"seed": c.seed, **v.point, "run_id": c.run_id} for c in v.runs]
    # a collapsed baseline: the model it is
    compare = same.get(definition.compare, definition.compare)
    return {"name": definition.name, "job_type": definition.job_type,
            "description": definition.description, "compare": compare,
            "axes": {axis: list(values) for axis, values in grid.items()},
            "variants": list(variants.values()), **({"same_models": same} if same else {})}


def same_model_note(v: PlannedVariant) -> str:
    """One line for a variant that collapsed into another of its experiment (`make ablate` prints it
    too)."""
    return (f"note: {v.experiment}/{v.name} is the same model as {v.same_as} under these settings; "
            "trained once")


def kept_notes(v: PlannedVariant, overrides: dict[str, Any]) -> list[str]:
    """One line per override a variant sets itself: by design it keeps its own value (that is the
    ablation)."""
    return [f"keeps its own {k}={shown(own)}: the variant sets it, so --set "
            f"{k}={shown(overrides[k])} does not apply here" for k, own in v.kept.items()]


def describe_plan(p: Plan, results: Path) -> str:
    """The plan as a person reads it: every run with its hash, what it changes, cached or shared."""
    runs = store.RunStore(results)
    doc = p.manifest
    sets = " ".join(f"{k}={v}" for k, v in doc["overrides"].items()) or "none"
    seeds = (f"seeds {doc['seeds'][0]}..{doc['seeds'][-1]}" if len(doc["seeds"]) > 1
             else f"seed {doc['seeds'][0]}")
    lines = [f"plan '{doc['name']}': preset {doc['preset']}, set {sets}, {seeds} -> {p.folder}"]
    base = base_model(doc["preset"], doc["overrides"])
    for e in doc["experiments"]:
        lines += [f"{e['name']}: {axis.axis_name} {' '.join(axis.texts(values))} (every variant at "
                  f"each {axis.name}, {axis.means(base)})"
                  for axis, values in ((BY_NAME[a], v) for a, v in e["axes"].items())]
    for v in p.variants:
        differs = " ".join(f"{k}={val}" for k, val in v.differs.items()) or "(the base model)"
        at = f" @ {describe(v.point)}" if v.point else ""
        lines.append(f"{v.experiment}/{v.name}{at}: {differs}")
        lines += [f"  {note}" for note in (*v.notes, *kept_notes(v, doc["overrides"]), *v.inert)]
        if v.shared_with:
            lines.append(f"  same runs as {v.shared_with}: trained once")
        if v.same_as:
            lines.append(same_model_note(v))
        for cfg in v.runs:
            state = "cached" if runs.finished(cfg.experiment, cfg.run_id) else "to train"
            lines.append(f"  seed {cfg.seed:<3} {cfg.hash[:16]}  {cfg.run_id:32} {state}")
    cached = sum(runs.finished(c.experiment, c.run_id) for c in p.runs)
    lines.append(f"{len(p.runs)} runs: {cached} cached, {len(p.runs) - cached} to train; nothing "
                 "written")
    return "\n".join(lines)

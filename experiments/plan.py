"""The plan of an ablation: every (experiment, variant, seed) run, resolved and checked; writes nothing.

The base model is the preset with the --set / SET= overrides applied; each variant's own settings
then apply on top (see experiments.config). Two variants of one experiment that resolve to the same
config (a rung whose one change is a no-op on this base model, experiments.canonical) are one model: the
plan says so, trains it once and gives the later one no row in the tables. A config that two experiments
share (the ladder's `full` is leave-one-out's `full`) is one run, listed in both and said so in the plan.

A learning-rate axis (`--lrs`, LRS=, or a definition's own `lrs:`) plans every variant at every
grid lr. A grid point's base model is the base model with `lr` replaced exactly as `--set lr=X`
replaces it, so the point at the base model's lr is today's run (same config hash, same run id)
and every other point is the run `--set lr=X` trains. A variant that fixes an lr of its own (the
tutorial's bigram trains at 10x the preset's lr) keeps its ratio to the base model: it trains at
its own lr x (grid lr / base lr), so it moves along the grid instead of training one config at
every point. An experiment without an axis is planned exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import store
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
from experiments.definitions import Experiment, get_experiment
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
    differs: dict[str, Any]  # the settings in which it differs from the base model
    kept: dict[str, Any]  # overrides this variant sets itself: its own value wins
    runs: tuple[RunConfig, ...]  # one per seed
    shared_with: str | None = None  # the variant of another experiment it is the same run as
    lr: float | None = None  # its point on the experiment's learning-rate axis (None: no axis)
    own_lr: float | None = None  # the lr the variant fixes itself, before the grid scaled it
    # The variant of its own experiment it is the same model as (its changes are no-ops on this base model,
    # experiments.canonical): trained once, and no row of its own in the tables.
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
            f"{name}: {preset}" for preset, name in named.items()) + "); choose one with --preset (PRESET=)")
    return next(iter(named), FALLBACK_PRESET)


def plan(preset: str | None, seeds: Sequence[int], experiment_names: Sequence[str], results: Path,
         name: str | None = None, overrides: dict[str, Any] | None = None,
         lrs: Sequence[float] | None = None) -> tuple[Plan, Corpus]:
    """Resolve every run of the given experiments; validates everything, writes nothing.

    `lrs` (already parsed, see definitions.parse_lrs) is the learning-rate axis of every experiment,
    replacing a definition's own `lrs:`; without it, a definition's own grid (if any) applies.
    """
    definitions = [get_experiment(e) for e in experiment_names]
    preset = preset or default_preset(definitions)
    seeds = list(seeds)
    if not seeds or len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{len(seeds)} seeds: give --seeds N with 1 <= N <= {MAX_SEEDS}")
    name = name or preset
    overrides = overrides or {}
    grids = {d.name: tuple(lrs) if lrs else d.lrs for d in definitions}
    with_axis = [d for d, grid in grids.items() if grid]
    if with_axis and "lr" in overrides:
        raise ConfigError(f"lr is given twice: by --set lr={overrides['lr']} and by the learning-rate axis of "
                          f"{', '.join(with_axis)} (--lrs, LRS= or its lrs:); give one")
    base = base_model(preset, overrides)
    corpus: Corpus | None = None
    device: torch.device | None = None
    planned: list[PlannedVariant] = []
    owner: dict[str, PlannedVariant] = {}  # config hash (first seed) -> the first variant that has it
    for definition in definitions:
        for lr in grids[definition.name] or (None,):
            at = base if lr is None else base_model(preset, overrides | {"lr": lr})  # what --set lr=X does
            for variant in definition.applicable(at):
                changes = variant_settings(preset, definition, variant, at)
                owns = owned_settings(preset, definition, variant)
                own_lr = None
                if lr is not None and "lr" in owns:
                    own_lr = changes["lr"]
                    changes["lr"] = scaled_lr(own_lr, lr, base["lr"])
                labels = {"experiment": name, "group": definition.name, "job_type": definition.job_type}
                ready = prepare(build(preset, variant.name, seeds[0], at | changes, labels), corpus)
                noop = inert(at | changes).keys() & (changes.keys() | overrides.keys())
                first, corpus, device = ready.cfg, ready.corpus, ready.device
                earlier = owner.get((definition.name, first.hash)) or owner.get(first.hash)
                same = earlier if earlier and earlier.experiment == definition.name else None
                this = PlannedVariant(
                    definition.name, variant.name,
                    {k: v for k, v in changes.items() if base[k] != v and k not in noop},
                    {k: changes[k] for k in overrides if k in owns and changes[k] != base[k]},
                    earlier.runs if earlier else tuple(replace(first, seed=s) for s in seeds),
                    f"{earlier.experiment}/{earlier.name}" if earlier and not same else None, lr, own_lr,
                    f"{same.experiment}/{same.name}" if same else None,
                    tuple(inert_notes(at | changes, noop, f"{definition.name}/{variant.name}")))
                owner.setdefault(first.hash, this)
                owner.setdefault((definition.name, first.hash), this)
                planned.append(this)
    assert corpus is not None and device is not None  # every definition has at least one variant
    runs = _unique_runs(planned, len(seeds))
    doc = {"name": name, "preset": preset, "seeds": seeds, "overrides": overrides, "data": runs[0].data,
           "experiments": [_entry(d, planned, grids[d.name]) for d in definitions]}
    return Plan(store.RunStore(results).experiment_dir(name), doc, runs, tuple(planned), device), corpus


def scaled_lr(own: float, grid: float, base: float) -> float:
    """A variant's own lr moved along the grid: own x grid / base, rounded to 12 significant digits so
    that 1e-2 x 2e-3 / 1e-3 is 0.02, not 0.020000000000000004 (the hash sees the float's text)."""
    if base <= 0:
        raise ConfigError(f"the base model's lr is {base}: a variant's own lr cannot be scaled with the grid; "
                          "give the base model an lr > 0")
    return float(f"{own * grid / base:.12g}")


def _unique_runs(planned: list[PlannedVariant], n_seeds: int) -> tuple[RunConfig, ...]:
    """Each config once, seed-major (seed 0's table fills first), tagged with every experiment it is in."""
    member_of: dict[str, list[str]] = {}
    first: dict[str, RunConfig] = {}
    for i in range(n_seeds):
        for v in planned:
            cfg = v.runs[i]
            first.setdefault(cfg.run_id, cfg)
            member_of.setdefault(cfg.run_id, []).append(v.experiment)
    return tuple(replace(cfg, tags=tuple(dict.fromkeys(member_of[run_id]))) for run_id, cfg in first.items())


def _entry(definition: Experiment, planned: list[PlannedVariant], lrs: tuple[float, ...]) -> dict[str, Any]:
    """The manifest entry of one definition: each variant once, with its runs (per lr, then seed, on an axis);
    a variant that is the same model as another of it is listed under `same_models`, not as a variant."""
    variants: dict[str, dict[str, Any]] = {}
    same = {v.name: v.same_as.split("/", 1)[1] for v in planned if v.experiment == definition.name and v.same_as}
    for v in (v for v in planned if v.experiment == definition.name and not v.same_as):
        component = definition.variant(v.name).component
        entry = variants.setdefault(v.name, {"name": v.name, "adds": definition.variant(v.name).adds,
                                             **({"component": component} if component else {}), "runs": []})
        point = {} if v.lr is None else {"lr": v.lr}
        entry["runs"] += [{"seed": c.seed, **point, "run_id": c.run_id} for c in v.runs]
    compare = same.get(definition.compare, definition.compare)  # a collapsed baseline: the model it is
    return {"name": definition.name, "job_type": definition.job_type, "description": definition.description,
            "compare": compare, **({"lrs": list(lrs)} if lrs else {}), "variants": list(variants.values()),
            **({"same_models": same} if same else {})}


def same_model_note(v: PlannedVariant) -> str:
    """One line for a variant that collapsed into another of its experiment (`make ablate` prints it too)."""
    return f"note: {v.experiment}/{v.name} is the same model as {v.same_as} under these settings; trained once"


def kept_notes(v: PlannedVariant, overrides: dict[str, Any]) -> list[str]:
    """One line per override a variant sets itself: by design it keeps its own value (that is the ablation)."""
    return [f"keeps its own {k}={shown(own)}: the variant sets it, so --set {k}={shown(overrides[k])} does not "
            "apply here" for k, own in v.kept.items()]


def describe_plan(p: Plan, results: Path) -> str:
    """The plan as a person reads it: every run with its hash, what it changes, cached or shared."""
    runs = store.RunStore(results)
    doc = p.manifest
    sets = " ".join(f"{k}={v}" for k, v in doc["overrides"].items()) or "none"
    seeds = f"seeds {doc['seeds'][0]}..{doc['seeds'][-1]}" if len(doc["seeds"]) > 1 else f"seed {doc['seeds'][0]}"
    lines = [f"plan '{doc['name']}': preset {doc['preset']}, set {sets}, {seeds} -> {p.folder}"]
    lines += [f"{e['name']}: learning-rate axis {' '.join(f'{lr:g}' for lr in e['lrs'])} (every variant at each lr, "
              "as --set lr=LR sets it)" for e in doc["experiments"] if "lrs" in e]
    for v in p.variants:
        differs = " ".join(f"{k}={val}" for k, val in v.differs.items()) or "(the base model)"
        at = "" if v.lr is None else f" @ lr {v.lr:g}"
        lines.append(f"{v.experiment}/{v.name}{at}: {differs}")
        if v.own_lr is not None:
            lines.append(f"  fixes its own lr={v.own_lr:g}: scaled with the grid (x {v.lr:g} / base lr), "
                         f"trains at lr={v.runs[0].train.lr:g}")
        lines += [f"  {note}" for note in (*kept_notes(v, doc["overrides"]), *v.inert)]
        if v.shared_with:
            lines.append(f"  same runs as {v.shared_with}: trained once")
        if v.same_as:
            lines.append(same_model_note(v))
        for cfg in v.runs:
            state = "cached" if runs.finished(cfg.experiment, cfg.run_id) else "to train"
            lines.append(f"  seed {cfg.seed:<3} {cfg.hash[:16]}  {cfg.run_id:32} {state}")
    cached = sum(runs.finished(c.experiment, c.run_id) for c in p.runs)
    lines.append(f"{len(p.runs)} runs: {cached} cached, {len(p.runs) - cached} to train; nothing written")
    return "\n".join(lines)

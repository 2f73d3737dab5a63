"""The plan of an ablation: every (experiment, variant, seed) run, resolved and checked; writes nothing.

The base model is the preset with the --set / SET= overrides applied; each variant's own settings
then apply on top (see experiments.config). Two variants of one experiment that resolve to the same
config are an error; a config that two experiments share (the ladder's `full` is leave-one-out's
`full`) is one run, listed in both and said so in the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import store
from experiments.config import RunConfig, base_model, build, owned_settings, variant_settings
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
         name: str | None = None, overrides: dict[str, Any] | None = None) -> tuple[Plan, Corpus]:
    """Resolve every run of the given experiments; validates everything, writes nothing."""
    definitions = [get_experiment(e) for e in experiment_names]
    preset = preset or default_preset(definitions)
    seeds = list(seeds)
    if not seeds or len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{len(seeds)} seeds: give --seeds N with 1 <= N <= {MAX_SEEDS}")
    name = name or preset
    overrides = overrides or {}
    base = base_model(preset, overrides)
    corpus: Corpus | None = None
    device: torch.device | None = None
    planned: list[PlannedVariant] = []
    owner: dict[str, PlannedVariant] = {}  # config hash (first seed) -> the first variant that has it
    for definition in definitions:
        for variant in definition.applicable(base):
            changes = variant_settings(preset, definition, variant, base)
            owns = owned_settings(preset, definition, variant)
            labels = {"experiment": name, "group": definition.name, "job_type": definition.job_type}
            ready = prepare(build(preset, variant.name, seeds[0], base | changes, labels), corpus)
            first, corpus, device = ready.cfg, ready.corpus, ready.device
            earlier = owner.get(first.hash)
            if earlier and earlier.experiment == definition.name:
                raise ConfigError(f"{definition.path}: variants {earlier.experiment}/{earlier.name} and "
                                  f"{definition.name}/{variant.name} resolve to the same config on this base model; "
                                  "change the --set that makes them equal, or one of the variants")
            this = PlannedVariant(
                definition.name, variant.name, {k: v for k, v in changes.items() if base[k] != v},
                {k: changes[k] for k in overrides if k in owns and changes[k] != base[k]},
                earlier.runs if earlier else tuple(replace(first, seed=s) for s in seeds),
                f"{earlier.experiment}/{earlier.name}" if earlier else None)
            owner.setdefault(first.hash, this)
            planned.append(this)
    assert corpus is not None and device is not None  # every definition has at least one variant
    runs = _unique_runs(planned, len(seeds))
    doc = {"name": name, "preset": preset, "seeds": seeds, "overrides": overrides, "data": runs[0].data,
           "experiments": [_entry(d, planned) for d in definitions]}
    return Plan(store.RunStore(results).experiment_dir(name), doc, runs, tuple(planned), device), corpus


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


def _entry(definition: Experiment, planned: list[PlannedVariant]) -> dict[str, Any]:
    variants = []
    for v in (v for v in planned if v.experiment == definition.name):
        component = definition.variant(v.name).component
        variants.append({"name": v.name, "adds": definition.variant(v.name).adds,
                         **({"component": component} if component else {}),
                         "runs": [{"seed": c.seed, "run_id": c.run_id} for c in v.runs]})
    return {"name": definition.name, "job_type": definition.job_type, "description": definition.description,
            "compare": definition.compare, "variants": variants}


def describe_plan(p: Plan, results: Path) -> str:
    """The plan as a person reads it: every run with its hash, what it changes, cached or shared."""
    runs = store.RunStore(results)
    doc = p.manifest
    sets = " ".join(f"{k}={v}" for k, v in doc["overrides"].items()) or "none"
    seeds = f"seeds {doc['seeds'][0]}..{doc['seeds'][-1]}" if len(doc["seeds"]) > 1 else f"seed {doc['seeds'][0]}"
    lines = [f"plan '{doc['name']}': preset {doc['preset']}, set {sets}, {seeds} -> {p.folder}"]
    for v in p.variants:
        differs = " ".join(f"{k}={val}" for k, val in v.differs.items()) or "(the base model)"
        lines.append(f"{v.experiment}/{v.name}: {differs}")
        for k, own in v.kept.items():
            lines.append(f"  keeps its own {k}={own}: the variant sets it, so --set {k}={doc['overrides'][k]} "
                         "does not apply here")
        if v.shared_with:
            lines.append(f"  same runs as {v.shared_with}: trained once")
        for cfg in v.runs:
            state = "cached" if runs.finished(cfg.experiment, cfg.run_id) else "to train"
            lines.append(f"  seed {cfg.seed:<3} {cfg.hash[:16]}  {cfg.run_id:32} {state}")
    cached = sum(runs.finished(c.experiment, c.run_id) for c in p.runs)
    lines.append(f"{len(p.runs)} runs: {cached} cached, {len(p.runs) - cached} to train; nothing written")
    return "\n".join(lines)

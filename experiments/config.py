"""Resolve preset + overrides + variant into one validated `RunConfig`, and hash it.

The rule for overrides: --set / SET= change the experiment's base model (the preset) before any
variant applies; a variant's switches (and the preset's per-variant training) then apply on top,
so `preset` references and `only_if` conditions see the overridden values. A setting a variant
sets itself (owns) is the variant: in an ablation the variant keeps its value (the plan says so, per
variant); a single run (`resolve`) refuses an override the variant would not apply, naming a variant
that takes it, because a run named `ladder/full` must compute the `full` rung. A bare variant name
picks the variant that takes every override.

Validation happens at the edge, before anything is written: values as they are parsed
(`parse_setting`), the model and training settings together (`build`), then against the corpus and
the machine (`experiments.prepare`). Everything below (model, loop) may assume a sane config. Every
error is a `ConfigError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from experiments.canonical import inert
from experiments.definitions import DefinitionError, Experiment, Variant, candidates, experiments
from experiments.presets import PRESETS
from experiments.settings import (
    DEFAULTS,
    MODEL_AND_TRAIN,
    MODEL_FIELDS,
    RUN_SETTINGS,
    SETTINGS,
    ConfigError,
    RunConfig,
    canonical,
    check_name,
    coerce,
)
from nanogpt import precision
from nanogpt.model import ModelConfig
from nanogpt.train import TrainConfig

if TYPE_CHECKING:
    import torch

PRESET_MODEL = "full"  # the name of a run of the preset's own model (no variant given)
MAX_SEED = 2**63 - 1  # torch's generators take at most 64 bits; keep it a positive int64


def parse_setting(key: str, value: Any) -> Any:
    """`value` as setting `key`'s type (key: its name or an earlier one); ConfigError naming the
    setting if it is unknown or the value cannot be that type."""
    if canonical(key) not in SETTINGS:
        close = [k for k in SETTINGS if k.startswith(key[:3])]
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        raise ConfigError(f"unknown setting '{key}'{hint}; see --list-settings for all settings")
    return coerce(key, value, SETTINGS[canonical(key)])


def once(settings: dict[str, Any], key: str, value: Any, first: str, second: str) -> dict[str, Any]:
    """`settings` with typed `value` added under its name now; a setting given twice with values
    that differ (last-wins would drop one without a word) is a ConfigError naming both. The same
    value twice is one setting."""
    name = canonical(key)
    if name in settings and settings[name] != value:
        raise ConfigError(f"{name} is given twice ({settings[name]!r} by {first}, {value!r} by "
                          f"{second}); give it once")
    return settings | {name: value}


def parse_settings(given: dict[str, Any]) -> dict[str, Any]:
    """Each setting by its name now, its value parsed to its type (a name and its earlier name must
    agree)."""
    out: dict[str, Any] = {}
    named: dict[str, str] = {}  # a setting's name now -> the name it was first given by
    for key, value in given.items():
        out = once(out, key, parse_setting(key, value), named.setdefault(canonical(key), key), key)
    return out


def parse_assignments(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """KEY=VALUE items (from --set or SET=), parsed to each setting's type; a setting given twice
    must agree."""
    overrides: dict[str, Any] = {}
    given: dict[str, str] = {}  # a setting's name now -> the item that gave it
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"{flag} {item}: expected KEY=VALUE, e.g. {flag} lr=3e-4")
        name = canonical(key.strip())
        overrides = once(overrides, key.strip(), parse_setting(key.strip(), value),
                         f"{flag} {given.get(name)}", f"{flag} {item}")
        given.setdefault(name, item)
    return overrides


def with_flag(overrides: dict[str, Any], key: str, value: Any, flag: str) -> dict[str, Any]:
    """A setting that also has a flag of its own (--data): given both ways, the two must agree."""
    return once(overrides, key, parse_setting(key, value), "--set", flag)


def _preset(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def base_model(preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of the experiment's base model: the preset with the overrides applied.

    muP's base width is the preset's own n_embd unless given: a number from here on, so that a
    variant, an axis or an override that changes n_embd changes the width muP scales to, never the
    width the preset was tuned at."""
    settings = _preset(preset)["settings"]
    base_width = settings.get("n_embd", DEFAULTS["n_embd"])
    given = {"mup_base_width": base_width} | settings | (overrides or {})
    return {k: DEFAULTS[k] for k in MODEL_AND_TRAIN} | parse_settings(given)


def _preset_training(preset: str, experiment: Experiment, variant: Variant) -> dict[str, Any]:
    """The preset's own training for one variant (the tutorial trains its bigram with a larger
    LR)."""
    training = _preset(preset)["variants"].get(f"{experiment.name}/{variant.name}", {})
    return parse_settings(training)


def variant_settings(preset: str, experiment: Experiment, variant: Variant,
                     base: dict[str, Any]) -> dict[str, Any]:
    """What a variant sets over the base model: its switches, then the preset's training for it."""
    return experiment.changes(variant.name, base) | _preset_training(preset, experiment, variant)


def owned_settings(preset: str, experiment: Experiment, variant: Variant) -> set[str]:
    """The settings a variant owns (gives values of its own): --set does not reach them for this
    variant."""
    return experiment.fixes(variant.name) | set(_preset_training(preset, experiment, variant))


def shown(value: Any) -> str:
    """A setting's value as a person types it after --set: true, none, 0.001."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    return str(value)


def inert_notes(given: dict[str, Any], keys: Collection[str],
                model: str = "this model") -> list[str]:
    """One line per setting of `keys` that changes nothing in the model `given` spells (every
    setting as given): applied, not dropped, and recorded in canonical form (canonical.py)."""
    return [f"note: {k}={shown(value)} changes nothing in {model} ({rule.name}: {rule.why}); it "
            f"trains and is recorded as {k}={shown(recorded)}"
            for k, (value, recorded, rule) in inert(given).items() if k in keys]


def _dropped(preset: str, experiment: Experiment, variant: Variant, base: dict[str, Any],
             overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a variant would not apply: settings it owns, at a value of its own that
    differs."""
    owns = owned_settings(preset, experiment, variant)
    changes = variant_settings(preset, experiment, variant, base)
    return {k: changes[k] for k in overrides if k in owns and changes[k] != overrides[k]}


def _refusal(preset: str, found: list[tuple[Experiment, Variant]], base: dict[str, Any],
             overrides: dict[str, Any], searched: Collection[str]) -> str:
    """Why no variant of this name can take the user's settings, and the variant that can."""
    experiment, variant = found[0]
    dropped = _dropped(preset, experiment, variant, base, overrides)
    key = (next(iter(dropped), None)
           or sorted(set(searched) & owned_settings(preset, experiment, variant))[0])
    others = [(e, v) for e in experiments().values() for v in e.variants
              if key not in owned_settings(preset, e, v) and not v.only_if]
    same_name = [f"{e.name}/{v.name}" for e, v in others if v.name == variant.name]
    empty = [f"{e.name}/{v.name}" for e, v in others if not owned_settings(preset, e, v)]
    fix = (f"--variant {same_name[0]}, which does not set {key}" if same_name else
           f"a variant that does not set {key} (see "
           "--list-variants" + (f"; {empty[0]} sets nothing" if empty else "")
           + ")")
    if key in dropped:
        return (f"--set {key}={shown(overrides[key])}: variant {experiment.name}/{variant.name} "
                f"sets {key} itself ({key}={shown(dropped[key])}), so the --set would not apply; "
                f"drop the --set, or use {fix}")
    return (f"param '{key}': variant {experiment.name}/{variant.name} sets {key} itself, so "
            f"searching it changes nothing; drop it, or use {fix}")


def find_variant(preset: str, name: str, base: dict[str, Any],
                 overrides: dict[str, Any] | None = None,
                 searched: Collection[str] = ()) -> tuple[Experiment, Variant]:
    """The variant `experiment/variant` or a bare name that takes every override (and leaves every
    `searched` setting to the search); ConfigError if none does. A bare name must mean one config
    among those that do."""
    found = candidates(name)
    takers = [(e, v) for e, v in found if not _dropped(preset, e, v, base, overrides or {})
              and not set(searched) & owned_settings(preset, e, v)]
    if not takers:
        raise ConfigError(_refusal(preset, found, base, overrides or {}, searched))
    configs = {
        repr(sorted((base | variant_settings(preset, e, v, base)).items())) for e, v in takers}
    if len(configs) > 1:
        both = ", ".join(f"{e.name}/{v.name}" for e, v in takers)
        raise DefinitionError(f"variant '{name}' is ambiguous ({both} differ); name one of them")
    return takers[0]


def build(preset: str, variant: str, seed: int, settings: dict[str, Any],
          labels: dict[str, Any]) -> RunConfig:
    """One validated RunConfig from complete, typed settings and the run's labels."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number in 0..{MAX_SEED}, got {seed}")
    settings = dict(settings)
    top = {k: settings.pop(k) for k in RUN_SETTINGS if k in settings}
    for key, value in labels.items():
        if key in top and top[key] != value:
            raise ConfigError(f"{key} is given twice ({top[key]!r} by --set, {value!r} by the "
                              "command); give it once")
    top |= labels
    if "experiment" in top:
        check_name("experiment", str(top["experiment"]))
    try:
        model = ModelConfig(**{k: v for k, v in settings.items() if k in MODEL_FIELDS})
        train = TrainConfig(**{k: v for k, v in settings.items() if k not in MODEL_FIELDS})
        model.validate()
        train.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # Validated as given, recorded and trained in canonical form: two spellings of one model are one
    # run.
    return RunConfig(preset=preset, variant=variant, seed=seed, model=model, train=train,
                     **top).in_canonical_form()


def resolve(preset: str, variant: str | None = None, seed: int = 0,
            overrides: dict[str, Any] | None = None, **labels: Any) -> RunConfig:
    """One run: the preset, changed by the overrides, then by the variant (see the module's rule). A
    variant that sets an override to a value of its own refuses it (ConfigError): its name must keep
    meaning its model. No variant: the preset's full model itself, named `full`, which takes every
    override."""
    overrides = parse_settings(overrides or {})
    base = base_model(preset, overrides)
    if variant is None:
        return build(preset, PRESET_MODEL, seed, base, labels)
    experiment, chosen = find_variant(preset, variant, base, overrides)
    return build(preset, chosen.name, seed,
                 base | variant_settings(preset, experiment, chosen, base), labels)


@functools.cache
def _warn_once(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def with_device(cfg: RunConfig, device: torch.device) -> RunConfig:
    """Resolve dtype=auto for the device the run trains on: the hash then sees the dtype it computes
    in, so runs from machines whose numerics differ never share a cache entry."""
    choice = precision.choose(cfg.train.dtype, device)
    if choice.warning:
        _warn_once(choice.warning)
    train = dataclasses.replace(cfg.train, dtype=choice.dtype)
    return dataclasses.replace(cfg, train=train, dtype_reason=choice.reason)


def with_corpus(cfg: RunConfig, vocab_size: int, data_sha256: str,
                split_lengths: tuple[int, int]) -> RunConfig:
    """Fill in what the corpus decides (vocab size, checksum) and check the context fits both
    splits."""
    shortest = min(split_lengths)
    if cfg.model.block_size >= shortest:
        raise ConfigError(
            f"block_size {cfg.model.block_size} is longer than the data split ({shortest} tokens); "
            "use a smaller block_size or a larger corpus"
        )
    # The vocab size only sizes tables: the config validated at `build` stays valid.
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size),
                               data_sha256=data_sha256)

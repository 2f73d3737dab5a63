"""The settings: one registry of every setting (type, default, scope, hashed or a label), the run's
config built from it, and the one typed path for a setting's value, whatever its source.

A preset, a definition YAML, --set, SET=, a search space, a W&B agent's --key=value and an Optuna
suggestion all go through `coerce`, which reads the type from the registry (the config dataclasses'
type hints: bool, int, float, str, Literal[...], X | None): a new field needs no code here. Values
come out canonical, so `0`, `0.0` and `"0"` for a float setting hash alike.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import types
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from experiments.canonical import canonical_form, inert
from nanogpt.config import TINY_SHAKESPEARE, TINY_SHAKESPEARE_SHA256, ModelConfig, TrainConfig

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # names that name folders: no paths


def label(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A RunConfig field that names a run but does not change what it computes: the hash leaves it
    out."""
    return field(default=default, metadata={"label": True}, **kwargs)


@dataclass(frozen=True)
class RunConfig:
    preset: str = label()
    variant: str = label()
    seed: int
    model: ModelConfig
    train: TrainConfig
    data: str = TINY_SHAKESPEARE
    data_sha256: str = ""
    experiment: str = label("adhoc")
    # what the user asked; the device this machine resolved is `Prepared.device`
    device: str = label("auto")
    compile: bool = label(False)
    trial: int | None = label(None)
    study: str | None = label(None)
    group: str | None = label(None)  # W&B group (default: the experiment)
    job_type: str = label("adhoc")  # W&B job_type: adhoc, ladder, leave-one-out, sweep
    tags: tuple[str, ...] = label(default_factory=tuple, default=dataclasses.MISSING)
    # why this dtype on this machine (set by with_device; the dtype itself is hashed)
    dtype_reason: str = label("")

    def flat(self) -> dict[str, Any]:
        """One flat dict of every setting (what W&B and the results frame show as columns)."""
        top = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("model", "train")}
        return top | dataclasses.asdict(self.model) | dataclasses.asdict(self.train)

    # a frozen config's hash never changes; plans of many seeds ask often
    @functools.cached_property
    def hash(self) -> str:
        """sha256 of what the run computes (`config_hash`); stable across machines, orders and
        spellings."""
        return config_hash(self.flat())

    def in_canonical_form(self) -> RunConfig:
        """This config with every setting that cannot change the computation at its canonical value
        (experiments.canonical): what a run records, and what it trains."""
        changed = {k: new for k, (_, new, _) in inert(self.flat()).items()}
        if not changed:
            return self
        model = {k: v for k, v in changed.items() if k in MODEL_FIELDS}
        train = {k: v for k, v in changed.items() if k not in MODEL_FIELDS}
        return dataclasses.replace(self, model=dataclasses.replace(self.model, **model),
                                   train=dataclasses.replace(self.train, **train))

    @property
    def run_id(self) -> str:
        return f"{self.variant}-s{self.seed}-{self.hash[:8]}"

    def to_json(self) -> str:
        return json.dumps(canonical_form(self.flat()) | {"config_hash": self.hash,
                                                         "run_id": self.run_id}, indent=2)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> RunConfig:
        """A config.json's settings; one written before a setting existed ran with that setting's
        default."""
        flat = DEFAULTS | {canonical(k): v for k, v in flat.items()}
        model = ModelConfig(**{f.name: flat[f.name] for f in fields(ModelConfig)})
        train = TrainConfig(**{f.name: flat[f.name] for f in fields(TrainConfig)})
        top = {f.name: flat[f.name] for f in fields(cls)
               if f.name not in ("model", "train") and f.name in flat}
        top["tags"] = tuple(top.get("tags", ()))
        return cls(model=model, train=train, **top)


def config_hash(flat: dict[str, Any], as_spelled: bool = False) -> str:
    """sha256 over everything that changes the numbers, in canonical form (experiments.canonical).

    Every setting is hashed unless the registry marks it a label. A setting added after config
    format 1 is hashed only when it leaves its default, so a config that does not use it keeps the
    hash (and run folder) it had. The corpus is hashed by its content: `data` is hashed as
    `tinyshakespeare` for Tiny Shakespeare's checksum (the spelling its runs always had), and as
    nothing beside any other checksum, so a relative path, an absolute one, a symlink and a copy of
    one file are one corpus. Before the corpus is read (no checksum yet) its spelling is all there
    is. `as_spelled`: the hash of versions before the canonical form
    (the run ids of folders they recorded).
    """
    semantic = {}
    for key, value in (flat if as_spelled else canonical_form(flat)).items():
        setting = REGISTRY[key]
        if not setting.label and (setting.hash_key in FORMAT_1_HASHED or value != setting.default):
            semantic[setting.hash_key] = value
    if flat["data_sha256"] and not as_spelled:
        semantic["data"] = (TINY_SHAKESPEARE if flat["data_sha256"] == TINY_SHAKESPEARE_SHA256
                            else "")
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()


Scope = Literal["model", "train", "run"]


@dataclass(frozen=True)
class Setting:
    name: str
    hint: Any  # the type a value is coerced to
    default: Any
    scope: Scope  # ModelConfig, TrainConfig, or RunConfig itself
    label: bool  # names a run without changing what it computes: out of the hash, and not a --set
    hash_key: str  # its name in the hash (the name it had when it was first hashed)


# A setting's earlier name -> its name now. The earlier name is still accepted everywhere a setting
# is named (YAML, --set, a search space, an old config.json) and stays its name in the hash, so run
# ids never change.
# `layernorm` read as the norm's kind; it is where the norms sit
RENAMED = {"layernorm": "norm_position"}
_HASH_KEYS = {new: old for old, new in RENAMED.items()}


def canonical(key: str) -> str:
    """A setting's name now, for its name now or any earlier one."""
    return RENAMED.get(key, key)


def _registry() -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    for scope, cls in (("model", ModelConfig), ("train", TrainConfig), ("run", RunConfig)):
        hints = get_type_hints(cls)
        for f in fields(cls):
            if f.name in ("model", "train"):
                continue
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default)
            out[f.name] = Setting(f.name, hints[f.name], default, scope,
                                  f.metadata.get("label", False), _HASH_KEYS.get(f.name, f.name))
    return out


REGISTRY: dict[str, Setting] = _registry()
# The hashed settings of config format 1, by their hash names: frozen history, never edited. Every
# other hashed setting joins the hash only when it leaves its default.
FORMAT_1_HASHED = frozenset((
    "seed", "data", "data_sha256", "vocab_size", "block_size", "n_layer", "n_head", "n_embd",
    "lm_head", "pos_emb", "attention", "mlp", "activation", "residual", "layernorm", "init",
    "scaled_residual_init", "dropout", "bias", "weight_tying", "batch_size", "max_iters",
    "eval_interval", "eval_iters", "lr", "lr_schedule", "warmup_iters", "min_lr", "lr_decay_iters",
    "weight_decay", "beta1", "beta2", "grad_clip", "dtype", "log_interval"))
# Tables derived from the registry. A person sets every hashed setting except the seed (its own
# flag) and the corpus checksum (the corpus decides it), and of the labels only `device`, `compile`
# and `experiment`.
SETTABLE_LABELS = ("experiment", "device", "compile")
_settable = [s for s in REGISTRY.values() if s.name not in ("seed", "data_sha256")
             and (not s.label or s.name in SETTABLE_LABELS)]
SETTINGS: dict[str, Any] = {s.name: s.hint for s in _settable}  # name -> type hint
DEFAULTS: dict[str, Any] = {s.name: s.default for s in _settable}
LABELS = frozenset(s.name for s in REGISTRY.values() if s.label)
MODEL_FIELDS = frozenset(s.name for s in REGISTRY.values() if s.scope == "model")
# what a variant sets
MODEL_AND_TRAIN: dict[str, Any] = {s.name: s.hint for s in _settable if s.scope != "run"}
# settable, but kept on RunConfig itself
RUN_SETTINGS = tuple(s.name for s in _settable if s.scope == "run")


class ConfigError(ValueError):
    """A config a person asked for that cannot run; the message says why and what to do."""


def check_name(what: str, name: Any, error: type[ValueError] = ConfigError) -> str:
    """`name` if it can name a folder (an experiment, a variant, a study); else `error` saying so,
    one wording."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise error(f"{what} '{name}' must be letters, digits, '_', '-', '.' (it names a folder, "
                    "so no paths)")
    return name


def choices(hint: Any) -> tuple[Any, ...]:
    """The values a Literal[...] setting accepts; () for any other type."""
    return get_args(hint) if get_origin(hint) is Literal else ()


def describe_type(hint: Any) -> str:
    """A type as a person reads it: 'a float', 'one of none, pre, post'."""
    if choices(hint):
        return "one of " + ", ".join(map(str, choices(hint)))
    if _optional(hint):
        return f"{describe_type(_optional(hint))} or none"
    return {bool: "true or false", int: "a whole number", float: "a finite number",
            str: "text"}.get(hint, str(hint))


def _optional(hint: Any) -> Any:
    """X for an `X | None` hint, else None."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


def coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` (text from a command line, or whatever YAML made of it) as setting `key`'s type."""
    try:
        return _coerce(value, hint)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}={value}: expected {describe_type(hint)}") from None


def _coerce(value: Any, hint: Any) -> Any:
    if isinstance(value, dict | list | tuple | set):
        raise TypeError
    text = value.strip() if isinstance(value, str) else value
    if _optional(hint):
        return (None if value is None or str(text).lower() in ("none", "null")
                else _coerce(value, _optional(hint)))
    if value is None:
        raise TypeError
    if choices(hint):
        # Match by text, so a number-like choice given on a command line still matches.
        match = [c for c in choices(hint) if str(c) == str(text)]
        if not match:
            raise ValueError
        return match[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
        word = str(text).lower()
        if word not in TRUE + FALSE or isinstance(value, float):
            raise ValueError
        return word in TRUE
    if hint is int:
        if isinstance(value, bool):
            raise TypeError
        number = float(text) if isinstance(text, str) and not text.lstrip("+-").isdigit() else text
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError
        number = float(text)
        if not math.isfinite(number):
            raise ValueError
        return number
    if hint is str:
        if not isinstance(value, str):
            raise TypeError
        return text
    raise TypeError

"""Resolve preset + variant + overrides into one validated `RunConfig`, and hash it.

Validation happens here, once, at the edge: everything below (model, loop) may assume a sane
config. Every error is a `ConfigError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from experiments.definitions import variant_settings
from experiments.presets import PRESETS
from nanogpt.data import TINY_SHAKESPEARE
from nanogpt.model import ModelConfig
from nanogpt.train import TrainConfig

# Labels: they name a run but do not change what it computes, so they stay out of the hash.
LABELS = ("experiment", "preset", "variant", "device", "compile", "trial", "study", "group", "job_type", "tags")
# Settings added after config format 1, each with its neutral value (what every earlier run did). The hash leaves a
# setting out while it holds that value, so a config that does not use it keeps the hash (and run folder) it had.
ADDED_FIELDS: dict[str, Any] = {"norm": "layernorm", "rope": False, "qk_norm": False, "n_kv_head": 0}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ConfigError(ValueError):
    """A config a person asked for that cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class RunConfig:
    preset: str
    variant: str
    seed: int
    model: ModelConfig
    train: TrainConfig
    data: str = TINY_SHAKESPEARE
    data_sha256: str = ""
    experiment: str = "adhoc"
    device: str = "auto"
    compile: bool = False
    trial: int | None = None
    study: str | None = None
    group: str | None = None  # W&B group (default: the experiment)
    job_type: str = "adhoc"  # W&B job_type: adhoc, ladder, leave-one-out, sweep
    tags: tuple[str, ...] = field(default_factory=tuple)

    def flat(self) -> dict[str, Any]:
        """One flat dict of every setting (what W&B and the results frame show as columns)."""
        top = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "train")}
        return top | dataclasses.asdict(self.model) | dataclasses.asdict(self.train)

    @property
    def hash(self) -> str:
        """sha256 over everything that changes the numbers; stable across machines and orders."""
        semantic = {k: v for k, v in self.flat().items()
                    if k not in LABELS and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
        return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()

    @property
    def run_id(self) -> str:
        return f"{self.variant}-s{self.seed}-{self.hash[:8]}"

    def to_json(self) -> str:
        return json.dumps(self.flat() | {"config_hash": self.hash, "run_id": self.run_id}, indent=2)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> RunConfig:
        flat = ADDED_FIELDS | flat  # a config.json written before a setting existed ran with its neutral value
        model = ModelConfig(**{f.name: flat[f.name] for f in fields(ModelConfig)})
        train = TrainConfig(**{f.name: flat[f.name] for f in fields(TrainConfig)})
        top = {f.name: flat[f.name] for f in fields(cls) if f.name not in ("model", "train") and f.name in flat}
        top["tags"] = tuple(top.get("tags", ()))
        return cls(model=model, train=train, **top)


SETTABLE = {f.name: f for f in fields(ModelConfig) + fields(TrainConfig)} | {
    f.name: f for f in fields(RunConfig) if f.name in ("data", "device", "compile", "experiment")
}


# Settings typed Literal[...] accept only their listed values (layernorm: none/pre/post, ...).
CHOICES = {k: get_args(t) for cls in (ModelConfig, TrainConfig) for k, t in get_type_hints(cls).items()
           if get_origin(t) is Literal}


def parse_value(key: str, text: str) -> Any:
    """Parse `text` as the type of setting `key` (bool, int, float, or one of its literal choices)."""
    if key not in SETTABLE:
        close = [k for k in SETTABLE if k.startswith(key[:3])]
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        raise ConfigError(f"unknown setting '{key}'{hint}; see --list-settings for all settings")
    default = SETTABLE[key].default
    choices = CHOICES.get(key, ())
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("true", "1", "yes", "on")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"{key}={text}: expected a {type(default).__name__}") from None
    if choices and text not in choices:
        raise ConfigError(f"{key}={text}: expected one of {', '.join(choices)}")
    return text


def resolve(preset: str, variant: str = "full", seed: int = 0, overrides: dict[str, Any] | None = None,
            **labels: Any) -> RunConfig:
    """Preset defaults < variant switches < the preset's per-variant training < overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed}")
    spec = PRESETS[preset]
    settings = dict(spec["settings"])
    settings |= variant_settings(variant, settings)
    settings |= spec["variants"].get(variant, {})
    settings |= overrides or {}
    unknown = sorted(set(settings) - set(SETTABLE))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see --list-settings")
    top = {k: settings.pop(k) for k in ("data", "device", "compile", "experiment") if k in settings}
    top |= labels
    if "experiment" in top and not NAME_PATTERN.match(str(top["experiment"])):
        raise ConfigError(f"experiment '{top['experiment']}' must be letters, digits, '_', '-', '.' (no paths)")
    model_keys = {f.name for f in fields(ModelConfig)}
    try:
        model = ModelConfig(**{k: v for k, v in settings.items() if k in model_keys})
        train = TrainConfig(**{k: v for k, v in settings.items() if k not in model_keys})
        model.validate()
        train.validate()
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return RunConfig(preset=preset, variant=variant, seed=seed, model=model, train=train, **top)


def with_corpus(cfg: RunConfig, vocab_size: int, data_sha256: str, split_lengths: tuple[int, int]) -> RunConfig:
    """Fill in what the corpus decides (vocab size, checksum) and check the context fits both splits."""
    shortest = min(split_lengths)
    if cfg.model.block_size >= shortest:
        raise ConfigError(
            f"block_size {cfg.model.block_size} is longer than the data split ({shortest} tokens); "
            "use a smaller block_size or a larger corpus"
        )
    model = dataclasses.replace(cfg.model, vocab_size=vocab_size)
    try:
        model.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return dataclasses.replace(cfg, model=model, data_sha256=data_sha256)

"""The one typed path for a setting's value, whatever its source.

A preset, a definition YAML, --set, SET=, a search space, a W&B agent's --key=value and an Optuna
suggestion all go through `coerce`, which reads the type from the config dataclasses' type hints
(bool, int, float, str, Literal[...], X | None): a new field needs no code here. Values come out
canonical, so `0`, `0.0` and `"0"` for a float setting hash alike.
"""

from __future__ import annotations

import math
import re
import types
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from nanogpt.model import ModelConfig
from nanogpt.train import TrainConfig

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig))
# The settings of the model and the training loop: name -> type hint (resolved once; the
# dataclasses' annotations are strings under postponed evaluation).
MODEL_AND_TRAIN = get_type_hints(ModelConfig) | get_type_hints(TrainConfig)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # names that name folders: no paths
DEFAULTS = {f.name: f.default for f in fields(ModelConfig) + fields(TrainConfig)}


class ConfigError(ValueError):
    """A config a person asked for that cannot run; the message says why and what to do."""


def choices(hint: Any) -> tuple[Any, ...]:
    """The values a Literal[...] setting accepts; () for any other type."""
    return get_args(hint) if get_origin(hint) is Literal else ()


def describe(hint: Any) -> str:
    """A type as a person reads it: 'a float', 'one of none, pre, post'."""
    if choices(hint):
        return "one of " + ", ".join(map(str, choices(hint)))
    if _optional(hint):
        return f"{describe(_optional(hint))} or none"
    return {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}.get(hint, str(hint))


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
        raise ConfigError(f"{key}={value}: expected {describe(hint)}") from None


def _coerce(value: Any, hint: Any) -> Any:
    if isinstance(value, dict | list | tuple | set):
        raise TypeError
    text = value.strip() if isinstance(value, str) else value
    if _optional(hint):
        return None if value is None or str(text).lower() in ("none", "null") else _coerce(value, _optional(hint))
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

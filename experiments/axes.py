"""The axes of an ablation: learning rate, width and depth, one structure for each.

An axis gives every variant of an experiment a point at each of its values, and the plan trains
every (variant, point, seed) as an ordinary run (experiments.plan). Each axis knows its flag
(`--lrs`), its Make variable (`LRS=`) and definition key (`lrs:`), how its values are parsed and
which of them the base model cannot take, the settings of the base model at a point (exactly what
`--set` would give, so the point at the base model's own value is today's run), what a variant that
sets the axis's setting itself trains at, and how a point reads. The plan, the manifest, the tables,
the W&B dashboard and the notebook ask this module, so one axis more is one entry more in AXES.

Torch-free: analysis reads the axes' labels and roles from here.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.settings import MODEL_AND_TRAIN, ConfigError, coerce

# Two values of a float axis closer than this, relatively, are one grid point: refused, so that
# every point prints distinctly at the 6 significant digits of its label.
REL_TOL = 1e-4

Point = dict[str, Any]  # axis name -> value, in AXES order; {} for an experiment without axes
Grid = dict[str, tuple[Any, ...]]  # axis name -> its values, ascending, in AXES order


@dataclass(frozen=True)
class Axis:
    name: str  # a run's key for its point in the manifest ({"seed": 0, "depth": 4, "run_id": ...})
    plural: str  # the definition key; as --PLURAL and PLURAL=, the flag and the Make variable
    title: str  # how the tables and figures name it
    setting: str  # the setting it is named by; a --set of it beside the axis is refused
    scale: bool  # a model-size axis: compared at each point, with a trend against log2(value)
    example: str  # values for a message

    @property
    def flag(self) -> str:
        return f"--{self.plural}"

    @property
    def make_variable(self) -> str:
        return self.plural.upper()

    @property
    def column(self) -> str:
        """The planned-runs frame's column of a run's point on this axis (NaN: not its axis)."""
        return f"grid_{self.name}"

    @property
    def axis_name(self) -> str:
        """'learning-rate axis'."""
        return f"{self.title.replace(' ', '-')} axis"

    def text(self, value: Any) -> str:
        return f"{value:g}"

    def texts(self, values: Sequence[Any]) -> list[str]:
        """Labels of several values that read distinctly: the short form, or every digit where two
        collide (in a manifest written before values this close were refused)."""
        short = [self.text(v) for v in values]
        if len(set(short)) == len(set(values)):
            return short
        return [repr(self.typed(v)) for v in values]

    def label(self, value: Any) -> str:
        return f"{self.name} {self.text(value)}"

    def typed(self, value: Any) -> Any:
        """A value read back from a table (a float where a NaN may stand beside it), as the
        setting's type."""
        return MODEL_AND_TRAIN[self.setting](value)

    def means(self, base: Mapping[str, Any]) -> str:
        """What a point does to the base model, as the plan says it."""
        return f"as --set {self.setting}={self.name.upper()} sets it"

    def at(self, base: Mapping[str, Any]) -> Any:
        """The base model's own point on this axis."""
        return base[self.setting]

    def parse(self, values: Any, where: str) -> tuple[Any, ...]:
        """Distinct values of the setting's type, ascending; ConfigError naming `where` if not."""
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"{where}: the {self.title}s must be a non-empty list, "
                              f"e.g. [{self.example}]")
        try:
            typed = [coerce(self.name, v, MODEL_AND_TRAIN[self.setting]) for v in values]
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        bad = [v for v in typed if not self._valid(v)]
        if bad:
            raise ConfigError(f"{where}: {self.title} {bad[0]} must be {self._requirement}")
        twice = [v for v in typed if typed.count(v) > 1]
        if twice:
            raise ConfigError(f"{where}: {self.title} {twice[0]} is given twice")
        return self.distinct(sorted(typed), where)

    def distinct(self, values: Sequence[Any], where: str) -> tuple[Any, ...]:
        """`values` (ascending) if no two are one point; ConfigError naming the two otherwise."""
        if MODEL_AND_TRAIN[self.setting] is float:
            for a, b in itertools.pairwise(values):
                if math.isclose(a, b, rel_tol=REL_TOL):
                    raise ConfigError(
                        f"{where}: {self.title}s {a!r} and {b!r} are closer than {REL_TOL:.2%} "
                        f"(both read {self.text(a)}): one grid point; give distinct values")
        return tuple(values)

    def check(self, base: Mapping[str, Any], values: Sequence[Any], where: str) -> None:
        """Refuse the values the base model cannot take, before anything is planned."""

    def settings(self, base: Mapping[str, Any], value: Any) -> dict[str, Any]:
        """What the point changes in the base model, as --set would give it."""
        return {self.setting: value}

    def own(self, own: Any, value: Any, base: Mapping[str, Any]) -> Any:
        """What a variant that sets the axis's setting itself trains at, at the point `value`: its
        own value."""
        return own

    def own_note(self, own: Any, value: Any, trained: Any) -> str | None:
        """What the plan says of such a variant at a point (None: nothing to say)."""
        if own == value:
            return None
        return (f"keeps its own {self.setting}={own}: the variant sets it, so {self.label(value)} "
                "does not apply to it")

    def _valid(self, value: Any) -> bool:
        return value >= 1

    _requirement = "a whole number >= 1"


class LearningRate(Axis):
    """Every variant at each lr; compared at its own best lr (analysis.lr_tables)."""

    _requirement = "a finite number > 0"

    def _valid(self, value: Any) -> bool:
        return math.isfinite(value) and value > 0

    def check(self, base: Mapping[str, Any], values: Sequence[Any], where: str) -> None:
        if base["lr"] <= 0:
            raise ConfigError(f"the base model's lr is {base['lr']}: a variant's own lr cannot be "
                              "scaled with the grid; give the base model an lr > 0")

    def own(self, own: Any, value: Any, base: Mapping[str, Any]) -> Any:
        """A variant's own lr (the tutorial's bigram trains at 10x the preset's) keeps its ratio to
        the base model's: own x grid / base, so it moves along the grid instead of training one
        config at every point. Rounded to 12 significant digits so that 1e-2 x 2e-3 / 1e-3 is 0.02
        (the hash sees the float's text)."""
        return float(f"{own * value / base['lr']:.12g}")

    def own_note(self, own: Any, value: Any, trained: Any) -> str | None:
        return (f"fixes its own lr={own:g}: scaled with the grid (x {value:g} / base lr), trains "
                f"at lr={trained:g}")


class Width(Axis):
    """n_embd at a fixed head size: n_head, and n_kv_head in proportion, grow with it.

    Only the model's shape changes (`settings`). A setting whose default follows n_embd but must
    stay at the base model's width along the axis (muP's base width) is to be resolved from `base`
    in `settings`, beside the shape, so that every point of the axis shares it."""

    def check(self, base: Mapping[str, Any], values: Sequence[Any], where: str) -> None:
        head, kv, heads = self._head_size(base), base["n_kv_head"], base["n_head"]
        for width in values:
            if width % head:
                raise ConfigError(
                    f"{where}: width {width} is not a multiple of the head size {head} (n_embd "
                    f"{base['n_embd']} / n_head {heads} of the base model, kept at every width); "
                    f"give multiples of {head}")
            if kv and (width // head * kv) % heads:
                raise ConfigError(
                    f"{where}: width {width} has {width // head} heads, which cannot share "
                    f"key/value heads in the base model's proportion ({kv} per {heads}); give "
                    f"widths whose head count is a multiple of {heads // math.gcd(heads, kv)}")

    def means(self, base: Mapping[str, Any]) -> str:
        return f"n_embd at head size {self._head_size(base)}: n_head and n_kv_head grow with it"

    def settings(self, base: Mapping[str, Any], value: Any) -> dict[str, Any]:
        heads = value // self._head_size(base)
        return {"n_embd": value, "n_head": heads,
                "n_kv_head": base["n_kv_head"] * heads // base["n_head"]}

    @staticmethod
    def _head_size(base: Mapping[str, Any]) -> int:
        return base["n_embd"] // base["n_head"]


LR = LearningRate("lr", "lrs", "learning rate", "lr", scale=False, example="1e-3, 2e-3, 5e-3")
WIDTH = Width("width", "widths", "width", "n_embd", scale=True, example="32, 64, 128")
DEPTH = Axis("depth", "depths", "depth", "n_layer", scale=True, example="1, 2, 4, 8")
AXES: tuple[Axis, ...] = (WIDTH, DEPTH, LR)  # a point's order: the model's size first, the lr last
BY_NAME = {a.name: a for a in AXES}


def points(grid: Grid) -> list[Point]:
    """Every point of a grid, the first axis outermost; [{}] without axes (the base model)."""
    names = [a.name for a in AXES if a.name in grid]
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


def describe(point: Point) -> str:
    """'width 64, lr 0.002'."""
    return ", ".join(BY_NAME[name].label(value) for name, value in point.items())


def ordered(grid: Mapping[str, Sequence[Any]]) -> Grid:
    """A grid in AXES order, values as tuples."""
    return {a.name: tuple(grid[a.name]) for a in AXES if a.name in grid}


def add_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--lrs, --widths, --depths; `given(args)` reads them back. `what` trains at every value."""
    for axis in AXES:
        p.add_argument(axis.flag, nargs="+", metavar=axis.name.upper(),
                       help=f"a {axis.title} axis: {what} at each of these values "
                       f"({axis.make_variable}= for make); replaces a definition's own "
                       f"{axis.plural}:")


def given(args: argparse.Namespace) -> Grid:
    """The axes given on the command line, parsed (ConfigError naming the flag otherwise)."""
    values = {a.name: getattr(args, a.plural) for a in AXES}
    return {name: BY_NAME[name].parse(v, BY_NAME[name].flag) for name, v in values.items() if v}

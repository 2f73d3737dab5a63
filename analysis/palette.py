"""One colour per model component, in every figure: the ladder rung that adds a component and the
leave-one-out variant that removes it share a colour."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import seaborn as sns

# Which component each built-in variant is about (see experiments/definitions/*.yaml).
COMPONENT = {
    "bigram": "bigram table", "embeddings": "embeddings", "no_pos_emb": "embeddings",
    "single_head": "attention", "no_attention": "attention", "multi_head": "multi-head",
    "no_multi_head": "multi-head", "mlp": "MLP", "no_mlp": "MLP", "stacked": "depth", "residual": "residual",
    "no_residual": "residual", "layernorm": "layernorm", "no_layernorm": "layernorm", "full": "GPT-2 init",
    "no_gpt2_init": "GPT-2 init", "no_dropout": "dropout",
}
_TAB10 = sns.color_palette("tab10")
# Related components get related hues (attention blue, multi-head cyan); the trivial bigram is grey.
COMPONENT_COLOUR = {
    "bigram table": _TAB10[7], "embeddings": _TAB10[8], "attention": _TAB10[0], "multi-head": _TAB10[9],
    "MLP": _TAB10[1], "depth": _TAB10[5], "residual": _TAB10[2], "layernorm": _TAB10[4], "GPT-2 init": _TAB10[3],
    "dropout": _TAB10[6],
}
_OTHERS = sns.color_palette("Dark2")
STATUS_COLOUR = {"completed": _TAB10[0], "pruned": _TAB10[1], "failed": _TAB10[3], "diverged": _TAB10[3],
                 "running": _TAB10[7], "interrupted": _TAB10[7], "waiting": _TAB10[7]}


def colour(variant: str) -> tuple[float, float, float]:
    """The component's colour; a variant of a user's own experiment gets a stable colour of its own."""
    component = COMPONENT.get(variant)
    if component:
        return COMPONENT_COLOUR[component]
    return _OTHERS[zlib.crc32(variant.encode()) % len(_OTHERS)]


def colours(variants: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    return {v: colour(v) for v in variants}

"""One colour per model component, in every figure: a variant's colour comes from the `component`
label its experiment definition gives it (written into experiment.json), so the ladder rung that
adds a component and the leave-one-out variant that removes it share a colour, whatever the variants
are called."""

from __future__ import annotations

import zlib
from typing import Any

import seaborn as sns

_TAB10, _TAB20, _DARK2 = (sns.color_palette("tab10"), sns.color_palette("tab20"),
                          sns.color_palette("Dark2"))
# The built-in definitions' components. Related components get related hues: attention blue and
# multi-head cyan, GQA and QK-norm (attention again) in Dark2's blue-purple and magenta, the MLP
# orange and SwiGLU dark orange; the GPT-2 baselines red; the trivial bigram grey.
COMPONENT_COLOUR = {
    "bigram table": _TAB10[7], "embeddings": _TAB10[8], "attention": _TAB10[0],
    "multi-head": _TAB10[9], "MLP": _TAB10[1], "depth": _TAB10[5], "residual": _TAB10[2],
    "layernorm": _TAB10[4], "GPT-2 init": _TAB10[3], "dropout": _TAB10[6],
    "GPT-2 block": _TAB10[3], "RMSNorm": _DARK2[0], "post-norm": _TAB20[9],
    "post-RMSNorm": _TAB20[5], "SwiGLU": _DARK2[1], "RoPE": _DARK2[4], "NoPE": _DARK2[7],
    "no bias": _DARK2[6], "GQA": _DARK2[2], "QK-norm": _DARK2[3], "Llama-style": _DARK2[5],
}
# Labels of a user's own definitions: a stable colour from the label's checksum.
_OTHERS = sns.color_palette("tab20b")
STATUS_COLOUR = {"completed": _TAB10[0], "pruned": _TAB10[1], "failed": _TAB10[3],
                 "diverged": _TAB10[3], "running": _TAB10[7], "interrupted": _TAB10[7],
                 "waiting": _TAB10[7]}


def colour(component: str) -> tuple[float, float, float]:
    """The component's colour: the built-in one, else the same colour for the same label in every
    figure."""
    return COMPONENT_COLOUR.get(component) or _OTHERS[zlib.crc32(component.encode()) % len(_OTHERS)]


def colours(table: Any) -> dict[str, tuple[float, float, float]]:
    """{variant: colour} for a frame with `variant` and `component` columns (a variant with no
    component label, as in a manifest written before labels existed, is coloured by its own
    name)."""
    return {v: colour(c or v) for v, c in zip(table["variant"], table["component"], strict=True)}

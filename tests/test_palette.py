"""Colours come from a variant's component label (the definition's), never from its name."""

from __future__ import annotations

import pandas as pd

from analysis.palette import COMPONENT_COLOUR, colour, colours


def test_a_rung_and_its_leave_one_out_row_share_the_components_colour():
    table = pd.DataFrame({"variant": ["rope", "llama_learned_pos", "mlp", "no_mlp"],
                          "component": ["RoPE", "RoPE", "MLP", "MLP"]})
    palette = colours(table)
    assert palette["rope"] == palette["llama_learned_pos"] == COMPONENT_COLOUR["RoPE"]
    assert palette["mlp"] == palette["no_mlp"] != palette["rope"]


def test_a_users_labels_get_stable_colours_and_unlabelled_variants_their_own():
    table = pd.DataFrame({"variant": ["w32", "w64", "other"], "component": ["width", "width", ""]})
    palette = colours(table)
    assert palette["w32"] == palette["w64"] == colour("width")
    assert palette["other"] == colour("other")


def test_the_modern_components_have_distinct_colours():
    modern = ["GPT-2 block", "RMSNorm", "SwiGLU", "RoPE", "no bias", "GQA", "QK-norm",
              "Llama-style", "NoPE", "post-norm", "post-RMSNorm", "layernorm"]
    assert len({COMPONENT_COLOUR[c] for c in modern}) == len(modern)

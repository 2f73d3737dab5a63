"""One canonical form per computation: a setting that cannot change what a run computes is reset
before hashing.

`canonical_form` maps a flat config (every setting by its name now) to the same config with every
inert setting at its canonical value, so two spellings of one model get one run id
(`RunConfig.hash`) and one record. Each rule below names the code that makes the setting inert
(nanogpt/model.py, nanogpt/train.py).

Canonical values are the defaults, except where the shipped ladder already spells an inert setting
otherwise: its bigram and embeddings rungs have no blocks and say n_layer=1, n_head=1,
residual=false. Every config of the shipped default plans is its own canonical form
(tests/test_run_ids.py), so no run id moved. Torch-free: the run store's reader checks config.json
files with it where torch is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from nanogpt.config import ModelConfig, TrainConfig

DEFAULT: dict[str, Any] = {f.name: f.default for cls in (ModelConfig, TrainConfig)
                           for f in fields(cls)}


@dataclass(frozen=True)
class Rule:
    name: str
    why: str  # the code that makes the settings inert
    applies: Callable[[dict[str, Any]], bool]
    # the inert settings -> their canonical values
    resets: Callable[[dict[str, Any]], dict[str, Any]]


def _has_blocks(c: dict[str, Any]) -> bool:
    return c["n_layer"] > 0 and (c["attention"] or c["mlp"])


def _builds_a_norm(c: dict[str, Any]) -> bool:
    return c["norm_position"] != "none" or (c["attention"] and c["qk_norm"])


def _defaults(*names: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda c: {name: DEFAULT[name] for name in names}


RULES: tuple[Rule, ...] = (
    Rule("no blocks", "GPT builds no blocks without attention and MLP or with n_layer=0; what "
                      "configures them "
         "is unused, and post-norm lives only in blocks (ln_f is pre-norm's)",
         lambda c: not _has_blocks(c),
         lambda c: {"attention": False, "mlp": False, "n_layer": 1, "n_head": 1, "residual": False,
                    "activation": DEFAULT["activation"], "n_kv_head": 0, "rope": False,
                    "qk_norm": False, "scaled_residual_init": False,
                    "norm_position": ("none" if c["norm_position"] == "post"
                                      else c["norm_position"])}),
    Rule("no attention", "Block puts Nothing/Identity where attention would be: its heads, RoPE "
                         "and QK-norm are "
         "never built", lambda c: _has_blocks(c) and not c["attention"],
         _defaults("n_head", "n_kv_head", "rope", "qk_norm")),
    Rule("n_kv_head = n_head",
         "CausalSelfAttention reads n_kv_head 0 as n_head: the same heads, no GQA",
         lambda c: c["n_kv_head"] == c["n_head"], _defaults("n_kv_head")),
    Rule("no MLP", "Block builds no MLP, so no activation", lambda c: not c["mlp"],
         _defaults("activation")),
    Rule("no LM head",
         "the bigram table is vocab x vocab wide (ModelConfig.width): n_embd sizes nothing",
         lambda c: not c["lm_head"], _defaults("n_embd")),
    Rule("no norm built",
         "make_norm is never called without norm_position and QK-norm, so its kind is unused",
         lambda c: not _builds_a_norm(c), _defaults("norm")),
    Rule("bias without layers", "without blocks only a LayerNorm (the final pre-norm one) can hold "
                                "a bias; the "
         "LM head has none", lambda c: not _has_blocks(c) and not (c["norm_position"] == "pre" and
                                                                    c["norm"] == "layernorm"),
         _defaults("bias")),
    Rule("default init", "scaled_residual_init only scales GPT-2's normal init (GPT._init_gpt2)",
         lambda c: c["init"] == "default", _defaults("scaled_residual_init")),
    Rule("SP has no base width", "only muP reads mup_base_width (ModelConfig.mup_base)",
         lambda c: c["parametrization"] == "sp", _defaults("mup_base_width")),
    Rule("muP at its base width is SP", "every muP multiplier is 1 at the base width; a model "
         "without an LM head (the bigram table) has nothing that grows with n_embd (nanogpt.mup)",
         lambda c: c["parametrization"] == "mup"
         and (c["mup_base_width"] in (None, c["n_embd"]) or not c["lm_head"]),
         _defaults("parametrization", "mup_base_width")),
    Rule("constant lr",
         "TrainConfig.lr_at returns lr at every step: warmup and decay are never read",
         lambda c: c["lr_schedule"] == "constant",
         _defaults("warmup_iters", "min_lr", "lr_decay_iters")),
    Rule("cosine to the end", "TrainConfig.lr_at decays over max_iters when lr_decay_iters is 0; "
                              "the shipped "
         "presets spell it out, so 0 becomes max_iters (not the other way round)",
         lambda c: c["lr_schedule"] == "cosine" and c["lr_decay_iters"] == 0,
         lambda c: {"lr_decay_iters": c["max_iters"]}),
)


def canonical_form(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` with every inert setting at its canonical value (the rules apply in order; once is
    enough)."""
    return _apply(flat)[0]


def inert(flat: dict[str, Any]) -> dict[str, tuple[Any, Any, Rule]]:
    """The settings `canonical_form` changes: name -> (given, canonical, the rule that makes it
    inert)."""
    canon, why = _apply(flat)
    return {k: (v, canon[k], why[k]) for k, v in flat.items() if canon[k] != v}


def _apply(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Rule]]:
    out, why = dict(flat), {}
    for rule in RULES:
        if rule.applies(out):
            changed = {k: v for k, v in rule.resets(out).items() if out[k] != v}
            out |= changed
            why |= dict.fromkeys(changed, rule)
    return out, why

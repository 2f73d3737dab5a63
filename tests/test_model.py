"""Each switch changes the architecture exactly as specified, and only there."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.config import resolve
from experiments.definitions import get_experiment
from nanogpt.model import GPT, MLP, CausalSelfAttention, ModelConfig

TUTORIAL = resolve("tutorial").model
V, C, T, L = TUTORIAL.vocab_size, TUTORIAL.n_embd, TUTORIAL.block_size, TUTORIAL.n_layer


def plain_pre_ln_gpt_params(v: int, c: int, t: int, n_layer: int) -> int:
    """A textbook pre-LN GPT with biases, untied head: embeddings + blocks + final LN + head."""
    block = 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c)
    return v * c + t * c + n_layer * block + 2 * c + c * v


def params(**changes) -> int:
    return GPT(dataclasses.replace(TUTORIAL, **changes)).num_params()


def test_bigram_is_a_vocab_by_vocab_table():
    cfg = resolve("tutorial", "bigram").model
    model = GPT(cfg)
    assert model.num_params() == 65 * 65 == 4225
    idx = torch.randint(0, 65, (2, 8))
    logits, _ = model(idx)
    assert torch.equal(logits, model.wte.weight[idx])  # logits read straight from the table


def test_all_switches_on_matches_plain_pre_ln_gpt():
    assert GPT(TUTORIAL).num_params() == plain_pre_ln_gpt_params(V, C, T, L) == 42592


@pytest.mark.parametrize(
    ("change", "removed"),
    [
        (dict(attention=False), L * (2 * C + 4 * C * C + 4 * C)),
        (dict(mlp=False), L * (2 * C + 8 * C * C + 5 * C)),
        (dict(layernorm="none"), L * 4 * C + 2 * C),
        (dict(layernorm="post"), 2 * C),  # post-LN keeps the per-sub-layer norms, drops the final one
        (dict(pos_emb=False), T * C),
        (dict(weight_tying=True), V * C),
        (dict(residual=False), 0),
        (dict(init="default"), 0),
        (dict(n_head=1), 0),
        (dict(dropout=0.2), 0),
    ],
)
def test_each_switch_removes_exactly_its_parameters(change, removed):
    assert GPT(TUTORIAL).num_params() - params(**change) == removed


def test_switched_off_components_are_not_built():
    model = GPT(dataclasses.replace(TUTORIAL, attention=False, mlp=False, layernorm="none", pos_emb=False))
    kinds = {type(m) for m in model.modules()}
    assert CausalSelfAttention not in kinds and MLP not in kinds and torch.nn.LayerNorm not in kinds
    assert len(model.blocks) == 0 and isinstance(model.add_positions, torch.nn.Identity)


def test_n_head_sets_the_head_size():
    for n_head in (1, 4):
        attn = next(m for m in GPT(dataclasses.replace(TUTORIAL, n_head=n_head)).modules()
                    if isinstance(m, CausalSelfAttention))
        assert attn.n_head == n_head


def test_residual_and_layernorm_placement_change_the_function():
    torch.manual_seed(0)
    idx = torch.randint(0, V, (2, T))
    outputs = []
    for change in (dict(), dict(residual=False), dict(layernorm="post"), dict(layernorm="none")):
        torch.manual_seed(0)
        outputs.append(GPT(dataclasses.replace(TUTORIAL, **change))(idx)[0])
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert not torch.allclose(outputs[i], outputs[j])


def test_gpt2_init_is_normal_002_with_zero_bias():
    model = GPT(dataclasses.replace(TUTORIAL, n_embd=256, n_head=4))
    w = model.wte.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear)
               and m.bias is not None)
    default = GPT(dataclasses.replace(TUTORIAL, init="default"))
    assert default.wte.weight.std().item() > 0.5  # PyTorch's N(0, 1) embedding init


def test_scaled_residual_init_shrinks_only_the_residual_projections():
    cfg = dataclasses.replace(TUTORIAL, n_embd=256, n_head=4, n_layer=8, scaled_residual_init=True)
    model = GPT(cfg)
    expected = 0.02 / (2 * cfg.n_layer) ** 0.5
    attn = next(m for m in model.modules() if isinstance(m, CausalSelfAttention))
    assert abs(attn.proj.weight.std().item() - expected) < 0.1 * expected
    assert abs(attn.qkv.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("variant", [v.name for v in get_experiment("ladder").variants])
def test_flops_per_token_matches_torch_flop_counter(variant):
    model = GPT(resolve("tutorial", variant).model).eval()
    idx = torch.randint(0, V, (1, T))
    n_attn = sum(isinstance(m, CausalSelfAttention) for m in model.modules())
    q = torch.randn(1, max(model.config.n_head, 1), T, C // max(model.config.n_head, 1))
    with FlopCounterMode(display=False) as counter:
        model(idx)
        # torch's counter does not see SDPA's CPU kernel; count the same-shaped attention explicitly.
        for _ in range(n_attn):
            (q @ q.transpose(-1, -2)).softmax(-1) @ q
    assert model.flops_per_token() * T == counter.get_total_flops()


def test_ladder_adds_one_component_per_rung_and_ends_at_the_full_model():
    configs = [resolve("tutorial", f"ladder/{v.name}").model for v in get_experiment("ladder").variants]
    for before, after in zip(configs, configs[1:], strict=False):
        fields = dataclasses.fields(ModelConfig)
        changed = {f.name for f in fields if getattr(before, f.name) != getattr(after, f.name)}
        assert changed and changed <= {"lm_head", "pos_emb", "attention", "n_head", "mlp", "n_layer", "residual",
                                       "layernorm", "init", "dropout", "weight_tying"}
    assert configs[-1] == TUTORIAL
    sizes = [GPT(c).num_params() for c in configs]
    assert sizes[0] == 4225 and sizes[-1] == GPT(TUTORIAL).num_params()


def test_generate_respects_length_vocab_and_top_k():
    model = GPT(TUTORIAL)
    out = model.generate(torch.zeros((1, 1), dtype=torch.long), 20, top_k=1)
    assert out.shape == (1, 21) and int(out.max()) < V
    again = model.generate(torch.zeros((1, 1), dtype=torch.long), 20, top_k=1)
    assert torch.equal(out, again)  # top_k=1 is greedy: deterministic


@pytest.mark.parametrize(
    ("change", "message"),
    [(dict(n_embd=30, n_head=4), "divisible"), (dict(dropout=1.0), "dropout"),
     (dict(lm_head=False), "lm_head"), (dict(layernorm="both"), "layernorm")],
)
def test_impossible_configs_are_refused_with_a_reason(change, message):
    with pytest.raises(ValueError, match=message):
        GPT(dataclasses.replace(TUTORIAL, **change))

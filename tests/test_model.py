"""Each switch changes the architecture exactly as specified, and only there."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.config import resolve, with_corpus
from experiments.definitions import Experiment, get_experiment
from experiments.presets import PRESETS
from experiments.settings import FORMAT_1_HASHED, LABELS, REGISTRY
from nanogpt.checkpoint import CheckpointError, load
from nanogpt.data import TINY_SHAKESPEARE_SHA256
from nanogpt.model import GPT, MLP, CausalSelfAttention, ModelConfig, Rotary
from tests.exact_resume import assert_resumes_exactly

TUTORIAL = resolve("tutorial").model


def names(experiment: Experiment, settings: dict) -> list[str]:
    """The variants of an experiment that apply to a preset's settings."""
    return [v.name for v in experiment.applicable(settings)]
V, C, T, L = TUTORIAL.vocab_size, TUTORIAL.n_embd, TUTORIAL.block_size, TUTORIAL.n_layer


def plain_pre_ln_gpt_params(v: int, c: int, t: int, n_layer: int) -> int:
    """A textbook pre-LN GPT with biases, untied head: embeddings + blocks + final LN + head."""
    block = 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (4 * c * c + 4 * c) + (4 * c * c
                                                                                       + c)
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
        (dict(norm_position="none"), L * 4 * C + 2 * C),
        # post-LN keeps the per-sub-layer norms, drops the final one
        (dict(norm_position="post"), 2 * C),
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
    model = GPT(dataclasses.replace(TUTORIAL, attention=False, mlp=False, norm_position="none",
                                    pos_emb=False))
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
    for change in (dict(), dict(residual=False), dict(norm_position="post"),
                   dict(norm_position="none")):
        torch.manual_seed(0)
        outputs.append(GPT(dataclasses.replace(TUTORIAL, **change))(idx)[0])
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert not torch.allclose(outputs[i], outputs[j])


def test_gpt2_init_is_normal_002_with_zero_bias():
    model = GPT(dataclasses.replace(TUTORIAL, n_embd=256, n_head=4))
    w = model.wte.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules()
               if isinstance(m, torch.nn.Linear)
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


def assert_flops_exact(cfg: ModelConfig) -> None:
    model = GPT(cfg).eval()
    idx = torch.randint(0, V, (1, T))
    n_attn = sum(isinstance(m, CausalSelfAttention) for m in model.modules())
    q = torch.randn(1, max(model.config.n_head, 1), T, C // max(model.config.n_head, 1))
    with FlopCounterMode(display=False) as counter:
        model(idx)
        # torch's counter does not see SDPA's CPU kernel; count the same-shaped attention explicitly
        # (every query head attends, however few key/value heads it shares).
        for _ in range(n_attn):
            (q @ q.transpose(-1, -2)).softmax(-1) @ q
    assert model.flops_per_token() * T == counter.get_total_flops()


@pytest.mark.parametrize("variant", [v for e in ("ladder", "modern", "modern_leave_one_out",
                                                 "norms")
                                     for v in names(get_experiment(e),
                                                    PRESETS["tutorial"]["settings"])])
def test_flops_per_token_matches_torch_flop_counter(variant):
    assert_flops_exact(resolve("tutorial", variant).model)


def test_ladder_adds_one_component_per_rung_and_ends_at_the_full_model():
    configs = [resolve("tutorial", f"ladder/{v.name}").model
               for v in get_experiment("ladder").variants]
    for before, after in zip(configs, configs[1:], strict=False):
        fields = dataclasses.fields(ModelConfig)
        changed = {f.name for f in fields if getattr(before, f.name) != getattr(after, f.name)}
        assert changed and changed <= {"lm_head", "pos_emb", "attention", "n_head", "mlp",
                                       "n_layer", "residual", "norm_position", "init", "dropout",
                                       "weight_tying"}
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
     (dict(lm_head=False), "lm_head"), (dict(norm_position="both"), "norm_position")],
)
def test_impossible_configs_are_refused_with_a_reason(change, message):
    with pytest.raises(ValueError, match=message):
        GPT(dataclasses.replace(TUTORIAL, **change))


# ---- modern components ---------------------------------------------------------------------------

POSITIONS = {"learned": dict(pos_emb=True, rope=False), "rope": dict(pos_emb=False, rope=True),
             "nope": dict(pos_emb=False, rope=False)}
# Every norm x MLP x positions, each with the attention switches off and all on (QK-norm,
# multi-query, no bias).
MODERN = [dict(norm=norm, activation=act, **POSITIONS[pos], qk_norm=extras, n_kv_head=int(extras),
               bias=not extras)
          for norm, act, pos, extras in itertools.product(("layernorm", "rmsnorm"),
                                                          ("gelu", "swiglu"), POSITIONS,
                                                          (False, True))]
MODERN_IDS = ["-".join(f"{k}={v}" for k, v in change.items()) for change in MODERN]


@pytest.mark.parametrize("change", MODERN, ids=MODERN_IDS)
def test_flops_per_token_is_exact_for_every_modern_combination(change):
    assert_flops_exact(dataclasses.replace(TUTORIAL, **change))


@pytest.mark.parametrize("change", MODERN, ids=MODERN_IDS)
def test_every_modern_combination_trains_and_resumes_exactly(change, tiny_corpus):
    assert_resumes_exactly({"max_iters": 4, "eval_interval": 2, "eval_iters": 1,
                            "data": str(tiny_corpus), **change},
                           resume_at=2)


HS = C // TUTORIAL.n_head  # head size


def swiglu_mlp_params(c: int, bias: bool) -> int:
    """Gate, up and down projections (biases: 2 x hidden + c) with hidden chosen to match 8c^2 (+
    5c)."""
    hidden = round((8 * c * c + 4 * c * bias) / (3 * c + 2 * bias))
    return 3 * c * hidden + (2 * hidden + c if bias else 0)


@pytest.mark.parametrize(
    ("change", "added"),
    [
        (dict(norm="rmsnorm"), -(2 * L + 1) * C),  # RMSNorm keeps the gain, has no bias
        (dict(activation="swiglu"), L * (swiglu_mlp_params(C, True) - (8 * C * C + 5 * C))),
        (dict(rope=True), 0),  # rotations have no parameters
        (dict(rope=True, pos_emb=False), -T * C),
        # a LayerNorm (gain and bias) of head size for q and for k
        (dict(qk_norm=True), L * 2 * 2 * HS),
        (dict(qk_norm=True, norm="rmsnorm"), L * 2 * HS - (2 * L + 1) * C),
        (dict(n_kv_head=TUTORIAL.n_head), 0),
        # k and v projections: 2 heads instead of 4
        (dict(n_kv_head=2), -L * 2 * (C - 2 * HS) * (C + 1)),
        (dict(n_kv_head=1), -L * 2 * (C - HS) * (C + 1)),
    ],
)
def test_each_modern_switch_changes_exactly_its_parameters(change, added):
    assert params(**change) - GPT(TUTORIAL).num_params() == added


@pytest.mark.parametrize("n_embd", [16, 32, 48, 64, 96, 128, 384, 768, 4096])
@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_mlp_matches_the_4x_mlp_within_one_percent(n_embd, bias):
    def mlp_params(activation: str) -> int:
        cfg = dataclasses.replace(TUTORIAL, n_embd=n_embd, activation=activation, bias=bias)
        return sum(p.numel() for p in MLP(cfg).parameters())

    assert mlp_params("swiglu") == swiglu_mlp_params(n_embd, bias)
    assert abs(mlp_params("swiglu") / mlp_params("gelu") - 1) < 0.01


def test_rmsnorm_matches_its_formula():
    norm = GPT(dataclasses.replace(TUTORIAL, norm="rmsnorm")).blocks[0].ln_1
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, C) * 4 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-5)
    assert not any("bias" in name for name, _ in norm.named_parameters())


def test_rope_scores_depend_only_on_relative_position():
    rotary = Rotary(head_size=16, block_size=64)
    q, k = torch.randn(1, 2, 20, 16), torch.randn(1, 2, 20, 16)
    shift = 13  # the same queries and keys, 13 positions later
    q_later, k_later = (torch.cat([torch.randn(1, 2, shift, 16), t], dim=2) for t in (q, k))
    scores = rotary(q) @ rotary(k).transpose(-1, -2)
    scores_later = (rotary(q_later) @ rotary(k_later).transpose(-1, -2))[..., shift:, shift:]
    assert torch.allclose(scores, scores_later, atol=1e-4)
    assert not torch.allclose(scores, q @ k.transpose(-1, -2), atol=1e-2)  # it does rotate


def test_rope_leaves_position_zero_unrotated_and_keeps_norms():
    rotary = Rotary(head_size=8, block_size=16)
    x = torch.randn(2, 3, 16, 8)
    y = rotary(x)
    assert torch.equal(y[:, :, 0], x[:, :, 0])
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_gqa_with_as_many_kv_heads_as_query_heads_is_standard_attention():
    torch.manual_seed(0)
    standard = GPT(TUTORIAL)
    gqa = GPT(dataclasses.replace(TUTORIAL, n_kv_head=TUTORIAL.n_head))
    gqa.load_state_dict(standard.state_dict())  # same parameter names and shapes
    idx = torch.randint(0, V, (2, T))
    assert torch.equal(gqa(idx)[0], standard(idx)[0])


def test_gqa_shares_each_kv_head_among_its_group_of_query_heads():
    torch.manual_seed(0)
    grouped = CausalSelfAttention(dataclasses.replace(TUTORIAL, n_kv_head=2))
    standard = CausalSelfAttention(TUTORIAL)
    q, k, v = grouped.qkv.weight.split(grouped.sizes)
    qb, kb, vb = grouped.qkv.bias.split(grouped.sizes)

    def repeat(t: torch.Tensor) -> torch.Tensor:  # kv head h serves query heads 2h and 2h+1
        return t.view(2, HS, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(C, *t.shape[1:])

    with torch.no_grad():
        standard.qkv.weight.copy_(torch.cat([q, repeat(k), repeat(v)]))
        standard.qkv.bias.copy_(torch.cat([qb, repeat(kb), repeat(vb)]))
        standard.proj.load_state_dict(grouped.proj.state_dict())
    x = torch.randn(2, T, C)
    assert torch.allclose(grouped(x), standard(x), atol=1e-6)


def test_parameter_names_do_not_depend_on_unrelated_switches():
    def names(**change) -> set[str]:
        return {n for n, _ in GPT(dataclasses.replace(TUTORIAL, **change)).named_parameters()
                if "ln_f" not in n}

    pre = names()
    assert ("blocks.0.attn.qkv.weight" in pre and "blocks.2.mlp.fc.weight" in pre
            and "blocks.1.ln_2.weight" in pre)
    for change in (dict(norm_position="post"), dict(residual=False), dict(rope=True),
                   dict(n_kv_head=2), dict(activation="swiglu"), dict(scaled_residual_init=True)):
        assert names(**change) == pre, change


def test_a_checkpoint_with_old_parameter_names_is_refused_in_one_line(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"step": 10, "model": {"wte.weight": torch.zeros(1),
                                      "blocks.0.0.fn.1.qkv.weight": torch.zeros(1)}},
               path)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.0\.fn\.1\.qkv\.weight.*--force") as e:
        load(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("preset", "variant", "config_hash"), [
    ("tutorial", "full", "4aac79c56b71d7e6922a5a0294f296864fc51d295575ad4b7c3e01c3aed2c76d"),
    ("tutorial", "bigram", "1135554dc45ec9fb5fef03f71b0c74142d8bc6a58ef274970fa235182bbe9b66"),
    ("smoke", "no_mlp", "461495ad20870f263554d40105d0d13807ae7dc9de29255e1886e1352a184346"),
    ("tutorial", "layernorm", "5073c3d76ff29edd8f34fa342e7dcc616d2d6f821b3484bc06a7d0283b1b8b3b"),
])
def test_configs_from_before_the_modern_switches_keep_their_hash(preset, variant, config_hash):
    """Computed on main before these switches existed: `--dry-run --seed 2`, with Tiny
    Shakespeare."""
    cfg = with_corpus(resolve(preset, variant, seed=2), 65, TINY_SHAKESPEARE_SHA256,
                      (1_003_854, 111_540))
    assert cfg.hash == config_hash


def test_added_settings_are_left_out_of_the_hash_only_at_their_neutral_value():
    added = {s.name for s in REGISTRY.values() if not s.label and s.hash_key not in FORMAT_1_HASHED}
    assert added == {"norm", "rope", "qk_norm", "n_kv_head", "z_loss", "parametrization",
                     "mup_base_width"}
    assert {"experiment", "preset", "variant", "device", "compile", "trial", "study", "group",
            "job_type",
                      "tags", "dtype_reason"} == LABELS
    base = resolve("tutorial")
    assert resolve("tutorial", overrides={"rope": True}).hash != base.hash
    assert resolve("tutorial", overrides={"n_kv_head": 0}).hash == base.hash


def test_modern_ladder_changes_one_component_per_rung_and_ends_at_the_llama_baseline():
    settings = PRESETS["modern"]["settings"]
    configs = [resolve("modern", v).model for v in names(get_experiment("modern"), settings)]
    assert configs[0] == resolve("modern").model  # the preset's full model is the GPT-2 block
    for before, after in itertools.pairwise(configs):
        changed = {f.name for f in dataclasses.fields(ModelConfig)
                   if getattr(before, f.name) != getattr(after, f.name)}
        assert changed in ({"norm"}, {"activation"}, {"rope", "pos_emb"}, {"bias"}, {"n_kv_head"},
                           {"qk_norm"})
    assert configs[-1] == resolve("modern", "llama").model
    for variant in names(get_experiment("modern_leave_one_out"), settings)[1:]:
        changed = {f.name for f in dataclasses.fields(ModelConfig)
                   if getattr(configs[-1], f.name) != getattr(resolve("modern", variant).model,
                                                              f.name)}
        assert 1 <= len(changed) <= 2, (variant, changed)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("experiment", ["modern", "modern_leave_one_out", "norms"])
def test_modern_experiments_resolve_on_every_preset(preset, experiment):
    for variant in names(get_experiment(experiment), PRESETS[preset]["settings"]):
        GPT(resolve(preset, variant).model)  # validates and builds

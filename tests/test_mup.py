"""muP as a switch (nanogpt.mup): SP at its base width, and every rule the `mup` package's.

The package is a test-only dependency (the dev extra), imported inside the tests that use it: the
GPU check machine lacks it (and does not run this file).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import torch

from benchmarks import coord_check
from experiments.config import resolve
from experiments.plan import plan
from experiments.settings import RunConfig
from nanogpt import mup as our_mup
from nanogpt.model import GPT, ModelConfig
from nanogpt.train import param_groups
from tests.conftest import run_module

HEAD_SIZE = 16  # the modern preset's 64 / 4 heads; a width axis keeps it and adds heads
BASE = 64  # the modern preset's n_embd: muP's base width by default
# (variant, overrides): GPT-2's block (tied, GPT-2 init); the Llama-style block (SwiGLU, whose
# rounded hidden size makes its down projection grow by 256/171 from 64 to 96, not 1.5; RMSNorm,
# RoPE, QK-norm, GQA, no biases); PyTorch's own init, untied. PyTorch's init tied is left out: the
# package's MuSharedReadout rescales the shared embedding as if it were a Linear's init; we keep
# the embedding's.
CASES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "gpt2_tied": (None, {}),
    "llama": ("modern_leave_one_out/llama", {}),
    "pytorch_init": (None, {"init": "default", "weight_tying": False}),
}


def at_width(case: str, width: int, parametrization: str = "mup") -> RunConfig:
    variant, overrides = CASES[case]
    width_settings = {"n_embd": width, "n_head": width // HEAD_SIZE}
    return resolve("modern", variant,
                   overrides=overrides | width_settings | {"parametrization": parametrization})


def test_mup_at_the_base_width_is_the_sp_run(tiny_corpus, tmp_path):
    sp = resolve("modern")
    for given in ({"parametrization": "mup"}, {"parametrization": "mup", "mup_base_width": BASE}):
        assert resolve("modern", overrides=given).run_id == sp.run_id
    narrower_base = resolve("modern", overrides={"parametrization": "mup", "mup_base_width": 32})
    assert narrower_base.run_id != sp.run_id
    # The transfer experiment at the preset's width: its muP variant is its SP run, trained once.
    planned, _ = plan(None, [0], ["mup_transfer"], tmp_path, overrides={"data": str(tiny_corpus)})
    lrs = sorted({v.point["lr"] for v in planned.variants})
    at_base = [v for v in planned.variants if v.point == {"lr": lrs[0], "width": BASE}]
    assert [(v.name, v.same_as) for v in at_base] == [("sp", None), ("mup", "mup_transfer/sp")]
    # one run less per lr: at the base width
    assert len(planned.runs) == len(planned.variants) - len(lrs)


def test_mup_scales_only_away_from_its_base_width():
    sp, wide = at_width("gpt2_tied", 128, "sp").model, at_width("gpt2_tied", 128).model
    assert wide.mup_base_width == BASE and sp.mup_base_width is None  # SP's one spelling
    torch.manual_seed(0)
    sp_model = GPT(sp)
    torch.manual_seed(0)
    mup_model = GPT(wide)
    assert isinstance(sp_model.readout_multiplier, torch.nn.Identity)
    assert mup_model.readout_multiplier.factor == 0.5
    sp_params, mup_params = dict(sp_model.named_parameters()), dict(mup_model.named_parameters())
    assert sp_params.keys() == mup_params.keys()
    scaled = {n for n, p in sp_params.items() if not torch.equal(p, mup_params[n])}
    assert scaled == {n for n, w in mup_model.widths().items() if w.hidden}
    assert all(re.search(r"\.(qkv|proj|fc)\.weight$", n) for n in scaled) and len(scaled) == 4 * 4


def package_twin(mup: Any, cfg: ModelConfig, seed: int) -> GPT:
    """Our model at `cfg`'s width made muP by the package, from our SP twin's random numbers: its
    readout a MuReadout (MuSharedReadout when tied), its base shapes set against the base model
    (the delta model, at another width, tells which dimensions grow), then our SP init drawn by the
    package's `mup.init.normal_` in place of torch's, or PyTorch's init as `set_base_shapes`
    rescales it."""
    sp = dataclasses.replace(cfg, parametrization="sp", mup_base_width=None)
    with torch.device("meta"):  # shapes only, and no draws from the generator
        base = GPT(dataclasses.replace(sp, n_embd=BASE, n_head=BASE // HEAD_SIZE))
        delta = GPT(dataclasses.replace(sp, n_embd=2 * BASE, n_head=2 * BASE // HEAD_SIZE))
    torch.manual_seed(seed)
    twin = GPT(dataclasses.replace(sp, init="default"))  # our model's draws up to its GPT-2 init
    if cfg.weight_tying:
        readout = mup.MuSharedReadout(twin.wte.weight, bias=False, device="meta")
    else:
        readout = mup.MuReadout(cfg.n_embd, cfg.vocab_size, bias=False, device="meta")
        readout.weight = twin.lm_head.weight
    twin.lm_head = readout
    mup.set_base_shapes(twin, base, delta=delta, rescale_params=cfg.init == "default")
    if cfg.init == "gpt2":
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.nn.init, "normal_", mup.init.normal_)
            twin.apply(twin._init_gpt2)
    return twin


@pytest.mark.parametrize("width", [32, 96])
@pytest.mark.parametrize("case", CASES)
def test_our_adam_lrs_weight_decays_and_init_equal_the_mup_packages(case, width):
    """Parameter by parameter, at a width under and over the base: our init is the package's, our
    logits (readout multiplier included) its MuReadout's, our lr and weight decay MuAdamW's."""
    import mup  # the dev extra (requirements.lock)
    cfg = at_width(case, width)
    torch.manual_seed(1)
    ours = GPT(cfg.model)
    twin = package_twin(mup, cfg.model, seed=1)

    ours_params, twin_params = dict(ours.named_parameters()), dict(twin.named_parameters())
    assert ours_params.keys() == twin_params.keys()
    for name, p in ours_params.items():
        torch.testing.assert_close(p, twin_params[name], rtol=1e-6, atol=0, msg=name)
    x = torch.randint(0, cfg.model.vocab_size, (2, 16))
    torch.testing.assert_close(ours(x)[0], twin(x)[0], rtol=1e-5, atol=1e-6)

    sp_groups = [{"params": [twin_params[n] for n in g.names], "weight_decay": g.weight_decay}
                 for g in param_groups(twin, cfg.train)]
    theirs = mup.MuAdamW(sp_groups, lr=cfg.train.lr)  # splits and scales our SP groups
    by_tensor = {id(p): (g["lr"], g["weight_decay"])
                 for g in theirs.param_groups for p in g["params"]}
    package = {name: by_tensor[id(p)] for name, p in twin_params.items()}
    ours_settings = {name: (cfg.train.lr * g.lr_scale, g.weight_decay)
                     for g in param_groups(ours, cfg.train) for name in g.names}
    assert ours_settings.keys() == package.keys()
    for name, settings in ours_settings.items():
        assert settings == pytest.approx(package[name], rel=1e-12), name
    hidden = {n for n, w in ours.widths().items() if w.hidden}
    assert {ours_settings[n][0] for n in hidden} != {cfg.train.lr}  # scaled lrs were compared


def test_the_rules_read_shapes_as_the_package_reads_them():
    """`Width` is the package's infshape: the same growth and multiplier for every parameter."""
    import mup  # the dev extra (requirements.lock)
    cfg = at_width("llama", 96).model
    with torch.device("meta"):
        model, base = GPT(cfg), GPT(cfg.mup_base)
    ours = our_mup.widths(model, base)
    mup.set_base_shapes(model, base, rescale_params=False, do_assert=False)
    assert {n: (w.grows, w.mult) for n, w in ours.items()} == {
        n: (p.infshape.ninf(), p.infshape.width_mult()) for n, p in model.named_parameters()}
    assert ours["blocks.0.mlp.proj.weight"].mult == 256 / 171  # SwiGLU's hidden, not 96 / 64


@pytest.mark.reliability("bad input", "parametrization=mup with a base width that does not fit the "
                         "model: one line, exit 2")
@pytest.mark.parametrize(("base", "message"), [
    (40, r"mup_base_width \(40\) must be a multiple of the head size n_embd/n_head \(16\)"),
    (0, "mup_base_width must be at least 1, got 0"),
])
def test_a_base_width_that_does_not_fit_is_refused_in_one_line(base, message, tiny_corpus,
                                                                tmp_path):
    out = run_module("experiments.run", "--preset", "modern", "--set", "parametrization=mup",
                     "--set", f"mup_base_width={base}", "--data", tiny_corpus,
                     "--results", tmp_path, "--dry-run")
    assert out.returncode == 2, out.stderr
    assert re.search(message, out.stderr) and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_base_width_is_the_presets_whatever_changes_n_embd():
    assert at_width("gpt2_tied", 256).model.mup_base_width == BASE
    wider = resolve("tutorial", overrides={"parametrization": "mup", "n_embd": 64})
    assert wider.model.mup_base_width == 32  # the tutorial preset's own
    given = resolve("modern", overrides={"parametrization": "mup", "n_embd": 128, "n_head": 8,
                                         "mup_base_width": 32})
    assert given.model.mup_base_width == 32
    assert given.model.mup_base.n_head == 2  # heads of the same size, 16: fewer of them


def test_the_coordinate_check_finds_mup_flat_in_width_and_sp_growing(tiny_corpus, tmp_path, capsys):
    """A small `make coord-check`: the measured slopes of log2 RMS against log2 width, written to
    the doc with the command, and the figure."""
    figure, doc = tmp_path / "coord_check.png", tmp_path / "mup.md"
    args = ["--preset", "smoke", "--widths", "16", "32", "64", "--steps", "4", "--seeds", "1"]
    code = coord_check.main([*args, "--set", f"data={tiny_corpus}", "--out", str(figure),
                             "--doc", str(doc)])
    out = capsys.readouterr()
    assert code == 0, out.err
    slopes = {}  # the printed table: parametrization -> embedding, attention, MLP, logits
    for line in out.out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("sp", "mup"):
            slopes[cells[0]] = [float(c) for c in cells[1:]]
    sp, mup = slopes["sp"], slopes["mup"]
    assert max(map(abs, mup)) < 0.3  # embedding, attention, MLP, logits: flat in width
    assert min(sp[1:]) > 0.5  # attention, MLP and logits grow with width under SP
    ratio = float(re.search(r"SP's curves move ([\d.]+)x as much with width as muP's", out.out)[1])
    assert ratio > 4
    assert figure.stat().st_size > 20_000
    section = doc.read_text()
    assert "<!-- bench:coord-check -->" in section and " ".join(args) in section
    assert re.search(r"`: \d+ s \(the runs and the figure\) on ", section)


@pytest.mark.parametrize(("args", "message"), [
    (["--widths", "32", "40"], "width 40 is not a multiple of the preset's head size 16"),
    (["--steps", "0"], "give --steps and --seeds of at least 1"),
])
def test_the_coordinate_check_refuses_bad_input_in_one_line(args, message, tmp_path, capsys):
    written = ["--out", str(tmp_path / "c.png"), "--doc", str(tmp_path / "m.md")]
    code = coord_check.main([*args, *written])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())

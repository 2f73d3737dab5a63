"""Every setting a user gives is applied or refused in one line (issue 17, class 3, and class 6's
messages).

A single run refuses a --set its variant would not apply, naming a variant that takes it; a bare
variant name picks the variant that takes it; a setting given twice must agree; --resume of an
unrecorded config says there is nothing to resume; an ablation says, per variant, which --set a
variant keeps its own value against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import train_speed
from experiments import ablate
from experiments.run import main
from sweeps import optuna as sweeps_cli
from tests.conftest import run_module

SMOKE = ("--preset", "smoke", "--quiet")


def one_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def dry_config(capsys, *args: str) -> dict:
    """The config experiments.run --dry-run prints (it must exit 0)."""
    assert main([*args, "--dry-run"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


OWNED = [  # (variant, --set, what the refusal says)
    ("ladder/full", "attention=false",
     "variant ladder/full sets attention itself (attention=true), so the --set "
     "would not apply; drop the --set, or use --variant leave_one_out/full, which does not set "
     "attention"),
    # the preset's own training
    ("ladder/bigram", "lr=0.0003", "variant ladder/bigram sets lr itself (lr=0.01)"),
    # a bare name no variant takes it as
    ("bigram", "lr=0.0003", "variant ladder/bigram sets lr itself (lr=0.01)"),
    ("leave_one_out/no_mlp", "mlp=true",
     "variant leave_one_out/no_mlp sets mlp itself (mlp=false)"),
]


@pytest.mark.reliability("bad input", "single run: a --set the variant sets itself (run CLI)")
@pytest.mark.parametrize(("variant", "setting", "says"), OWNED,
                         ids=[f"{v} {s}" for v, s, _ in OWNED])
def test_a_run_refuses_a_setting_its_variant_sets_itself(tmp_path, tiny_corpus, capsys, variant,
                                                         setting, says):
    """Exit 2, one line naming the setting, the variant's own value and what to do; nothing written."""
    preset = "tutorial" if "bigram" in variant else "smoke"
    code = main(["--preset", preset, "--variant", variant, "--set", setting, "--data",
                 str(tiny_corpus), "--results", str(tmp_path / "r")])
    line = one_error(capsys)
    assert code == 2 and f"--set {setting}: " in line and says in line, line
    assert not (tmp_path / "r").exists()


def test_the_variant_the_refusal_names_takes_the_setting(tmp_path, tiny_corpus, capsys):
    config = dry_config(capsys, *SMOKE, "--variant", "leave_one_out/full", "--set",
                        "attention=false", "--data", str(tiny_corpus), "--results", str(tmp_path))
    assert config["attention"] is False and config["variant"] == "full"


def test_the_same_value_as_the_variants_own_is_no_conflict(tmp_path, tiny_corpus, capsys):
    config = dry_config(capsys, *SMOKE, "--variant", "ladder/full", "--set", "attention=true",
                        "--data", str(tiny_corpus), "--results", str(tmp_path))
    assert config["attention"] is True


def test_a_bare_name_picks_the_variant_that_takes_the_setting(tmp_path, tiny_corpus, capsys):
    """`full` is ladder/full and leave_one_out/full: only the second takes attention=false."""
    args = (*SMOKE, "--data", str(tiny_corpus), "--results", str(tmp_path), "--set",
            "attention=false")
    assert dry_config(capsys, *args, "--variant", "full")["attention"] is False
    # no --variant: the preset's model, named full
    assert dry_config(capsys, *args)["attention"] is False


def test_no_variant_is_never_ambiguous(tmp_path, tiny_corpus, capsys, monkeypatch):
    """A user's own `full` that differs makes the bare name ambiguous, never the default (class
    6)."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "wide.yaml").write_text(
        "name: wide\nvariants:\n  - {name: full, set: {n_embd: 64}}\n")
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path / "defs"))
    args = (*SMOKE, "--data", str(tiny_corpus), "--results", str(tmp_path / "r"))
    config = dry_config(capsys, *args, "--set", "mlp=false")
    assert (config["variant"], config["n_embd"], config["mlp"]) == ("full", 16, False)
    assert main([*args, "--variant", "full", "--dry-run"]) == 2
    assert ("variant 'full' is ambiguous (ladder/full, leave_one_out/full, wide/full differ)"
            in one_error(capsys))


@pytest.mark.reliability("bad input", "single run: a --set the variant sets itself (make bench)")
def test_bench_refuses_a_setting_its_case_sets_itself(tmp_path):
    """The benchmark's cases are single runs too: exit 2 before anything trains."""
    out = run_module("benchmarks.train_speed", "--case", "tutorial/bigram", "--set", "max_iters=20",
                     "--no-write", "--results", tmp_path / "r")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        "error: --set max_iters=20: variant ladder/bigram sets max_iters itself "
        "(max_iters=3000), so the --set would not apply; drop the --set, or use a "
        "variant that does not set max_iters (see --list-variants; leave_one_out/full "
        "sets nothing)")
    assert not (tmp_path / "r").exists()


@pytest.mark.reliability("bad input", "single run: a sweep's fixed setting the variant sets itself")
def test_a_sweep_refuses_a_fixed_setting_its_variant_sets_itself(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("preset: smoke\nvariant: ladder/full\nset: {mlp: false}\n"
                     "params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    code = sweeps_cli.main(["create", "--study", "s", "--space", str(space), "--results",
                            str(tmp_path / "r")])
    line = one_error(capsys)
    assert (code == 2 and "--set mlp=false: variant ladder/full sets mlp itself (mlp=true)"
            in line), line
    assert not (tmp_path / "r").exists()


TWICE = [
    (("--set", "max_iters=10", "--set", "max_iters=20"),
     "max_iters is given twice (10 by --set max_iters=10, 20 by --set max_iters=20); give it once"),
    (("--set", "layernorm=pre", "--set", "norm_position=post"),
     "norm_position is given twice ('pre' by --set layernorm=pre, 'post' by --set "
     "norm_position=post)"),
    (("--set", "compile=false", "--compile"),
     "compile is given twice (False by --set, True by --compile)"),
    (("--max_iters=10", "--set", "max_iters=20"),
     "max_iters is given twice (20 by --set max_iters=20, 10 by"),
]


@pytest.mark.reliability("bad input",
                         "a setting given twice: --set twice, an earlier name, a flag, --KEY=VALUE")
@pytest.mark.parametrize(("args", "says"), TWICE, ids=[" ".join(a) for a, _ in TWICE])
def test_a_setting_given_twice_with_two_values_is_refused(tmp_path, tiny_corpus, capsys, args,
                                                          says):
    """Not last-wins: exit 2, one line naming both values; nothing written."""
    code = main([*SMOKE, "--data", str(tiny_corpus), "--results", str(tmp_path / "r"), *args])
    line = one_error(capsys)
    assert code == 2 and says in line, line
    assert not (tmp_path / "r").exists()


def test_a_setting_given_twice_with_one_value_is_one_setting(tmp_path, tiny_corpus, capsys):
    config = dry_config(capsys, *SMOKE, "--data", str(tiny_corpus), "--results", str(tmp_path),
                        "--set", "lr=1e-3", "--set", "lr=0.001", "--set", "layernorm=pre", "--set",
                        "norm_position=pre")
    assert config["lr"] == 0.001 and config["norm_position"] == "pre"


@pytest.mark.reliability("bad input", "a setting given twice: make ablate SET=, make bench specs")
def test_ablate_and_bench_refuse_a_setting_given_twice(tmp_path, tiny_corpus, capsys):
    code = ablate.main(["--preset", "smoke", "--seeds", "1", "--data", str(tiny_corpus),
                        "--results", str(tmp_path / "r"), "--set", "lr=0.01", "--set", "lr=0.02",
                        "--dry-run"])
    assert (code == 2 and "lr is given twice (0.01 by --set lr=0.01, 0.02 by --set lr=0.02)"
            in one_error(capsys))
    code = train_speed.main(["--case", "smoke/full:max_iters=10,max_iters=20", "--no-write"])
    assert (code == 2 and "max_iters is given twice (max_iters=10, max_iters=20)"
            in one_error(capsys))
    code = train_speed.main(["--case", "smoke/full:lr=0.02", "--set", "lr=0.01", "--no-write"])
    assert code == 2 and "lr is given twice (lr=0.01, lr=0.02)" in one_error(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.reliability("bad input", "--resume with settings no recorded run has")
def test_resume_of_a_config_never_recorded_says_so(tmp_path, tiny_corpus):
    """Exit 2, one line with the run id it would have and the variant's nearest recorded run; nothing trained."""
    args = (*SMOKE, "--data", tiny_corpus, "--results", tmp_path, "--set", "max_iters=4", "--set",
            "eval_interval=2")
    assert run_module("experiments.run", *args).returncode == 0
    [recorded] = [p for p in (tmp_path / "adhoc").iterdir() if p.is_dir()]
    out = run_module("experiments.run", *args, "--set", "lr=0.02", "--resume")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    would = json.loads(run_module("experiments.run", *args, "--set", "lr=0.02",
                                  "--dry-run").stdout)["run_id"]
    assert out.stderr.startswith(f"error: --resume: nothing to resume for this config: run {would} "
                                 "has no folder in "
                                 f"{tmp_path.resolve() / 'adhoc'}; recorded runs of full there: "
                                 f"{recorded.name} "
                                 "has lr=0.01; give the settings of the run to resume, or drop "
                                 "--resume"), out.stderr
    assert [p for p in (tmp_path / "adhoc").iterdir() if p.is_dir()] == [recorded]
    # a W&B agent's flag
    started = run_module("experiments.run", *args, "--set", "lr=0.02", "--resume-or-start")
    assert started.returncode == 0 and (tmp_path / "adhoc" / would).is_dir(), started.stderr


KEEPS = """\
name: pair
variants:
  - {name: plain}
  - {name: no_mlp, set: {mlp: false}}
"""


def test_an_ablation_says_which_variant_keeps_its_own_value_before_training(tmp_path, tiny_corpus,
                                                                            capsys,
                                                                           monkeypatch):
    """In an ablation the variant keeps its own value by design: one line per variant, in the plan
    and in the run."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "pair.yaml").write_text(KEEPS)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path / "defs"))
    args = ["--preset", "smoke", "--seeds", "1", "--experiments", "pair", "--data",
            str(tiny_corpus), "--results", str(tmp_path / "r"), "--set", "mlp=true", "--set",
            "max_iters=2", "--set", "eval_interval=2", "--wandb", "off", "--jobs", "1"]
    note = "keeps its own mlp=false: the variant sets it, so --set mlp=true does not apply here"
    assert ablate.main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.count(note) == 1
    assert ablate.main(args) == 0
    err = capsys.readouterr().err
    assert err.count(f"pair/no_mlp: {note}") == 1 and "pair/plain: keeps" not in err


@pytest.mark.reliability("bad input", "WANDB_MODE set to a value W&B does not know")
@pytest.mark.parametrize("module", ["experiments.run", "experiments.ablate"])
def test_a_bad_wandb_mode_is_named_as_such(tmp_path, tiny_corpus, module):
    """Not a connection problem: exit 2, one line naming WANDB_MODE and its values; nothing written."""
    out = run_module(module, "--preset", "smoke", "--data", tiny_corpus, "--results",
                     tmp_path / "r", env={"WANDB_MODE": "bogus"})
    assert out.returncode == 2 and out.stderr == (
        "error: WANDB_MODE='bogus' is not a W&B mode; set it to one of online, offline, disabled, "
        "dryrun, run, "
        "shared or unset it (--wandb off turns the mirror off)\n")
    assert not (tmp_path / "r").exists()


def test_with_the_mirror_off_wandb_mode_is_not_read(tmp_path, tiny_corpus, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    dry_config(capsys, *SMOKE, "--data", str(tiny_corpus), "--results", str(tmp_path), "--wandb",
               "off")


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("preset: smoke\n" + text)
    return path


@pytest.mark.parametrize("text", [
    # the preset's n_embd (16) is not divisible by the fixed n_head, but every searched width is
    "set: {n_head: 3}\nparams:\n  n_embd: {type: categorical, choices: [24, 48]}\n",
    # n_head=5 divides many widths in 24..96 (e.g. 25, 40); only the range's ends are tried
    "params:\n  n_head: {type: int, low: 2, high: 6}\n  n_embd: {type: int, low: 24, high: 96}\n",
], ids=["fixed-head-searched-width", "head-and-a-wide-width-range"])
def test_a_valid_search_space_is_accepted(tmp_path, capsys, text):
    """Class 6: the check no longer tests a searched setting against the preset's value, nor blames
    a value whose partners were not all tried."""
    code = sweeps_cli.main(["create", "--study", "s", "--space", str(space_file(tmp_path, text)),
                            "--results", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().err


@pytest.mark.reliability("bad input", "search space: no combination of its values is a valid model")
def test_a_space_with_no_valid_model_names_the_real_problem(tmp_path, capsys):
    path = space_file(
        tmp_path, "set: {n_head: 3}\nparams:\n  n_embd: {type: categorical, choices: [16, 32]}\n")
    code = sweeps_cli.main(["create", "--study", "s", "--space", str(path), "--results",
                            str(tmp_path / "r")])
    line = one_error(capsys)
    assert code == 2 and line.startswith(f"error: {path}: no combination of the searched values "
                                         "gives a valid "
                                         "model (n_embd") and "n_head" in line, line
    assert not (tmp_path / "r").exists()

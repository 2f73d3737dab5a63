"""`python -m benchmarks.train_speed`: real runs measured, compared, and written into their own doc
section."""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks.train_speed import main, table, with_mfu, write_section
from tests.conftest import run_module

QUICK = ["--set", "max_iters=20", "--set", "eval_interval=10"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_measures_a_real_run(tmp_path):
    doc = tmp_path / "benchmarks.md"
    out = run_module("benchmarks.train_speed", "--case", "smoke/full", *QUICK, "--doc", doc,
                     env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    header, row = (line for line in out.stdout.splitlines()
                   if line.startswith(("| case", "| smoke/full")))
    values = dict(zip(cells(header), cells(row), strict=True))
    assert values["iters"] == "20" and values["threads"] == "1"
    assert float(values["ms/iter"]) > 0 and float(values["tokens/s"].replace(",", "")) > 0
    assert values["FLOPs/token (fwd)"] == "15392"  # model.flops_per_token() of the smoke model
    assert 0 < float(values["MFU"].rstrip("%")) < 100
    # peak RSS of a process that imported torch
    assert float(values["peak mem MB"].replace(",", "")) > 50
    assert "torch " in doc.read_text() and "<!-- bench:table -->" in doc.read_text()


def test_compare_alternates_and_reports_a_ratio_and_both_curves(tmp_path):
    doc = tmp_path / "benchmarks.md"
    out = run_module("benchmarks.train_speed", "--compare", "smoke/full", "threads=1",
                     "threads=1,dtype=auto", "--rounds", "2", *QUICK, "--doc", doc)
    assert out.returncode == 0, out.stderr
    assert re.findall(r"round (\d) ([AB])", out.stderr) == [("1", "A"), ("1", "B"), ("2", "A"),
                                                            ("2", "B")]
    assert re.search(r"per round: [\d.]+x, [\d.]+x; median [\d.]+x", out.stdout)
    curve = [line for line in out.stdout.splitlines() if re.match(r"\| \d+ \| ", line)]
    assert [line.split("|")[1].strip() for line in curve] == ["0", "10", "20"]
    assert "<!-- bench:compare-threads=1_dtype=auto -->" in doc.read_text()


def test_interleave_trains_both_in_one_process(tmp_path, capsys):
    code = main(["--compare", "smoke/full", "dtype=float32", "lr=0.02", "--interleave", "5",
                 "--rounds", "2", "--no-write", "--doc", str(tmp_path / "x.md")])
    out = capsys.readouterr()
    assert code == 0
    assert len(re.findall(r"turn \d: A [\d,]+ B [\d,]+ tokens/s", out.err)) == 2
    assert re.search(r"median of per-turn ratios: [\d.]+x", out.out)
    assert not (tmp_path / "x.md").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--compare", "smoke/full", "dtype=float32", "dtype=float64"], "dtype=float64"),
    (["--case", "nope/full"], "unknown preset 'nope'"),
    (["--compare", "smoke/full", "threads=1", "lr"], "not KEY=VALUE"),
    (["--compare", "smoke/full", "code=/nonexistent", "threads=1"], "not a checkout"),
    (["--rounds", "0"], "at least 1"),
])
def test_bad_input_fails_before_any_run(tmp_path, capsys, args, message):
    assert main([*args, "--doc", str(tmp_path / "x.md")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_a_section_is_replaced_and_the_notes_around_it_survive(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written notes.\n")
    write_section("table", "first", doc)
    write_section("compare-x", "other", doc)
    write_section("table", "second", doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written notes.\n")
    assert "second" in text and "first" not in text and text.count("<!-- bench:table -->") == 1
    assert "other" in text


@pytest.fixture
def emulated_bf16(monkeypatch):
    """This CPU as an AVX2-only one, whatever it really is: torch's own capability checks say no."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def test_a_case_in_an_emulated_dtype_is_refused_before_it_runs(tmp_path, capsys, emulated_bf16):
    assert main(["--case", "smoke/full", "--spec", "dtype=bfloat16", "--doc",
                 str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert "emulated" in err and "--allow-emulated" in err
    assert not (tmp_path / "x.md").exists()


def test_mfu_is_never_measured_against_an_emulated_peak(emulated_bf16, monkeypatch):
    probed = []
    monkeypatch.setattr("benchmarks.train_speed.peak_matmul_flops", lambda *key: probed.append(key)
                        or 1e10)
    rows = [{"device": "cpu", "dtype": dtype, "threads": 1, "achieved_flops": 1e9}
            for dtype in ("float32", "bfloat16")]
    fp32, bf16 = with_mfu(rows)
    assert [key[1] for key in probed] == [torch.float32]  # only the native dtype was probed
    assert fp32["mfu"] == pytest.approx(0.1) and bf16["mfu"] is None and bf16["peak_flops"] is None
    assert "emulated" in table([bf16 | BENCH_ROW])


BENCH_ROW = {"case": "smoke/full", "spec": "-", "jobs": 1, "iters": 1, "ms_per_iter": 1.0,
             "tokens_per_sec": 1.0, "flops_per_token": 1, "peak_mem_mb": 1.0, "final_val_loss": 1.0,
             "target": None, "time_to_target_sec": None, "run_sec": 1.0, "process_sec": 1.0}

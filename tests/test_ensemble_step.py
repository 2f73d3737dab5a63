"""`python -m benchmarks.ensemble_step`: real steps of one run alone and of its seeds as ensembles,
timed side by side."""

from __future__ import annotations

import pytest

from benchmarks.ensemble_step import main

QUICK = ["--preset", "smoke", "--seconds", "0.01", "--rounds", "1", "--no-write"]


def test_each_size_is_timed_against_one_run_alone(tiny_corpus, capsys):
    assert main([*QUICK, "--sizes", "2", "3", "--set", f"data={tiny_corpus}"]) == 0
    rows = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("|") and line.strip("|").split("|")[0].strip().isdigit()]
    table = {int(members): (float(step), float(member), float(gain))
             for members, step, member, gain in rows}
    assert sorted(table) == [1, 2, 3]
    alone = table[1][0]
    assert table[1][2] == 1.0
    for members, (step, member, gain) in table.items():
        assert step > 0 and member == pytest.approx(step / members, abs=0.01)
        assert gain == pytest.approx(alone * members / step, rel=0.05)


@pytest.mark.reliability("bad input", "benchmarks.ensemble_step: a size below 2, no rounds, an "
                         "empty window, a variant the preset lacks")
@pytest.mark.parametrize("args", [["--sizes", "1"], ["--rounds", "0"], ["--seconds", "0"],
                                  ["--variant", "ladder/no_such_rung"]])
def test_a_size_below_two_an_empty_window_or_an_unknown_variant_is_refused_in_one_line(args,
                                                                                       capsys):
    """One `error:` line, exit 2, before any step is timed."""
    assert main([*QUICK, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err

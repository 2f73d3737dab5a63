"""Every key of a definition file is typed like a `set:` value (issue 17, class 2), and YAML merge
lists follow the spec (class 9): the earlier mapping wins, the mapping's own keys win over all."""

from __future__ import annotations

import json

import pytest

from experiments import ablate
from experiments.definitions import TOP_KEYS, VARIANT_KEYS, get_experiment
from experiments.run import main

VARIANT = "  - {name: a, set: {n_embd: 32}}\n  - {name: b}\n"
WRONG = [  # (the file, the key, what the one line says); one per key of TOP_KEYS and VARIANT_KEYS
    ("name: [x]\nvariants:\n" + VARIANT, "name", "line 1: name=['x']: expected text"),
    ("name: x\njob_type: 5\nvariants:\n" + VARIANT, "job_type",
     "line 2: job_type=5: expected text"),
    ("name: x\ndescription: {a: 1}\nvariants:\n" + VARIANT, "description",
     "line 2: description={'a': 1}: expected"),
    ("name: x\npreset: 3\nvariants:\n" + VARIANT, "preset", "line 2: preset=3: expected text"),
    ("name: x\ncumulative: maybe\nvariants:\n" + VARIANT, "cumulative",
     "line 2: cumulative=maybe: expected true or "
     "false"),
    ("name: x\ncumulative: 2\nvariants:\n" + VARIANT, "cumulative",
     "line 2: cumulative=2: expected true or false"),
    ("name: x\ncompare: [a]\nvariants:\n" + VARIANT, "compare",
     "line 2: compare=['a']: expected text"),
    ("name: x\nlrs: fast\nvariants:\n" + VARIANT, "lrs",
     "line 2: 'lrs': the learning rates must be a non-empty list"),
    ("name: x\nwidths: [32, wide]\nvariants:\n" + VARIANT, "widths",
     "line 2: 'widths': width=wide: expected a whole"),
    ("name: x\ndepths: [2.5]\nvariants:\n" + VARIANT, "depths",
     "line 2: 'depths': depth=2.5: expected a whole"),
    ("name: x\nvariants: {a: 1}\n", "variants", "needs a mapping with a non-empty 'variants' list"),
    ("name: x\nvariants:\n  - {name: 7}\n", "name", "line 3: name=7: expected text"),
    ("name: x\nvariants:\n  - {name: a, adds: [1]}\n", "adds",
     "line 3: variant 'a': adds=[1]: expected text"),
    ("name: x\nvariants:\n  - {name: a, component: 5}\n", "component",
     "variant 'a': component=5: expected text"),
    ("name: x\nvariants:\n  - {name: a, set: 3}\n", "set",
     "variant 'a': 'set' must be a mapping of settings"),
    ("name: x\nvariants:\n  - {name: a, only_if: true}\n", "only_if",
     "variant 'a': only_if=True: expected text"),
    ("name: x\nvariants:\n  - {name: a, set: {layernorm: pre, norm_position: post}}\n", "set",
     "variant 'a': sets norm_position twice (as layernorm and as norm_position); keep one"),
]


def test_every_key_has_a_wrong_type_case():
    assert {key for _, key, _ in WRONG} == set(TOP_KEYS) | set(VARIANT_KEYS)


@pytest.mark.reliability("bad input", "definition files: every key with a value of the wrong type")
@pytest.mark.parametrize(("text", "key", "says"), WRONG,
                         ids=[f"{k}: {s[:30]}" for _, k, s in WRONG])
def test_a_key_of_the_wrong_type_is_refused_in_one_line(tmp_path, tiny_corpus, monkeypatch, capsys,
                                                        text, key, says):
    """Exit 2, one line naming the file, the line, the key and the type it needs; nothing written."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "mine.yaml").write_text(text)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path / "defs"))
    code = ablate.main(["--preset", "smoke", "--experiments", "x", "--data", str(tiny_corpus),
                        "--results", str(tmp_path / "r"), "--dry-run"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert (lines[0].startswith(f"error: {tmp_path / 'defs' / 'mine.yaml'}") and says
            in lines[0]), lines
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("written", "cumulative"), [('"false"', False), ("'no'", False),
                                                     ('"true"', True), ("off", False), ("1", True)])
def test_cumulative_is_read_as_set_reads_a_bool(tmp_path, monkeypatch, written, cumulative):
    """`cumulative: "false"` (quoted) is false, as --set cumulative-like bools are: b does not
    inherit a's width."""
    (tmp_path / "mine.yaml").write_text(f"name: x\ncumulative: {written}\nvariants:\n" + VARIANT)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path))
    experiment = get_experiment("x")
    assert experiment.cumulative is cumulative
    assert experiment.changes("b", {}) == ({"n_embd": 32} if cumulative else {})


MERGED = """\
name: merged
variants:
  - name: wide
    set: &wide {n_embd: 32, n_layer: 1, dropout: 0.0}
  - name: deep
    set: &deep {n_embd: 16, n_layer: 3, dropout: 0.1, batch_size: 4}
  - name: both
    set: {<<: [*wide, *deep], dropout: 0.2}
"""


def test_a_merge_list_takes_the_earlier_mapping_and_explicit_keys_win(tmp_path, tiny_corpus,
                                                                      monkeypatch, capsys):
    """YAML merge spec: `<<: [*wide, *deep]` takes wide's n_embd and n_layer, deep's batch_size
    (wide has none), and the mapping's own dropout; PyYAML 6.0.4 alone gives deep's n_embd and
    n_layer."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "merged.yaml").write_text(MERGED)
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(tmp_path / "defs"))
    assert main(["--preset", "smoke", "--variant", "merged/both", "--data", str(tiny_corpus),
                 "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert (config["n_embd"], config["n_layer"], config["batch_size"],
            config["dropout"]) == (32, 1, 4, 0.2)

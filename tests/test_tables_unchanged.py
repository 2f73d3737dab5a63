"""Today's tables stay what they were: the Markdown and every CSV of a synthetic folder (a ladder, a
leave-one-out and an LR axis, with every run status), byte for byte as main at 9e53202 wrote them
(tests/golden/todays_tables, from the manifest format 1 that code wrote)."""

from __future__ import annotations

from pathlib import Path

from analysis import report, tables
from experiments import manifest, store
from tests.synthetic_runs import todays_manifest

GOLDEN = Path(__file__).parent / "golden" / "todays_tables"


def test_todays_tables_and_csvs_are_byte_identical(tmp_path):
    written, runs = todays_manifest()
    store.write_json(tmp_path / manifest.MANIFEST, written)
    doc = manifest.read(tmp_path)
    unreadable = "no_mlp-s0-0005bbbb"  # files that cannot be read: no row, but the folder is there
    (tmp_path / unreadable).mkdir()
    planned = tables.planned_runs(doc, runs[runs["run_id"] != unreadable], tmp_path)
    text, files = report.table_files(doc, planned)
    assert files["tables.md"].startswith(text)
    assert sorted(files) == sorted(p.name for p in GOLDEN.iterdir())
    for name, content in files.items():
        assert content == (GOLDEN / name).read_text(encoding="utf-8"), name

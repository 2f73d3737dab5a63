"""Tables, figures and the Markdown report of an experiment: `python -m analysis.report
results/tutorial`.

1. Prints the comparison tables (one per experiment definition in `experiment.json`) and writes them
   into the experiment folder: `tables.md` (every table and one sample per rung) and
   `<definition>.csv` (with axes also `<definition>_lr_grid.csv`, `<definition>_trend.csv`,
   `<definition>_lr_transfer.csv`; the CSV of a table a definition no longer has is removed).
2. Runs `progression.ipynb` headless (papermill, a real kernel) and, with `--storage`, `sweep.ipynb`
   for an Optuna study; each executed notebook is kept in `<folder>/report/` beside its Markdown
   export (`progression.md`, `sweep.md`) and the figures it saved (`figures/*.png` and `*.svg`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import papermill
from nbconvert import MarkdownExporter
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

from analysis import comparison, tables
from analysis.from_optuna import load_study, open_storage
from analysis.from_runstore import load_runstore
from experiments import exits, manifest, store
from sweeps import storage

HERE = Path(__file__).resolve().parent


def table_files(plan: dict[str, Any], planned: pd.DataFrame) -> tuple[str, dict[str, str]]:
    """The tables' Markdown (what is printed) and every file of them by name: `tables.md` (with one
    sample per rung) and one `<table>.csv` per numeric table."""
    text, samples, numeric = comparison.report(plan, planned)
    files = {"tables.md": f"{text}\n{samples}\n" if samples else text}
    return text, files | {f"{name}.csv": t.to_csv(index=False) for name, t in numeric.items()}


def write_tables(folder: Path) -> str:
    """The tables of one experiment folder, written as Markdown (with one sample per rung) and CSV,
    and the CSV of a table its definitions no longer have removed; returns the tables' Markdown.
    The caller holds the folder's manifest lock."""
    plan = manifest.read(folder)
    results = load_runstore(folder.parent, folder.name)
    for problem in results.problems:
        print(f"warning: {problem}", file=sys.stderr)
    text, files = table_files(plan, tables.planned_runs(plan, results.runs, folder))
    for name, content in files.items():
        store.write_atomic(folder / name, content)
    for entry in plan["experiments"]:
        for suffix in comparison.SUFFIXES:
            if f"{entry['name']}{suffix}.csv" not in files:
                (folder / f"{entry['name']}{suffix}.csv").unlink(missing_ok=True)
    return text


def run_notebook(name: str, out_dir: Path, parameters: dict[str, Any],
                 markdown: bool = True) -> Path:
    """Execute analysis/<name>.ipynb into out_dir; export it to Markdown with its figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    executed, partial = out_dir / f"{name}.ipynb", out_dir / f"{name}.partial.ipynb"
    # The kernel imports this very `analysis` package, whatever is installed in the environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    papermill.execute_notebook(HERE / f"{name}.ipynb", partial,
                               parameters={**parameters, "out_dir": str(out_dir)}, cwd=str(HERE),
                               kernel_name="python3", progress_bar=False,
                               # the kernel's own log (its TCP notice) stays out of
                               # `make ablate`'s output
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])
    partial.replace(executed)
    if not markdown:
        return executed
    # The report shows what the notebook found, not its code nor the notes on how to run it.
    config = Config(
        {"TagRemovePreprocessor": {"enabled": True, "remove_cell_tags": {"notebook-only"}}})
    body, resources = MarkdownExporter(config=config, exclude_input=True).from_filename(
        str(executed), resources={"output_files_dir": "figures"})
    for relative, data in resources["outputs"].items():
        store.write_atomic(out_dir / relative, data)
    store.write_atomic(out_dir / f"{name}.md", body)
    return out_dir / f"{name}.md"


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("folder", type=Path, help="the experiment folder, e.g. results/tutorial")
    p.add_argument("--tables-only", action="store_true",
                   help="print and write the tables; run no notebook")
    p.add_argument("--no-markdown", action="store_true",
                   help="save the figures and executed notebooks only")
    p.add_argument("--storage", help="an Optuna storage (sqlite:///sweep.db, postgresql://..., or "
                                     "a journal file) "
                   "whose study gets sweep.ipynb")
    p.add_argument("--study", help="the study: in --storage (default: its only study), or without "
                                   "--storage, "
                   "the study's own storage in the run store (<results>/<study>/optuna.db, or "
                   "$NANOGPT_SWEEP_STORAGE)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # ValueError and FileNotFoundError: a folder, manifest or storage that is not what it should be.
    return exits.run_command(lambda: _report(args), (ValueError, FileNotFoundError),
                             "the report is incomplete; run the same command again")


def _report(args: argparse.Namespace) -> int:
    folder = args.folder.resolve()
    if args.study and not args.storage:  # the study's default storage, found as the sweep made it
        args.storage = storage.choose(None,
                                      store.RunStore(folder.parent).experiment_dir(args.study))
    # the notebook runs in analysis/: a relative path would no longer resolve there
    if args.storage:
        args.storage = storage.absolute(args.storage)
    has_manifest = (folder / manifest.MANIFEST).exists()
    if not has_manifest and not args.storage:
        found = sorted(p.parent.name for p in folder.parent.glob(f"*/{manifest.MANIFEST}"))
        there = (f"the experiment folders in {folder.parent} are {', '.join(found)} (NAME= for "
                 "make); " if found else "")
        raise FileNotFoundError(f"{folder / manifest.MANIFEST} not found; {there}run `make ablate` "
                                "first, or give --storage to report an Optuna study")
    if args.storage:  # fail here, with a plain message, rather than inside the notebook
        load_study(open_storage(args.storage), args.study or None)
    # One report of a folder at a time: the last one to write read every run the others finished.
    with manifest.lock(folder) if has_manifest else contextlib.nullcontext():
        return _write_report(args, folder, has_manifest)


def _write_report(args: argparse.Namespace, folder: Path, has_manifest: bool) -> int:
    if has_manifest:
        print(write_tables(folder), end="")
        print(f"tables and one sample per rung: {folder / 'tables.md'}", file=sys.stderr)
    if args.tables_only:
        return 0
    out_dir, made, notebooks = folder / "report", [], []
    if has_manifest:
        notebooks.append(
            ("progression", {"results": str(folder.parent), "experiment": folder.name}))
    if args.storage:
        notebooks.append(("sweep", {"storage": args.storage, "study": args.study or "",
                                    "results": str(folder.parent)}))
    for name, parameters in notebooks:
        try:
            made.append(run_notebook(name, out_dir, parameters, not args.no_markdown))
        except PapermillExecutionError as e:
            raise exits.CommandFailed(f"{name}.ipynb failed in cell {e.exec_count}: {e.ename}: "
                                      f"{e.evalue}\nthe partly executed notebook is "
                                      f"{out_dir / f'{name}.partial.ipynb'}") from None
    print("report: " + ", ".join(map(str, made)) + f"; figures in {out_dir / 'figures'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

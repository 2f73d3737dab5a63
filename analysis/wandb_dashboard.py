"""W&B dashboards built by code: `python -m analysis.wandb_dashboard results/tutorial`.

From an experiment folder's manifest (`experiment.json`) and its run store, builds with W&B's own
library, `wandb-workspaces` (pydantic models, no server needed to build them):

- a saved workspace view (`wandb_workspaces.workspaces.Workspace`): its run set is this folder's
  runs (`config.experiment` = the folder's name), grouped by `config.variant` in the analysis
  figures' colours; one section per experiment definition with the loss curves, final and best val
  loss per variant, val loss against parameters and FLOPs/token and against each of its axes'
  settings (lr, n_embd, n_layer), the comparison tables (Δ vs the baseline; with a scale axis, per
  size, and its trend) and the samples;
- a report (`wandb_workspaces.reports.v2.Report`), the W&B twin of report/progression.md: the same
  headings, text and tables, and per definition a panel grid whose run set is exactly its runs;
- with `--study`, an Optuna search's section: parallel coordinates over its searched settings.

`--json DIR` writes DIR/workspace.json and DIR/report.json as the library serializes them
(`_to_model().model_dump_json(by_alias=True, exclude_none=True)`), with no key and no network.
Without --json it saves both to W&B (`Workspace.save()`, `Report.save()`) and prints their URLs,
which needs an API key (`wandb login` or WANDB_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from matplotlib.colors import to_hex
from wandb_workspaces import expr
from wandb_workspaces.reports.v2 import internal as report_model
from wandb_workspaces.workspaces import internal as workspace_model

from analysis import comparison, palette, tables
from analysis.comparison import Comparison
from analysis.from_runstore import load_runstore
from experiments import exits, manifest, store
from experiments.settings import ConfigError
from sweeps import storage

WORKSPACE_JSON, REPORT_JSON = "workspace.json", "report.json"
# Where experiments/wandb_mirror.py keeps a run's W&B identity: {"id", "project", "entity", ...}.
MIRROR_STATE = Path("wandb", "mirror.json")
OFFLINE_ENTITY = "offline"  # the entity of JSON built without a login and without --entity
# The keys the panels read, as the mirror logs them: history = metrics.jsonl, summary =
# summary.json, config = config.json (experiments/wandb_mirror.py).
STEP, CURVES = "step", ("val_loss", "train_loss")
FINALS = ("final_val_loss", "best_val_loss")
COSTS = {"params": "parameters", "flops_per_token": "FLOPs per token"}
RUNS_COLUMNS = ("variant", "seed", "status", "params", "flops_per_token", "tokens_per_sec",
                "final_val_loss", "best_val_loss")
CONFIG_COLUMNS = ("variant", "seed")
# The runs table's pinned columns (a config key is `config:<key>.value` in W&B's runs table).
PINNED = [*(f"config:{k}.value" for k in CONFIG_COLUMNS),
          *(f"summary:{k}" for k in RUNS_COLUMNS if k not in CONFIG_COLUMNS)]
SAMPLES = "samples"  # the mirror's summary table of generated text
VARIANT = "variant"
# The spread W&B draws around a group's mean: the lowest to the highest seed.
SPREAD = "minmax"
# Runs were created in plan order (seed-major, definitions in order), so the oldest first is the
# manifest's order.
OLDEST_FIRST = "CreatedTimestamp"
GRID_WIDTH, PANEL_W, PANEL_H = 24, 8, 6  # a report's panel grid is 24 units wide


def variant_colours(entry: dict[str, Any]) -> dict[str, str]:
    """{variant: hex colour}: the colour the analysis figures give it (by its component label)."""
    return {v["name"]: to_hex(palette.colour(v.get("component") or v["name"]))
            for v in entry["variants"]}


def panels(compared: Comparison) -> list[Any]:
    """One definition's panels, shared by its workspace section and its report panel grid."""
    by_variant = {"groupby": wr.Config(VARIANT), "groupby_aggfunc": "mean",
                  "groupby_rangefunc": SPREAD}
    name = compared.name
    made: list[Any] = [
        wr.LinePlot(title=f"{name}: {key} per variant (mean, band: lowest to highest seed)", x=STEP,
                    y=[key], title_x=STEP, title_y=key, **by_variant)
        for key in CURVES
    ]
    made += [wr.BarPlot(title=f"{name}: {key} per variant (mean, bar: lowest to highest seed)",
                        metrics=[key], orientation="v", title_y=key, **by_variant)
             for key in FINALS]
    made += [wr.ScatterPlot(title=f"{name}: final val loss against {label}",
                            x=wr.SummaryMetric(key), y=wr.SummaryMetric("final_val_loss"),
                            log_x=True) for key, label in COSTS.items()]
    # Each axis: every variant over the values of the setting it was trained at.
    made += [wr.ScatterPlot(title=f"{name}: final val loss against the {axis.title}",
                            x=wr.Config(axis.setting), y=wr.SummaryMetric("final_val_loss"),
                            log_x=True) for axis in compared.axes]
    made.append(wr.MarkdownPanel(markdown=f"**{name}** ({compared.delta_header()}, the tables' "
                                 f"numbers)\n\n{compared.markdown()}"))
    return _in_rows(made)


def _in_rows(made: list[Any]) -> list[Any]:
    for i, panel in enumerate(made):  # three panels a row, in the order given
        panel.layout = wr.Layout(x=(i % 3) * PANEL_W, y=(i // 3) * PANEL_H, w=PANEL_W, h=PANEL_H)
    return made


def samples_table() -> wr.WeavePanelSummaryTable:
    """The mirror's `samples` table of every run. Left at the library's default position: it does
    not load a summary table's position back (0.4.13), so a grid of its own keeps the saved JSON
    equal on reload."""
    return wr.WeavePanelSummaryTable(table_name=SAMPLES)


def folder_filter(name: str) -> list[expr.FilterExpr]:
    return [expr.Config("experiment") == name]


def workspace(label: str, plan: dict[str, Any] | None, compared: list[Comparison],
              searched: Searched | None, entity: str, project: str) -> ws.Workspace:
    """The saved view: the folder's runs, a section per definition (runs grouped by variant) and one
    for a search."""
    # Sections lay their panels out in flow order (three a row), so the samples table can come last.
    sections = [ws.Section(name=c.name, panels=[*panels(c), samples_table()],
                           is_open=True,
                           layout_settings=ws.SectionLayoutSettings(columns=3, rows=3))
                for c in compared]
    if searched:
        sections.append(ws.Section(name=f"sweep: {searched.study}", panels=sweep_panels(searched),
                                   is_open=True,
                                   layout_settings=ws.SectionLayoutSettings(columns=3, rows=3)))
    # Trials of a search are runs of one variant: only a definition's variants are groups.
    colours = {v: c for entry in (plan["experiments"] if plan
                                  else []) for v, c in variant_colours(entry).items()}
    return ws.Workspace(
        entity=entity, project=project, name=f"{label}: ablation dashboard", sections=sections,
        settings=ws.WorkspaceSettings(x_axis=STEP),
        runset_settings=ws.RunsetSettings(
            filters=folder_filter(label), groupby=[ws.Config(VARIANT)] if plan else [],
            group_colors=colours, order=[expr.Ordering(expr.Metric(OLDEST_FIRST), ascending=True)],
            pinned_columns=[*PINNED,
                            *(f"config:{p}.value" for p, _ in (searched.params if searched
                                                               else ()))]),
    )


@dataclass(frozen=True)
class Searched:
    """An Optuna search: its study and the settings it searched, (setting, on a log scale) in
    first-trial order."""

    study: str
    params: tuple[tuple[str, bool], ...]


def searched_settings(storage_spec: str, study_name: str | None) -> Searched:
    """The settings a study's trials searched; ValueError for a study that searched none (a grid:
    its manifest already gives it an ablation section)."""
    from analysis.from_optuna import load_study, open_storage

    study = load_study(open_storage(storage_spec), study_name)
    params: dict[str, bool] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            params.setdefault(name, bool(getattr(distribution, "log", False)))
    if not params:
        raise ValueError(f"study {study.study_name!r} searched no setting: a grid study's sections "
                         "come from its experiment.json; leave out --study")
    return Searched(study.study_name, tuple(params.items()))


def sweep_panels(searched: Searched) -> list[Any]:
    """Parallel coordinates over the searched settings and the final val loss, val loss against each
    setting, and every trial's val loss curve."""
    study, final = searched.study, wr.SummaryMetric("final_val_loss")
    made: list[Any] = [
        wr.ParallelCoordinatesPlot(title=f"{study}: searched settings and final val loss", columns=[
            *(wr.ParallelCoordinatesPlotColumn(metric=wr.Config(p),
                                               log=log or None) for p, log in searched.params),
            wr.ParallelCoordinatesPlotColumn(metric=final)]),
        wr.LinePlot(title=f"{study}: val_loss per trial", x=STEP, y=["val_loss"], title_x=STEP,
                    title_y="val_loss"),
        *(wr.ScatterPlot(title=f"{study}: final val loss against {p}", x=wr.Config(p), y=final,
                         log_x=log or None)
          for p, log in searched.params)]
    return _in_rows(made)


def runset(plan: dict[str, Any], entry: dict[str, Any]) -> wr.Runset:
    """Exactly one definition's planned runs (a run shared with another definition is in both)."""
    run_ids = [r["run_id"] for v in entry["variants"] for r in v["runs"]]
    return wr.Runset(
        name=entry["name"],
        filters=[*folder_filter(plan["name"]), expr.Config("run_id").isin(run_ids)],
        groupby=[f"config.{VARIANT}"], order=[wr.OrderBy(OLDEST_FIRST, ascending=True)],
        pinned_columns=PINNED)


def panel_grid(plan: dict[str, Any], entry: dict[str, Any], shown: list[Any]) -> wr.PanelGrid:
    """Panels over one definition's own run set, each variant's group in its colour."""
    group = {v: wr.RunsetGroup(runset_name=entry["name"],
                               keys=(wr.RunsetGroupKey(key=wr.Config(VARIANT), value=v),))
             for v in variant_colours(entry)}
    return wr.PanelGrid(runsets=[runset(plan, entry)], panels=shown,
                        custom_run_colors={group[v]: c for v, c in variant_colours(entry).items()})


def report(label: str, plan: dict[str, Any] | None, compared: list[Comparison], samples: str,
           searched: Searched | None, entity: str, project: str) -> wr.Report:
    """The progression report: title and explanation, per definition its heading, text, tables and
    panels; then the search, if any."""
    blocks: list[Any] = [wr.P(tables.EXPLANATION)] if plan else []
    for c in compared:
        described = [wr.P(c.entry["description"])] if c.entry.get("description") else []
        blocks += [wr.H2(c.name), *described,
                   wr.MarkdownBlock(c.markdown()), panel_grid(plan, c.entry, panels(c)),
                   panel_grid(plan, c.entry, [samples_table()])]
    if samples:
        blocks.append(wr.MarkdownBlock(samples))
    if searched:
        settings = ", ".join(f"{p} (log scale)" if log else p for p, log in searched.params)
        blocks += [wr.H2(f"sweep: {searched.study}"),
                   wr.P(f"The trials of the Optuna study {searched.study}, one run each; searched: "
                        f"{settings}."),
                   wr.PanelGrid(runsets=[wr.Runset(name=searched.study,
                                                   filters=folder_filter(label),
                                                   pinned_columns=PINNED)],
                                panels=sweep_panels(searched))]
    title = (tables.title(plan).removeprefix("# ") if plan
             else f"{label}: Optuna study {searched.study}")
    return wr.Report(entity=entity, project=project, title=title,
                     description=f"The W&B twin of {label}/report/progression.md", blocks=blocks)


def build(folder: Path, plan: dict[str, Any] | None, searched: Searched | None, entity: str,
          project: str) -> tuple[ws.Workspace, wr.Report]:
    """The workspace and the report of one experiment folder, with the tables' numbers from its run
    store."""
    compared: list[Comparison] = []
    samples = ""
    if plan:
        results = load_runstore(folder.parent, folder.name)
        for problem in results.problems:
            print(f"warning: {problem}", file=sys.stderr)
        planned = tables.planned_runs(plan, results.runs, folder)
        compared = list(comparison.of(plan, planned))
        samples = tables.samples_section(plan, planned)
    label = folder.name
    return (workspace(label, plan, compared, searched, entity, project),
            report(label, plan, compared, samples, searched, entity, project))


def to_json(obj: ws.Workspace | wr.Report) -> str:
    """What the library sends to the server, built without one."""
    return obj._to_model().model_dump_json(by_alias=True, exclude_none=True, indent=1)


def load_workspace(text: str) -> ws.Workspace:
    return ws.Workspace._from_model(workspace_model.View.model_validate_json(text))


def load_report(text: str) -> wr.Report:
    return wr.Report._from_model(report_model.ReportViewspec.model_validate_json(text))


def logged_in() -> bool:
    """An API key from `wandb login` or WANDB_API_KEY; asks no server."""
    import wandb

    # Saving is always online: with WANDB_MODE=offline or disabled (the mirror's setting), login()
    # says no key.
    wandb.setup(settings=wandb.Settings(silent=True, mode="online"))
    return bool(wandb.login(prompt=False, verify=False))


def unmirrored(folder: Path, plan: dict[str, Any]) -> tuple[int, list[str]]:
    """How many planned runs `folder` records, and those of them never mirrored to W&B (their panels
    stay empty)."""
    planned = dict.fromkeys(r["run_id"] for e in plan["experiments"] for v in e["variants"]
                            for r in v["runs"])
    recorded = [run_id for run_id in planned if (folder / run_id / store.CONFIG).exists()]
    return len(recorded), [r for r in recorded if not (folder / r / MIRROR_STATE).exists()]


def mirrored_to(folder: Path) -> tuple[set[str], set[str]]:
    """The W&B projects and entities the folder's runs were mirrored to (empty: none was
    mirrored)."""
    states = []
    for path in sorted(folder.glob(f"*/{MIRROR_STATE}")):
        try:
            states.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is unreadable ({e}); give --project and --entity") from None
    return {s["project"] for s in states}, {s["entity"] for s in states if s.get("entity")}


def destination(folder: Path, entity: str | None, project: str | None,
                offline: bool) -> tuple[str, str]:
    """(entity, project): as given, else where the runs were mirrored; ValueError if that is not one
    place."""
    projects, entities = mirrored_to(folder)
    if project is None:
        if len(projects) != 1:
            found = (f"several ({', '.join(sorted(projects))})" if projects
                     else "none (no */wandb/mirror.json)")
            raise ValueError(f"the W&B project of {folder}'s runs is {found}: give --project "
                             "(WANDB_PROJECT= for make)")
        (project,) = projects
    if entity is None and len(entities) > 1:
        raise ValueError(f"{folder}'s runs went to several W&B entities "
                         f"({', '.join(sorted(entities))}): give --entity (WANDB_ENTITY= for make)")
    entity = (entity or next(iter(entities), None)
              or (OFFLINE_ENTITY if offline else _default_entity()))
    return entity, project


def build_parser() -> argparse.ArgumentParser:
    p = exits.ArgumentParser(prog="python -m analysis.wandb_dashboard",
                             description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("folder", type=Path, help="the experiment folder, e.g. results/tutorial")
    p.add_argument("--entity", help="W&B entity (default: the one the runs were mirrored to, else "
                                    "your default "
                   f"entity; '{OFFLINE_ENTITY}' with --json and no login)")
    p.add_argument("--project", help="W&B project (default: the one the runs were mirrored to, "
                   "recorded in each run's wandb/mirror.json)")
    p.add_argument("--study", help="an Optuna search study whose trials are this folder's runs: "
                                   "adds its section "
                   "(parallel coordinates over the searched settings)")
    p.add_argument("--storage", help="the study's storage (default: <folder>/optuna.db or "
                                     "$NANOGPT_SWEEP_STORAGE, "
                   "as `make report` finds it)")
    p.add_argument("--json", type=Path, metavar="DIR",
                   help=f"write DIR/{WORKSPACE_JSON} and DIR/{REPORT_JSON}; no key, no network")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # ValueError and FileNotFoundError: a folder, manifest or storage that is not what it should be.
    return exits.run_command(lambda: _dashboards(args), (ValueError, FileNotFoundError),
                             "nothing was saved or written; run the same command again")


def _dashboards(args: argparse.Namespace) -> int:
    folder = args.folder.resolve()
    offline = args.json is not None
    if not offline and not logged_in():
        raise ConfigError("no W&B API key: run `wandb login` (or set WANDB_API_KEY) to save the "
                          "dashboards, or give --json DIR (JSON=DIR) to write them as files")
    # A search study's folder has no manifest; any other folder must have one.
    has_manifest = not args.study or (folder / manifest.MANIFEST).exists()
    plan = manifest.read(folder) if has_manifest else None
    searched = searched_settings(storage.absolute(storage.choose(args.storage, folder)),
                                 args.study) if args.study else None
    entity, project = destination(folder, args.entity, args.project, offline)
    view, doc = build(folder, plan, searched, entity, project)
    recorded, never = unmirrored(folder, plan) if plan else (0, [])
    if never:
        print(f"warning: {len(never)} of the {recorded} runs in {folder} were never mirrored to "
              f"W&B (no {MIRROR_STATE}; trained with WANDB=off?), e.g. {never[0]}: the dashboards "
              "show no data of theirs; a run is mirrored while it trains, so retrain them with W&B "
              "on to add them", file=sys.stderr)
    if offline:
        # both built before either is written
        texts = {WORKSPACE_JSON: to_json(view), REPORT_JSON: to_json(doc)}
        args.json.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            store.write_atomic(args.json / name, text + "\n")
        print(f"workspace: {args.json / WORKSPACE_JSON}\nreport: {args.json / REPORT_JSON}")
        return 0
    try:
        print(f"workspace: {view.save().url}", flush=True)
        print(f"report: {doc.save().url}")
    except Exception as e:  # noqa: BLE001 - the server's refusal or a lost network, said in one line
        first_line = next(iter(str(e).splitlines()), "")
        raise exits.CommandFailed(f"saving to W&B {entity}/{project} failed ({type(e).__name__}: "
                                  f"{first_line}); check `wandb login` and the network, or give "
                                  "--json DIR") from None
    return 0


def _default_entity() -> str:
    import wandb

    return wandb.Api().default_entity


if __name__ == "__main__":
    sys.exit(main())

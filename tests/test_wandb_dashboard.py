"""W&B dashboards as code, checked against a real smoke ablation mirrored to W&B offline.

The workspace and report JSON are loaded back through wandb-workspaces' own models, and every key a
panel names is looked up in what the offline runs hold, read back with W&B's own `wandb leet
inspect`.
"""

from __future__ import annotations

import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from matplotlib.colors import to_hex
from wandb_workspaces.workspaces import internal as workspace_model

from analysis import palette, wandb_dashboard
from experiments import manifest
from tests.analysis_fixtures import ENV, STUDY, mirror_offline
from tests.conftest import run_module
from tests.wandb_records import of_type, records

# Tests sharing the session's trained smoke ablation run on one xdist worker (make test -n).
pytestmark = pytest.mark.xdist_group("analysis")

PANELS = [(wr.LinePlot, "val_loss"), (wr.LinePlot, "train_loss"), (wr.BarPlot, "final_val_loss"),
          (wr.BarPlot, "best_val_loss"), (wr.ScatterPlot, "params"),
          (wr.ScatterPlot, "flops_per_token"), (wr.MarkdownPanel, None),
          (wr.WeavePanelSummaryTable, "samples")]
OWN = """\
name: depths
job_type: depth-sweep
description: The full model at three depths.
compare: d2
variants:
  - {name: d1, component: shallow, adds: one block, set: {n_layer: 1}}
  - {name: d2, component: middling, adds: two blocks, set: {n_layer: 2}}
  - {name: d3, component: deep, adds: three blocks, set: {n_layer: 3}}
"""


@dataclass
class Logged:
    """What every offline W&B run read holds, by kind, as W&B's reader gives it back."""

    projects: set[str] = field(default_factory=set)
    config: set[str] | None = None
    history: set[str] | None = None
    summary: set[str] | None = None

    def add(self, recs: list[dict]) -> None:
        """Keep the keys this run has too: a key some run lacks would leave a gap in a panel."""
        (run,) = of_type(recs, "run")
        self.projects.add(run["project"])
        found = {"config": set(run["config"]["update"]),
                 "history": {k for h in of_type(recs, "history") for k in h["item"]},
                 "summary": {k for s in of_type(recs, "summary") for k in s["update"]}}
        for kind, keys in found.items():
            setattr(self, kind, keys if getattr(self, kind) is None else getattr(self, kind) & keys)


@pytest.fixture(scope="module")
def wandb_dirs(tmp_path_factory):
    """W&B's config, cache and data in a temp folder; no API key, no service inherited."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as env:
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            env.setenv(var, str(home / var.lower()))
        env.setenv("NETRC", str(home / "no-netrc"))
        for var in ("WANDB_API_KEY", "WANDB_SERVICE"):
            env.delenv(var, raising=False)
        yield home


@pytest.fixture(scope="module")
def mirrored(smoke_results, wandb_dirs, tmp_path_factory) -> tuple[Path, Logged]:
    """The session's smoke ablation (ladder + leave-one-out, 2 seeds), every run mirrored to W&B
    offline by the real mirror in plan order, and what each variant's first-seed run holds, read
    back with `wandb leet inspect` (the other seed's runs log the same keys; reading them too would
    double the fixture's time)."""
    folder = tmp_path_factory.mktemp("mirrored") / "smoke"
    shutil.copytree(smoke_results / "smoke", folder)
    plan = manifest.read(folder)
    run_ids = dict.fromkeys(r["run_id"] for e in plan["experiments"] for v in e["variants"]
                            for r in v["runs"])
    mirror_offline([folder / run_id for run_id in run_ids])
    first_seed = dict.fromkeys(v["runs"][0]["run_id"] for e in plan["experiments"]
                               for v in e["variants"])
    logged = Logged()
    with ThreadPoolExecutor(max_workers=2) as pool:  # each read is one `wandb leet` process
        for recs in pool.map(records, [folder / run_id / "wandb" for run_id in first_seed]):
            logged.add(recs)
    return folder, logged


@pytest.fixture(scope="module")
def written(mirrored, tmp_path_factory) -> Path:
    """`python -m analysis.wandb_dashboard <folder> --json DIR`, run as a real process."""
    folder, _ = mirrored
    out = tmp_path_factory.mktemp("dashboard") / "json"
    done = run_module("analysis.wandb_dashboard", folder, "--json", out, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["workspace:", str(out / "workspace.json"), "report:",
                                   str(out / "report.json")]
    return out


def test_the_json_loads_back_into_an_equal_workspace_and_report(written, mirrored):
    folder, logged = mirrored
    text = (written / "workspace.json").read_text()
    view = wandb_dashboard.load_workspace(text)
    assert isinstance(view, ws.Workspace)
    assert view._to_model() == workspace_model.View.model_validate_json(text)
    # the loaded workspace saves exactly what was written
    assert wandb_dashboard.to_json(view) + "\n" == text
    text = (written / "report.json").read_text()
    doc = wandb_dashboard.load_report(text)
    assert isinstance(doc, wr.Report)
    assert wandb_dashboard.to_json(doc) + "\n" == text
    # The project is the one the runs were mirrored to; no login, so the offline entity.
    assert {view.project} == {doc.project} == logged.projects
    assert view.entity == doc.entity == wandb_dashboard.OFFLINE_ENTITY

    # Built in this process (same panel ids), serialized and loaded back: the library's model is
    # unchanged.
    plan = manifest.read(folder)
    built_view, built_doc = wandb_dashboard.build(folder, plan, None, "me", "p")
    assert (wandb_dashboard.load_workspace(wandb_dashboard.to_json(built_view))._to_model()
            == built_view._to_model())
    assert (wandb_dashboard.load_report(wandb_dashboard.to_json(built_doc))._to_model()
            == built_doc._to_model())


def test_a_section_per_experiment_with_its_panels_in_variant_order(written, mirrored):
    folder, _ = mirrored
    plan = manifest.read(folder)
    view = wandb_dashboard.load_workspace((written / "workspace.json").read_text())
    assert [s.name for s in view.sections] == [e["name"] for e in plan["experiments"]] == [
        "ladder", "leave_one_out"]
    for section, entry in zip(view.sections, plan["experiments"], strict=True):
        assert [(type(p), named(p)) for p in section.panels] == PANELS
        variants = [v["name"] for v in entry["variants"]]
        rows = [line.split("|")[1].strip() for line in section.panels[6].markdown.splitlines()
                if line.startswith("|")]
        # the table's rows (after header and rule), in the manifest's order
        assert rows[2:] == variants
    # The run set: this folder's runs only, grouped by variant in the figures' colours.
    settings = view.runset_settings
    assert settings.filters == "Config(\"experiment\") == 'smoke'"
    assert [g.name for g in settings.groupby] == ["variant"]
    components = {v["name"]: v["component"] for e in plan["experiments"] for v in e["variants"]}
    assert settings.group_colors == {v: to_hex(palette.colour(c)) for v, c in components.items()}
    # removing and adding a component match
    assert settings.group_colors["no_mlp"] == settings.group_colors["mlp"]

    doc = wandb_dashboard.load_report((written / "report.json").read_text())
    assert [b.text for b in doc.blocks if isinstance(b, wr.H2)] == [e["name"]
                                                                    for e in plan["experiments"]]
    grids = [b for b in doc.blocks if isinstance(b, wr.PanelGrid)]
    for entry, (panels, samples) in zip(plan["experiments"],
                                        zip(grids[::2], grids[1::2], strict=True), strict=True):
        assert [(type(p), named(p)) for p in panels.panels + samples.panels] == PANELS
        (runset,) = panels.runsets
        run_ids = [r["run_id"] for v in entry["variants"] for r in v["runs"]]
        # exactly this definition's runs
        assert re.findall(r"'([^']+)'", runset.filters) == ["smoke", *run_ids]


def test_every_key_a_panel_names_is_logged_by_the_runs(written, mirrored):
    _, logged = mirrored
    view = wandb_dashboard.load_workspace((written / "workspace.json").read_text())
    doc = wandb_dashboard.load_report((written / "report.json").read_text())
    wanted = Logged(config=set(), history=set(), summary=set())
    for panel in [p for s in view.sections for p in s.panels] + [p for b in doc.blocks
                                                                 if isinstance(b, wr.PanelGrid)
                                                                 for p in b.panels]:
        keys_of(panel, wanted)
    settings = view.runset_settings
    wanted.config |= {g.name for g in settings.groupby} | filter_keys(settings.filters)
    columns = [*settings.pinned_columns]
    for grid in (b for b in doc.blocks if isinstance(b, wr.PanelGrid)):
        for runset in grid.runsets:
            wanted.config |= {g.removeprefix("config.").removesuffix(".value")
                              for g in runset.groupby}
            wanted.config |= filter_keys(runset.filters)
            columns += runset.pinned_columns
    for column in columns:
        kind, _, key = column.partition(":")
        if kind != "run":  # a run attribute (displayName) is W&B's own
            getattr(wanted, {"config": "config",
                             "summary": "summary"}[kind]).add(key.removesuffix(".value"))
    assert wanted.history == {"step", "val_loss", "train_loss"}
    assert {"final_val_loss", "best_val_loss", "params", "flops_per_token", "samples",
            "status"} <= wanted.summary
    assert {"experiment", "run_id", "variant", "seed"} <= wanted.config
    assert wanted.history - logged.history == set()
    assert wanted.summary - logged.summary == set()
    assert wanted.config - logged.config == set()


def named(panel) -> str | None:
    """The one key a panel is about (its y, metric or table)."""
    if isinstance(panel, wr.LinePlot):
        (y,) = panel.y
        return y.name
    if isinstance(panel, wr.BarPlot):
        (metric,) = panel.metrics
        return metric.name
    if isinstance(panel, wr.ScatterPlot):
        return panel.x.name
    if isinstance(panel, wr.WeavePanelSummaryTable):
        return panel.table_name
    return None


def keys_of(panel, into: Logged) -> None:
    """Every key a panel reads, by kind; a panel type not listed here fails the test."""
    def add(item) -> None:
        if item is None:  # e.g. a line plot of single runs, grouped by nothing
            return
        target = {wr.Config: into.config, wr.SummaryMetric: into.summary,
                  wr.Metric: into.history}[type(item)]
        target.add(item.name)

    if isinstance(panel, wr.LinePlot):
        for item in (panel.x, *panel.y, panel.groupby):
            add(item)
    elif isinstance(panel, wr.BarPlot):
        into.summary |= {m.name for m in panel.metrics}  # a bar is one value per run: its summary
        add(panel.groupby)
    elif isinstance(panel, wr.ScatterPlot):
        add(panel.x)
        add(panel.y)
    elif isinstance(panel, wr.ParallelCoordinatesPlot):
        for column in panel.columns:
            add(column.metric)
    elif isinstance(panel, wr.WeavePanelSummaryTable):
        into.summary.add(panel.table_name)
    else:
        assert isinstance(panel, wr.MarkdownPanel), f"no key check for {type(panel).__name__}"


def filter_keys(filters: str) -> set[str]:
    keys = re.findall(r"Config\(\"([^\"]+)\"\)", filters)
    assert keys and not re.search(r"(Summary|Metric)\w*\(", filters), filters
    return set(keys)


def test_a_definition_of_ones_own_gets_its_section(tmp_path, tiny_corpus, wandb_dirs):
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "depths.yaml").write_text(OWN)
    env = {**ENV, "NANOGPT_EXPERIMENTS": str(tmp_path / "defs")}
    trained = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "1", "--experiments",
                         "depths", "--data", tiny_corpus, "--results", tmp_path / "r", "--wandb",
                         "offline", env=env)
    assert trained.returncode == 0, trained.stderr
    done = run_module("analysis.wandb_dashboard", tmp_path / "r" / "smoke", "--json",
                      tmp_path / "json", "--entity", "me", env=env)
    assert done.returncode == 0, done.stderr
    view = wandb_dashboard.load_workspace((tmp_path / "json" / "workspace.json").read_text())
    (section,) = view.sections
    assert section.name == "depths" and [(type(p), named(p)) for p in section.panels] == PANELS
    assert "Δ val vs d2" in section.panels[6].markdown
    # the mirror's default project
    assert view.entity == "me" and view.project == "nanogpt-ablations"
    assert view.runset_settings.group_colors == {"d1": to_hex(palette.colour("shallow")),
                                                 "d2": to_hex(palette.colour("middling")),
                                                 "d3": to_hex(palette.colour("deep"))}
    doc = wandb_dashboard.load_report((tmp_path / "json" / "report.json").read_text())
    assert [b.text for b in doc.blocks if isinstance(b, wr.H2)] == ["depths"]


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


@pytest.mark.reliability("bad input",
                         "W&B dashboards: no API key, no experiment folder, no W&B project")
def test_saving_without_a_key_fails_with_one_line_and_writes_nothing(tmp_path, mirrored):
    """Exit 2 and one line saying what to do (no key, no folder, no project); nothing written."""
    folder, _ = mirrored
    home = tmp_path / "home"
    home.mkdir()
    env = {**ENV, "HOME": str(home), "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"),
           # and no WANDB_API_KEY (the wandb_dirs fixture removed it)
           "NETRC": str(home / ".netrc")}
    before = snapshot(folder.parent)
    done = run_module("analysis.wandb_dashboard", folder, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(
        "error: no W&B API key: run `wandb login`")
    assert "--json DIR" in done.stderr
    assert snapshot(folder.parent) == before

    done = run_module("analysis.wandb_dashboard", tmp_path, "--json", tmp_path / "json", env=env)
    assert (done.returncode == 2 and done.stderr.count("\n") == 1 and "experiment.json not found"
            in done.stderr)
    unmirrored = tmp_path / "unmirrored"
    unmirrored.mkdir()
    shutil.copy(folder / "experiment.json", unmirrored)
    done = run_module("analysis.wandb_dashboard", unmirrored, "--json", tmp_path / "json", env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "W&B project" in done.stderr and "give --project" in done.stderr
    assert not (tmp_path / "json").exists()


@pytest.mark.reliability("fault", "W&B dashboards over runs never mirrored, or whose files "
                         "disagree")
def test_runs_never_mirrored_or_damaged_are_said_not_passed_over(mirrored, tmp_path, capsys):
    """Half the runs without a W&B copy: one warning counting them (it ended 0 with no word); a run
    whose files disagree: one warning naming the file, and counted damaged in the report's table."""
    folder, _ = mirrored
    copy = tmp_path / "smoke"
    shutil.copytree(folder, copy)
    plan = manifest.read(copy)
    run_ids = list(dict.fromkeys(r["run_id"] for e in plan["experiments"] for v in e["variants"]
                                 for r in v["runs"]))
    for run_id in run_ids[::2]:
        shutil.rmtree(copy / run_id / "wandb")
    damaged = copy / run_ids[1] / "metrics.jsonl"
    damaged.write_text("".join(damaged.read_text().splitlines(keepends=True)[:-1]))

    assert wandb_dashboard.main([str(copy), "--json", str(tmp_path / "json")]) == 0

    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning: ")]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"warning: {damaged}: ends at step 10, but summary.json records")
    assert warnings[1].startswith(f"warning: {len(run_ids[::2])} of the {len(run_ids)} runs in "
                                  f"{copy} were never mirrored to W&B (no wandb/mirror.json")
    assert "1 completed, 1 damaged" in (tmp_path / "json" / "report.json").read_text()


@pytest.mark.parametrize(("axis", "value", "setting"), [("lr", 0.01, "lr"), ("depth", 2, "n_layer"),
                                                      ("width", 16, "n_embd")])
def test_an_axis_adds_val_against_its_setting_and_the_setting_is_logged(mirrored, axis, value,
                                                                       setting):
    folder, logged = mirrored
    plan = manifest.read(folder)
    # As the manifest marks an experiment with an axis: its values, each run's point (smoke's own).
    entry = plan["experiments"][1]
    entry["axes"] = {axis: [value]}
    for variant in entry["variants"]:
        for run in variant["runs"]:
            run[axis] = value
    view, _ = wandb_dashboard.build(folder, plan, None, "me", "p")
    ladder, loo = (wandb_dashboard.load_workspace(wandb_dashboard.to_json(view)).sections)
    assert [named(p) for p in ladder.panels] == [key for _, key in PANELS]
    (axis_panel,) = [p for p in loo.panels
                     if isinstance(p, wr.ScatterPlot) and isinstance(p.x, wr.Config)]
    assert (axis_panel.x.name, axis_panel.y.name, axis_panel.log_x) == (
        setting, "final_val_loss", True)
    assert setting in logged.config and "final_val_loss" in logged.summary
    (text,) = [p.markdown for p in loo.panels if isinstance(p, wr.MarkdownPanel)]
    assert ("slope of Δ val per doubling" in text) == (axis != "lr")  # a scale axis: its trend too


def test_the_layout_picture_is_drawn_from_the_json(written, tmp_path):
    done = run_module("analysis.wandb_layout", written / "workspace.json", tmp_path / "layout.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "layout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = run_module("analysis.wandb_layout", written / "report.json", tmp_path / "no.png")
    assert (done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n")
            == 1)
    assert not (tmp_path / "no.png").exists()


def test_a_search_study_gets_parallel_coordinates_over_its_settings(sweep, wandb_dirs, tmp_path):
    results, storage = sweep
    folder = tmp_path / STUDY
    shutil.copytree(results / STUDY, folder)
    run_dirs = sorted(p for p in folder.iterdir() if (p / "summary.json").exists())
    mirror_offline(run_dirs)
    logged = Logged()
    for run_dir in run_dirs:
        logged.add(records(run_dir / "wandb"))
    done = run_module("analysis.wandb_dashboard", folder, "--study", STUDY, "--storage", storage,
                      "--json", tmp_path / "json", env=ENV)
    assert done.returncode == 0, done.stderr
    view = wandb_dashboard.load_workspace((tmp_path / "json" / "workspace.json").read_text())
    (section,) = view.sections
    assert section.name == f"sweep: {STUDY}"
    coordinates = section.panels[0]
    assert isinstance(coordinates, wr.ParallelCoordinatesPlot)
    assert [(c.metric.name, c.log) for c in coordinates.columns] == [
        ("lr", True), ("n_layer", None), ("n_head", None), ("final_val_loss", None)]
    assert [p.x.name for p in section.panels if isinstance(p, wr.ScatterPlot)] == ["lr", "n_layer",
                                                                                   "n_head"]
    assert view.runset_settings.groupby == []  # each trial is its own line
    doc = wandb_dashboard.load_report((tmp_path / "json" / "report.json").read_text())
    assert [b.text for b in doc.blocks if isinstance(b, wr.H2)] == [f"sweep: {STUDY}"]
    wanted = Logged(config=set(), history=set(), summary=set())
    for panel in [*section.panels, *(p for b in doc.blocks if isinstance(b, wr.PanelGrid)
                                     for p in b.panels)]:
        keys_of(panel, wanted)
    wanted.config |= filter_keys(view.runset_settings.filters)
    assert wanted.config == {"lr", "n_layer", "n_head",
                             "experiment"} and wanted.config <= logged.config
    assert wanted.summary == {"final_val_loss"} and wanted.summary <= logged.summary
    assert wanted.history == {"step", "val_loss"} and wanted.history <= logged.history


@pytest.mark.reliability("fault", "W&B dashboards: the W&B server unreachable while saving")
def test_saving_to_an_unreachable_server_fails_with_one_line(tmp_path, mirrored):
    """A key but no server (a closed local port): exit 1, one line naming the destination, no URL printed."""
    folder, _ = mirrored
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "HOME": str(tmp_path), "WANDB_API_KEY": "a" * 40,
           "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
    done = run_module("analysis.wandb_dashboard", folder, "--entity", "me", env=env, timeout=240)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: saving to W&B me/nanogpt-ablations failed (")

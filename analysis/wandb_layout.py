"""A picture of a saved W&B workspace, drawn from its JSON (no screenshot can be taken without a
server): `python -m analysis.wandb_layout DIR/workspace.json docs/figures/wandb_workspace.png`.

Each section is drawn as the W&B app lays it out (flow: `columnsPerPage` panels a row, in order),
each panel as a box with its kind and title, above them the run set's filter and its group colours.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from experiments import exits, store  # noqa: E402

KIND = {"Run History Line Plot": "line plot", "Bar Chart": "bar chart",
        "Scatter Plot": "scatter plot", "Markdown Panel": "markdown", "Weave": "table",
        "Parallel Coordinates Plot": "parallel coordinates"}
BOX_W, BOX_H, GAP, HEADER = 3.0, 1.1, 0.25, 0.6


def draw(view: dict[str, Any], png: Path) -> None:
    section = view["spec"]["section"]
    sections = section["panelBankConfig"]["sections"]
    run_set = section["runSets"][0]
    colours = [(json.loads(unquote(k.split(":", 2)[2]))[0]["value"],
                c) for k, c in section["customRunColors"].items()
               if k.startswith("run-color-group:")]
    columns = max(s["flowConfig"]["columnsPerPage"] for s in sections)
    rows = [-(-len(s["panels"]) // s["flowConfig"]["columnsPerPage"]) for s in sections]
    width = columns * (BOX_W + GAP) + GAP
    height = 1.6 + sum(HEADER + r * (BOX_H + GAP) for r in rows)
    fig, ax = plt.subplots(figsize=(width * 1.6, height * 1.6))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    filters = " and ".join(f"{f['key']['section']}.{f['key']['name']} {f['op']} {f['value']!r}"
                           for f in run_set["filters"]["filters"])
    grouping = ", ".join(f"{g['section']}.{g['name']}" for g in run_set["grouping"])
    ax.text(GAP, 0.3,
            f"W&B workspace “{view['displayName']}” — runs where {filters}, grouped by {grouping}",
            fontsize=12, weight="bold", va="center")
    for i, (name, colour) in enumerate(colours):  # the group colours, as the legend shows them
        x, y = GAP + (i % 8) * (width - 2 * GAP) / 8, 0.75 + (i // 8) * 0.3
        ax.add_patch(Rectangle((x, y - 0.09), 0.18, 0.18, color=colour))
        ax.text(x + 0.25, y, name, fontsize=8, va="center")
    y = 0.75 + (-(-len(colours) // 8)) * 0.3 + 0.2
    for sec, n_rows in zip(sections, rows, strict=True):
        ax.text(GAP, y + HEADER / 2, f"▾ section: {sec['name']}", fontsize=11, weight="bold",
                va="center")
        y += HEADER
        per_row = sec["flowConfig"]["columnsPerPage"]
        for j, panel in enumerate(sec["panels"]):
            x0, y0 = GAP + (j % per_row) * (BOX_W + GAP), y + (j // per_row) * (BOX_H + GAP)
            ax.add_patch(Rectangle((x0, y0), BOX_W, BOX_H, facecolor="#f4f6fa",
                                   edgecolor="#8a94a6"))
            ax.text(x0 + 0.1, y0 + 0.22, KIND.get(panel["viewType"], panel["viewType"]), fontsize=9,
                    weight="bold")
            ax.text(x0 + 0.1, y0 + 0.45, textwrap.fill(_title(panel), 46), fontsize=7.5, va="top")
            ax.text(x0 + 0.1, y0 + BOX_H - 0.12, _keys(panel.get("config", {})), fontsize=7,
                    color="#4a5468")
        y += n_rows * (BOX_H + GAP)
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    png.parent.mkdir(parents=True, exist_ok=True)
    store.write_atomic(png, image.getvalue())


def _title(panel: dict[str, Any]) -> str:
    config = panel.get("config", {})
    if panel["viewType"] == "Markdown Panel":
        return config.get("value", "").split("\n", 1)[0].replace("*", "")
    if panel["viewType"] == "Weave":
        return "summary table `samples`: the generated text of every run"
    return config.get("chartTitle") or ", ".join(config.get("metrics", []))


def _keys(config: dict[str, Any]) -> str:
    """The keys a chart reads, as the JSON names them."""
    parts = [f"x: {config['xAxis']}"] if "xAxis" in config else []
    parts += [f"y: {config['yAxis']}"] if "yAxis" in config else []
    parts += [f"y: {', '.join(config['metrics'])}"] if config.get("metrics") else []
    if "groupBy" in config:
        parts.append(f"group: {config['groupBy']} ({config.get('groupAgg')}, "
                     f"{config.get('groupArea')})")
    return " · ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    p = exits.ArgumentParser(prog="python -m analysis.wandb_layout",
                             description=__doc__.split("\n\n")[0])
    p.add_argument("workspace", type=Path,
                   help="a workspace.json written by `python -m analysis.wandb_dashboard`")
    p.add_argument("png", type=Path)
    args = p.parse_args(argv)
    return exits.run_command(lambda: _draw(args.workspace, args.png), (ValueError,),
                             "nothing was drawn")


def _draw(workspace: Path, png: Path) -> int:
    try:
        view = json.loads(workspace.read_text(encoding="utf-8"))
        view["spec"]["section"]["panelBankConfig"]["sections"]  # noqa: B018 - a plain error for another JSON
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{workspace} is not a workspace.json ({type(e).__name__}: {e}); write "
                         "one with `make wandb-dashboard JSON=DIR`") from None
    draw(view, png)
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())

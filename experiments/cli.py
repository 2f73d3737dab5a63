"""Command-line options that every entry point shares (runner, ablations, sweeps, benchmarks): one
wording, one parse. Their parser is `experiments.exits.ArgumentParser`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from experiments.wandb_mirror import MODES, WandbSettings

RESULTS_ENV = "NANOGPT_RESULTS"


def default_results() -> Path:
    return Path(os.environ.get(RESULTS_ENV, "results"))


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """--results and --data."""
    add_results_argument(p)
    add_data_argument(p)


def add_results_argument(p: argparse.ArgumentParser,
                         help: str = f"run store folder (default ${RESULTS_ENV} or ./results)"
                         ) -> None:
    """--results: a folder, None when not given (the command picks its default)."""
    p.add_argument("--results", type=Path, default=None, help=help)


def add_data_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="corpus: a UTF-8 text file (default Tiny Shakespeare, downloaded "
                   "once and verified; set NANOGPT_TINYSHAKESPEARE=PATH to use a local copy)")


def add_wandb_arguments(p: argparse.ArgumentParser) -> None:
    """--wandb and --wandb-project; `wandb_settings(args)` reads them back."""
    p.add_argument("--wandb", choices=MODES, default="auto",
                   help="mirror runs to Weights & Biases: auto (default) = online when logged in "
                   "(`wandb login` or WANDB_API_KEY), else offline, and WANDB_MODE wins; online; "
                   "offline (files in <run folder>/wandb/, upload later with `wandb sync`); off. A "
                   "W&B failure never stops training")
    p.add_argument("--wandb-project", metavar="NAME",
                   help="W&B project (default $WANDB_PROJECT or nanogpt-ablations); entity from "
                        "$WANDB_ENTITY")


def wandb_settings(args: argparse.Namespace) -> WandbSettings:
    return WandbSettings(args.wandb, args.wandb_project)

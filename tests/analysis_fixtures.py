"""Real data for the analysis tests, made once per session: a smoke ablation trained by
`experiments.ablate`, a tiny Optuna study whose trials train real runs, and W&B offline mirrors
written by the real `wandb`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHAKESPEARE, run_module

ENV = {"NANOGPT_TINYSHAKESPEARE": str(SHAKESPEARE), "OMP_NUM_THREADS": "1",
       "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
STUDY = "smoke-sweep"
# (lr, n_layer, n_head): the 1e-5 trial stays above the pruner's threshold; n_head 3 does not divide
# n_embd 16.
TRIALS = [(1e-2, 2, 2), (3e-3, 1, 2), (1e-5, 2, 2), (2e-2, 1, 1), (1e-2, 2, 3)]


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    """results/ holding `smoke`: the ladder and leave-one-out, 2 seeds, trained by the real CLI."""
    results = tmp_path_factory.mktemp("results")
    out = run_module("experiments.ablate", "--preset", "smoke", "--seeds", "2", "--results",
                     results, env=ENV)
    assert out.returncode == 0, out.stderr
    return results


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    """(results, storage URL): a SQLite study of smoke runs with completed, pruned and failed
    trials."""
    import optuna

    from experiments.config import ConfigError, resolve
    from experiments.machine import prepare
    from experiments.runner import train_run
    from sweeps.reporter import TrialReporter

    folder = tmp_path_factory.mktemp("sweep")
    results, storage = folder / "results", f"sqlite:///{folder / 'sweep.db'}"

    corpus = [None]

    def objective(trial: optuna.Trial) -> float:
        overrides = {"lr": trial.suggest_float("lr", 1e-5, 3e-2, log=True),
                     "n_layer": trial.suggest_int("n_layer", 1, 2),
                     "n_head": trial.suggest_categorical("n_head", [1, 2, 3]), "max_iters": 30}
        cfg = resolve("smoke", "full", 0, overrides, experiment=STUDY, trial=trial.number,
                      study=STUDY, job_type="sweep")
        ready = prepare(cfg, corpus[0])
        cfg, corpus[0] = ready.cfg, ready.corpus  # the corpus is loaded once
        trial.set_user_attr("run_id", cfg.run_id)
        summary = train_run(cfg, results, callbacks=[TrialReporter(trial)], quiet=True,
                            prepared=ready)
        if summary["status"] == "pruned":
            raise optuna.TrialPruned(summary["reason"])
        return summary["final_val_loss"]

    with pytest.MonkeyPatch.context() as env:
        for key, value in ENV.items():
            env.setenv(key, value)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize",
                                    pruner=optuna.pruners.ThresholdPruner(upper=4.0,
                                                                          n_warmup_steps=10))
        for lr, n_layer, n_head in TRIALS:
            study.enqueue_trial({"lr": lr, "n_layer": n_layer, "n_head": n_head})
        study.optimize(objective, n_trials=len(TRIALS), catch=(ConfigError,))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "FAIL"], states
    return results, storage


def mirror_offline(run_dirs: list[Path]) -> None:
    """Mirror finished run-store runs to W&B offline with the real mirror (it sends what
    metrics.jsonl holds)."""
    import wandb

    from experiments.config import RunConfig
    from experiments.store import read_run
    from experiments.wandb_mirror import WandbMirror, WandbSettings

    for run_dir in run_dirs:
        run = read_run(run_dir)
        mirror = WandbMirror.start(WandbSettings("offline"), run_dir,
                                   RunConfig.from_flat(run.config))
        mirror.close(run.summary, run.samples or None)
    wandb.teardown()  # stop wandb's service process: no test leaves one running

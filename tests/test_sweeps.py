"""Optuna sweeps end to end: real worker processes on real storages (PostgreSQL, SQLite, journal
file).

Trials are smoke-preset runs on a tiny corpus (well under a second each), so the whole file runs in
well under two minutes. PostgreSQL is a throwaway server started once for the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from experiments import manifest, store
from experiments.ablate import plan
from sweeps import best, storage
from sweeps import optuna as sweeps_cli
from tests.conftest import ROOT
from tests.pg_server import create_database, free_port, postgres_server
from tests.wandb_records import history, of_type, records

# One xdist worker for the module's PostgreSQL server and the grid it trains once (make test -n).
pytestmark = pytest.mark.xdist_group("sweeps")

SECRET = "pw-s3cret-7f3a"  # in every PostgreSQL URL here; must never be printed or stored anywhere
HOST = socket.gethostname()


@pytest.fixture(scope="session")
def postgres():
    with postgres_server() as server:
        yield server


def pg_database(server: tuple[str, int], name: str) -> str:
    create_database(*server, name)
    return f"postgresql://postgres:{SECRET}@{server[0]}:{server[1]}/{name}"


def smoke(corpus: Path, max_iters: int = 40, eval_interval: int = 10) -> list[str]:
    return ["--preset", "smoke", "--data", str(corpus), "--set", f"max_iters={max_iters}",
            "--set", f"eval_interval={eval_interval}"]


def cli(*args: str, spec: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m sweeps.optuna ...` as a real process; the storage goes in the environment, as
    `run` does."""
    env = os.environ | ({storage.STORAGE_ENV: spec} if spec else {})
    return subprocess.run([sys.executable, "-m", "sweeps.optuna", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_worker(study: str, results: Path, spec: str, log: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {storage.STORAGE_ENV: spec}
    with log.open("w") as out:
        # Ctrl-C at its default, as in a terminal: a disposition inherited from the test process (an
        # ignored SIGINT survives exec) must not decide whether the worker can be interrupted.
        return subprocess.Popen([sys.executable, "-m", "sweeps.optuna", "worker", "--study", study,
                                 "--results", str(results), "--threads", "1", "--quiet", *extra],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def load(spec: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage.open_storage(spec))


@pytest.fixture
def tiny_grid(tmp_path_factory, monkeypatch) -> str:
    """A three-variant experiment definition (6 grid points over 2 seeds), for the slower grid
    tests."""
    folder = tmp_path_factory.mktemp("definitions")
    (folder / "tiny.yaml").write_text(textwrap.dedent("""
        name: tiny
        description: three small variants for sweep tests
        compare: t_full
        variants:
          - {name: t_full, adds: the smoke model, set: {}}
          - {name: t_no_mlp, adds: without the MLP, set: {mlp: false}}
          - {name: t_one_layer, adds: one block, set: {n_layer: 1}}
    """))
    monkeypatch.setenv("NANOGPT_EXPERIMENTS", str(folder))  # worker processes inherit it
    return "tiny"


def assert_grid_done_once(study: optuna.Study, points: int) -> None:
    """Every grid point completed exactly once; nothing left running or waiting."""
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    done = Counter((t.params["variant"], t.params["seed"]) for t in trials
                   if t.state == TrialState.COMPLETE)
    assert len(done) == points and set(done.values()) == {1}, done


# --- PostgreSQL: two workers, one grid ------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_grid(postgres, tiny_corpus, tmp_path_factory):
    """`run --workers 2`: creates the ladder grid on PostgreSQL, then two worker processes train
    it."""
    results = tmp_path_factory.mktemp("pg-grid")
    url = pg_database(postgres, "grid")
    out = cli("run", "--study", "ladder-pg", "--grid", "ladder", "--seeds", "1", "--workers", "2",
              "--results", str(results), "--quiet", *smoke(tiny_corpus), spec=url)
    assert out.returncode == 0, out.stderr
    return url, results, out.stdout + out.stderr


def test_two_postgres_workers_run_every_grid_point_once(pg_grid, tiny_corpus):
    url, results, _ = pg_grid
    study = load(url, "ladder-pg")
    assert_grid_done_once(study, points=9)
    # both worker processes took trials
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    # The study reproduces `make ablate`: the same run ids, and the manifest analysis reads.
    expected, _ = plan("smoke", [0], ["ladder"], results, "ladder-pg",
                       {"max_iters": 40, "eval_interval": 10, "data": str(tiny_corpus)})
    assert {t.user_attrs["run_id"] for t in study.trials} == {c.run_id for c in expected.runs}
    assert manifest.read(results / "ladder-pg")["experiments"] == expected.manifest["experiments"]
    for trial in study.trials:
        run = store.read_run(results / "ladder-pg" / trial.user_attrs["run_id"])
        assert (run.status == "completed"
                and run.summary["final_val_loss"] == pytest.approx(trial.value))
        assert (run.config["study"], run.config["trial"]) == ("ladder-pg", trial.number)
        assert (run.config["group"], run.config["job_type"]) == ("ladder-pg", "sweep")
    top = json.loads((results / "ladder-pg" / best.BEST).read_text())
    assert top["best"]["value"] == min(t.value for t in study.trials)
    assert top["best"]["config"]["run_id"] == top["best"]["run_id"]


@pytest.mark.reliability(
    "security", "sweep storage password: never printed, stored, or passed on a command line")
def test_storage_password_is_never_printed_or_stored(pg_grid, tmp_path, capfd):
    """Not in output, run folders, best.json, manifest or trial attrs; not in errors for a bad study, server or URL."""
    url, results, output = pg_grid
    assert "postgres:***@" in output  # the storage is named, redacted
    for path in results.rglob("*"):
        if path.is_file() and path.suffix != ".pt":
            assert SECRET not in path.read_text(errors="replace"), path
    study = load(url, "ladder-pg")
    assert SECRET not in json.dumps([study.user_attrs, [t.user_attrs for t in study.trials]])
    # Error paths: an unknown study, a server that is not there, a URL that does not parse.
    closed = f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/x"
    for spec, says in ((url, "no study 'nope'"), (closed, "cannot open the study storage"),
                       (f"postgresql://postgres:{SECRET}@127.0.0.1:port/x",
                        "cannot open the study storage")):
        assert sweeps_cli.main(["worker", "--study", "nope", "--results", str(tmp_path),
                                "--storage", spec]) == 2
        out, err = capfd.readouterr()  # file-descriptor level: logging handlers included
        assert says in err and SECRET not in out + err, err


def test_dashboard_answers_with_the_studys_trials(pg_grid):
    url, results, _ = pg_grid
    port = free_port()
    env = os.environ | {storage.STORAGE_ENV: url}
    server = subprocess.Popen([sys.executable, "-m", "sweeps.dashboard", "--study", "ladder-pg",
                               "--results", str(results), "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", server)
        (summary,) = [s for s in studies["study_summaries"] if s["study_name"] == "ladder-pg"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", server)
        assert len(detail["trials"]) == 9
        assert {t["state"] for t in detail["trials"]} == {"Complete"}
        assert {p["name"] for t in detail["trials"] for p in t["params"]} == {"variant", "seed"}
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert SECRET not in output and "postgres:***@" in output


def _get_json(url: str, server: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, f"no answer from {url}"
            time.sleep(0.2)


# --- PostgreSQL: a worker killed mid-trial --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.reliability("fault", "SIGKILL of a sweep worker mid-trial (PostgreSQL, heartbeats)")
def test_sigkilled_worker_trial_is_retried_and_resumed(postgres, tiny_corpus, tiny_grid, tmp_path):
    """The dead trial is failed once stale and retried; its run resumes from the checkpoint; every point done once."""
    url = pg_database(postgres, "killed")
    max_iters, every = 200, 20
    assert sweeps_cli.main(["create", "--study", "kill", "--grid", tiny_grid, "--seeds", "2",
                            "--results", str(tmp_path), "--storage", url,
                            *smoke(tiny_corpus, max_iters, every)]) == 0
    beats = ["--heartbeat", "1", "--grace", "2"]
    victim = start_worker("kill", tmp_path, url, tmp_path / "victim.log", *beats)
    survivor = start_worker("kill", tmp_path, url, tmp_path / "survivor.log", *beats)
    study = load(url, "kill")
    try:
        killed = _wait_for_checkpointed_trial(study, tmp_path / "kill", f"{HOST}:{victim.pid}",
                                              victim)
        os.kill(victim.pid, signal.SIGKILL)
        assert survivor.wait(timeout=120) == 0, (tmp_path / "survivor.log").read_text()
    finally:
        for proc in (victim, survivor):
            proc.kill()
            proc.wait()
    assert_grid_done_once(study, points=3 * 2)
    trials = study.get_trials(deepcopy=False)
    # failed by the survivor once its heartbeat went stale
    assert trials[killed].state == TrialState.FAIL
    run_id = trials[killed].user_attrs["run_id"]
    (retry,) = [t for t in trials if t.user_attrs.get("run_id") == run_id
                and t.state == TrialState.COMPLETE]
    assert retry.user_attrs["worker"] == f"{HOST}:{survivor.pid}"
    run = store.read_run(tmp_path / "kill" / run_id)
    assert (run.status == "completed" and run.summary["resumes"] == 1
            and run.summary["resumed_from_step"] > 0)
    # no gap, no repeat
    assert [m["step"] for m in run.metrics] == list(range(0, max_iters + 1, every))
    # reports carried over
    assert sorted(retry.intermediate_values) == list(range(0, max_iters + 1, every))


def _wait_for_checkpointed_trial(study: optuna.Study, folder: Path, worker: str | None,
                                 proc: subprocess.Popen) -> int:
    """The number of a trial `worker` (None: any) is running, once it has checkpointed an eval after
    step 0."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker to kill exited early"
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if worker in (None, t.user_attrs.get("worker")) and "run_id" in t.user_attrs:
                metrics, _ = store.read_jsonl(folder / t.user_attrs["run_id"] / store.METRICS)
                # the checkpoint is written before the next eval: it is past step 0
                if len(metrics) >= 3:
                    return t.number
        time.sleep(0.05)
    raise AssertionError(f"{worker} never got past a checkpoint")


# --- SQLite and journal files ---------------------------------------------------------------------


def test_sqlite_is_the_default_storage_and_a_finished_study_stays_finished(tiny_corpus, tiny_grid,
                                                                           tmp_path, capsys):
    args = ["--study", "local", "--grid", tiny_grid, "--seeds", "2", "--results", str(tmp_path),
            *smoke(tiny_corpus)]
    assert sweeps_cli.main(["create", *args]) == 0
    assert sweeps_cli.main(["worker", "--study", "local", "--results", str(tmp_path), "--threads",
                            "1", "--quiet"]) == 0
    assert "sqlite:///" in capsys.readouterr().err
    assert_grid_done_once(load(storage.default_storage(tmp_path / "local"), "local"), points=3 * 2)
    # Again: nothing is enqueued and nothing retrained; other settings under the same name are
    # refused.
    assert sweeps_cli.main(["create", *args]) == 0
    assert "0 enqueued now" in capsys.readouterr().err
    assert sweeps_cli.main(["worker", "--study", "local", "--results", str(tmp_path)]) == 0
    assert "ran 0 trials" in capsys.readouterr().err
    # one setting given once, changed
    other = [("max_iters=41" if a == "max_iters=40" else a) for a in args]
    assert other != args and sweeps_cli.main(["create", *other]) == 2
    assert "already exists with other settings" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.reliability("fault", "Ctrl-C of a sweep worker mid-trial, then the sweep again")
def test_interrupted_sweep_resumes_where_it_stopped(tiny_corpus, tiny_grid, tmp_path, capsys):
    """Ctrl-C a worker mid-trial; running the sweep again re-enqueues that trial and resumes its run."""
    journal = str(tmp_path / "study.journal")  # no heartbeats here: re-creating is the way back
    args = ["--study", "stop", "--results", str(tmp_path), "--storage", journal]
    # Trials of 2000 steps (~2 s each): long enough that the trial caught mid-way is still running
    # when the SIGINT lands, even on a loaded machine (300-step trials could all finish first).
    assert sweeps_cli.main(["create", *args, "--grid", tiny_grid, "--seeds", "1",
                            *smoke(tiny_corpus, 2000, 100)]) == 0
    worker = start_worker("stop", tmp_path, journal, tmp_path / "worker.log")
    study = load(journal, "stop")
    try:
        stopped = _wait_for_checkpointed_trial(study, tmp_path / "stop", f"{HOST}:{worker.pid}",
                                               worker)
        signals = {line.split(":")[0]: line.split()[1]
                   for line in Path(f"/proc/{worker.pid}/status").read_text()
                   .splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))}
        worker.send_signal(signal.SIGINT)
        assert (worker.wait(timeout=60)
                == 130), f"the worker's signal masks when interrupted: {signals}"
    finally:
        worker.kill()
    run_id = study.trials[stopped].user_attrs["run_id"]
    assert (study.trials[stopped].state == TrialState.FAIL and "outcome"
            not in study.trials[stopped].user_attrs)
    assert store.read_run(tmp_path / "stop" / run_id).summary["reason"] == "interrupted"
    capsys.readouterr()
    assert sweeps_cli.main(["create", *args, "--grid", tiny_grid, "--seeds", "1",
                            *smoke(tiny_corpus, 2000, 100)]) == 0
    assert "1 enqueued now" in capsys.readouterr().err
    assert sweeps_cli.main(["worker", *args, "--threads", "1", "--quiet"]) == 0
    assert_grid_done_once(load(journal, "stop"), points=3)
    run = store.read_run(tmp_path / "stop" / run_id)
    assert (run.status == "completed" and run.summary["resumes"] == 1
            and run.summary["resumed_from_step"] >= 100)


@pytest.mark.slow
@pytest.mark.reliability("fault", "SIGTERM to `sweeps.optuna run` mid-trial")
def test_sigterm_to_a_sweep_ends_it_like_ctrl_c(tiny_corpus, tiny_grid, tmp_path):
    """Exit 130 with one `interrupted:` line (its workers say none) and no traceback; its workers
    stop too, each trial in flight failed with no outcome (so the next run re-enqueues it) and its
    run marked interrupted."""
    journal = str(tmp_path / "study.journal")
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.optuna", "run", "--study", "term",
                             "--grid", tiny_grid, "--seeds", "1", "--workers", "1", "--threads",
                             "1", "--quiet", "--results", str(tmp_path), "--storage", journal,
                             *smoke(tiny_corpus, 2000, 100)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    study = None
    while study is None:  # until `run` has created the study
        assert proc.poll() is None, proc.stderr.read()
        with contextlib.suppress(KeyError, FileNotFoundError):
            study = load(journal, "term")
        time.sleep(0.05)
    stopped = _wait_for_checkpointed_trial(study, tmp_path / "term", None, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.startswith("interrupted:")] == [
        "interrupted: run the same command again to resume; interrupted trials continue from their "
        "checkpoints"], err
    assert "Traceback" not in err and "failed with parameters" not in err, err
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "sweep workers outlived the stopped sweep"
    trial = load(journal, "term").trials[stopped]
    assert trial.state == TrialState.FAIL and "outcome" not in trial.user_attrs
    assert (store.read_run(tmp_path / "term" / trial.user_attrs["run_id"]).summary["reason"]
            == "interrupted")


INVALID_SPACE = """\
preset: smoke
n_trials: 2
set: {max_iters: 20, eval_interval: 10}
pruner: {type: none}
params:
  n_embd: {type: categorical, choices: [48, 40]}
  n_head: {type: categorical, choices: [5, 4]}
"""


@pytest.mark.reliability("bad input",
                         "a sweep trial whose sampled combination gives no valid model")
def test_an_invalid_trial_is_one_line_and_the_study_goes_on(tiny_corpus, tmp_path):
    """The worker says `trial 0 skipped: ...` in one line, no Optuna traceback; the trial fails as invalid, the next
    one completes, the worker exits 0."""
    (tmp_path / "space.yaml").write_text(INVALID_SPACE)
    journal = str(tmp_path / "search.journal")
    common = ["--study", "invalid", "--results", str(tmp_path), "--storage", journal]
    assert sweeps_cli.main(["create", *common, "--space", str(tmp_path / "space.yaml"), "--data",
                            str(tiny_corpus)]) == 0
    study = load(journal, "invalid")
    for n_embd in (48, 40):  # 48 is not divisible by 5 heads; 40 is
        study.enqueue_trial({"n_embd": n_embd, "n_head": 5})
    out = cli("worker", *common, "--threads", "1", "--quiet")
    assert out.returncode == 0, out.stderr
    assert ("trial 0 skipped: n_embd (48) must be divisible by n_head (5); pick n_head among the "
            "divisors of n_embd"
            in out.stderr.splitlines()), out.stderr
    assert "Traceback" not in out.stderr and "Trial 0 failed" not in out.stderr, out.stderr
    invalid, valid = study.get_trials(deepcopy=False)
    assert (invalid.state, invalid.user_attrs["outcome"]) == (TrialState.FAIL, "invalid")
    assert valid.state == TrialState.COMPLETE


def test_every_trial_is_mirrored_to_wandb_under_the_study(tiny_corpus, tiny_grid, tmp_path,
                                                          monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    args = ["--study", "mirrored", "--results", str(tmp_path), "--storage",
            str(tmp_path / "study.journal")]
    assert sweeps_cli.main(["create", *args, "--grid", tiny_grid, "--seeds", "1",
                            *smoke(tiny_corpus)]) == 0
    assert sweeps_cli.main(["worker", *args, "--threads", "1", "--quiet", "--wandb", "offline",
                            "--wandb-project", "sweep-test"]) == 0
    for trial in load(str(tmp_path / "study.journal"), "mirrored").trials:
        run_dir = tmp_path / "mirrored" / trial.user_attrs["run_id"]
        recs = records(run_dir / "wandb")
        (header,) = of_type(recs, "run")
        assert (header["project"], header["run_group"],
                header["job_type"]) == ("sweep-test", "mirrored", "sweep")
        config = header["config"]["update"]
        assert (config["study"], config["trial"], config["run_id"]) == ("mirrored", trial.number,
                                                                        run_dir.name)
        assert history(recs) == store.read_run(run_dir).metrics


SEARCH_SPACE = """\
preset: smoke
n_trials: 5
set: {max_iters: 60, eval_interval: 10}
pruner: {type: median, n_startup_trials: 3, n_warmup_steps: 1}
params:
  lr: {type: float, low: 1e-8, high: 1e7, log: true}
  layernorm: {type: categorical, choices: [pre, post]}
"""


@pytest.mark.reliability("fault", "sweep trial whose loss becomes non-finite (lr=1e6)")
def test_search_on_a_journal_file_prunes_a_tiny_lr_and_records_divergence(tiny_corpus, tmp_path,
                                                                          capsys):
    """A tiny LR is pruned before its last step; lr=1e6 diverges, is recorded with its reason, the study ends."""
    (tmp_path / "space.yaml").write_text(SEARCH_SPACE)
    journal = str(tmp_path / "search.journal")
    common = ["--study", "search", "--results", str(tmp_path), "--storage", journal]
    assert sweeps_cli.main(["create", *common, "--space", str(tmp_path / "space.yaml"), "--data",
                            str(tiny_corpus)]) == 0
    study = load(journal, "search")
    # three good runs for the median, a hopeless one, an exploding one
    lrs = [1e-2, 2e-2, 3e-2, 1e-7, 1e6]
    for lr in lrs:
        study.enqueue_trial({"lr": lr, "layernorm": "pre"})
    assert sweeps_cli.main(["worker", *common, "--quiet", "--threads", "1"]) == 0
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED,
                                                                     TrialState.FAIL]
    pruned = store.read_run(tmp_path / "search" / trials[3].user_attrs["run_id"])
    assert pruned.status == "pruned" and "MedianPruner" in pruned.summary["reason"]
    # stopped before its last step
    assert pruned.metrics[-1]["step"] < 60 and pruned.summary["step"] < 60
    assert trials[3].user_attrs["outcome"] == "pruned"
    diverged = store.read_run(tmp_path / "search" / trials[4].user_attrs["run_id"])
    assert diverged.status == "diverged" and trials[4].user_attrs["outcome"] == "diverged"
    assert (trials[4].user_attrs["reason"] == diverged.summary["reason"] and "non-finite"
            in diverged.summary["reason"])
    top = json.loads((tmp_path / "search" / best.BEST).read_text())
    assert top["best"]["trial"] == min(trials[:3], key=lambda t: t.value).number
    assert top["outcomes"] == {"completed": 3, "pruned": 1, "diverged": 1}
    assert f"--set lr={top['best']['params']['lr']}" in top["best"]["command"]


POP_WORKER = textwrap.dedent("""
    import sys, optuna
    from sweeps.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="race", storage=open_storage(sys.argv[1]))
    def take(trial):
        print(trial.user_attrs.get("k", "extra"), flush=True)
        return 0.0
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        study.optimize(take, n_trials=1)
""")


@pytest.mark.reliability("fault",
                         "sweep workers racing for the same queued trial (SQLite, journal)")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_enqueued_trials_are_each_taken_once_by_racing_processes(kind, tmp_path):
    """Optuna's queue pop is a read then a write; on SQLite we make it atomic (BEGIN IMMEDIATE)."""
    spec = f"sqlite:///{tmp_path}/race.db" if kind == "sqlite" else str(tmp_path / "race.journal")
    study = optuna.create_study(study_name="race", storage=storage.open_storage(spec))
    for k in range(40):
        study.enqueue_trial({}, user_attrs={"k": k})
    procs = [subprocess.Popen([sys.executable, "-c", POP_WORKER, spec], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    taken = [line for p in procs for line in p.communicate(timeout=120)[0].split()]
    counts = Counter(int(k) for k in taken if k != "extra")
    assert sorted(counts) == list(range(40)) and set(counts.values()) == {1}


BAD_SWEEPS = [
    (["--grid", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
    (["--space", "missing.yaml"], "cannot read the search space"),
    (["--grid", "ladder", "--set", "lr=fast"], "lr=fast: expected a finite number"),
    (["--grid", "ladder", "--seeds", "0"], "--seeds must be at least 1"),
    (["--grid", "ladder", "--study", "../escape"], "must be letters"),
    (["--grid", "ladder", "--storage", "postgresql://optuna:s3cret@127.0.0.1:1/sweeps"],
     "cannot open the study"),
    (["--grid", "ladder", "--storage", "mysql://optuna@127.0.0.1/sweeps"], "cannot open the study"),
    (["--grid", "ladder", "--storage", "notascheme://x"], "cannot open the study"),
]


@pytest.mark.reliability(
    "bad input", "sweep CLI: experiments, space files, settings, seeds, study names, storage URLs")
@pytest.mark.parametrize(("extra", "says"), BAD_SWEEPS, ids=[s for _, s in BAD_SWEEPS])
def test_bad_settings_exit_2_with_one_clear_message(tmp_path, capsys, monkeypatch, extra, says):
    """Exit 2, one line starting `error:` that names the problem (never a password); nothing created."""
    monkeypatch.chdir(tmp_path)
    study = [] if "--study" in extra else ["--study", "bad"]
    assert sweeps_cli.main(["create", *study, "--results", str(tmp_path / "r"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and len(err.strip().splitlines()) == 1, err
    assert "s3cret" not in err
    assert not (tmp_path / "r").exists()  # nothing half-written

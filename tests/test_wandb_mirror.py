"""The W&B mirror, checked by reading real offline runs back with W&B's own CLI (`wandb leet
inspect`).

No mocks: real smoke-preset runs, a real wandb-core service, real SIGKILLs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments.config import resolve
from experiments.run import build_parser, main
from experiments.runner import train_run
from experiments.store import read_run
from experiments.wandb_mirror import STATE, WandbSettings, resolve_mode
from nanogpt.train import Callback
from tests.conftest import ROOT, run_module
from tests.wandb_records import history, leet, of_type, records

WARNING = "warning: W&B mirror off"
# A run long enough (seconds) to be killed part-way.
LONG = ("--set", "max_iters=600", "--set", "eval_interval=100")


@pytest.fixture(autouse=True)
def _wandb_home(monkeypatch, tmp_path):
    """W&B's config, cache and artifact staging go to the test's folder, not the user's home; no API
    key.

    An in-process run starts a wandb-core service and advertises it in WANDB_SERVICE, which every
    later subprocess would inherit and share (a SIGKILLed child's W&B run then stays open in it):
    each test starts without one and stops the one it started.
    """
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_API_KEY", "WANDB_SERVICE"):
        monkeypatch.delenv(var, raising=False)
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


def fragments(run_dir: Path) -> list[Path]:
    """The W&B run folders of one run, oldest first (a resumed run adds one)."""
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def smoke(corpus: Path, **labels):
    return resolve("smoke", "full", 0, {"data": str(corpus)}, **labels)


def cli_args(corpus: Path, results: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--data", str(corpus), "--results", str(results), "--quiet",
            *extra]


def only_run_dir(results: Path) -> Path:
    (run_dir,) = [p for p in (results / "adhoc").iterdir() if p.is_dir()]
    return run_dir


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def mirrored_run(args: list[str], results: Path) -> Iterator[subprocess.Popen]:
    """A CLI run, handed over once W&B has its first two evaluations; killed on the way out if still
    alive."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: mirrored_step(results) >= 100, proc, "two evaluations mirrored")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def mirrored_step(results: Path) -> int:
    """The last step the mirror has handed to W&B (-1 before it has started)."""
    paths = list(results.glob(f"adhoc/*/wandb/{STATE}"))
    return json.loads(paths[0].read_text())["last_step"] if paths else -1


def children(pid: int) -> dict[int, str]:
    """pid -> command name of each child process of `pid`, from /proc."""
    kids = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            kids[int(stat.parent.name)] = text[text.index("(") + 1:text.rindex(")")]
    return kids


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("group", [None, "lr-sweep-3"])
def test_offline_mirror_matches_the_run_store(tmp_path, tiny_corpus, group):
    cfg = smoke(tiny_corpus, experiment="ladder", job_type="ladder", group=group, tags=("nightly",))
    summary = train_run(cfg, tmp_path, quiet=True, wandb=WandbSettings("offline",
                                                                       project="ablation-tests"))
    run = read_run(tmp_path / "ladder" / summary["run_id"])
    state = json.loads((run.path / "wandb" / STATE).read_text())
    (fragment,) = fragments(run.path)
    assert fragment.name.endswith(f"-{state['id']}")

    recs = records(run.path / "wandb")
    (header,) = of_type(recs, "run")
    assert header["run_id"] == state["id"] and header["project"] == "ablation-tests"
    assert header["run_group"] == (group or "ladder") and header["job_type"] == "ladder"
    assert header["display_name"] == "full-s0"
    assert header["tags"] == ["smoke", "full", "ladder", "nightly"]
    config = {k: v for k, v in header["config"]["update"].items() if k != "_wandb"}
    assert config == run.config  # config.json, flat, with config_hash and run_id
    assert any(m.get("glob_name") == "*" and m.get("step_metric") == "step"
               for m in of_type(recs, "metric"))
    assert [m["step"] for m in run.metrics] == [0, 10, 20]
    # one row per evaluation, same keys and values as metrics.jsonl
    assert history(recs) == run.metrics

    wb = json.loads(leet("--summary", "--json", run.path / "wandb"))
    assert (wb["state"], wb["exit_code"], wb["name"], wb["run_id"]) == ("finished", 0, "full-s0",
                                                                        state["id"])
    assert wb["summary"]["status"] == "completed"
    assert {k: v for k, v in run.summary.items() if v is not None}.items() <= wb["summary"].items()
    table = json.loads((fragment / "files" / wb["summary"]["samples"]["path"]).read_text())
    assert table["columns"] == ["run_id", "variant", "seed", "step", "text"]
    assert table["data"] == [[run.summary["run_id"], "full", 0, 20, run.samples]]


class Explode(Callback):
    def on_eval(self, metrics, checkpoint) -> None:
        if metrics["step"] == 10:
            raise RuntimeError("boom")


def test_failed_training_finishes_the_wandb_run_with_an_error(tmp_path, tiny_corpus):
    with pytest.raises(RuntimeError, match="boom"):
        train_run(smoke(tiny_corpus), tmp_path, quiet=True, callbacks=[Explode()],
                  wandb=WandbSettings("offline"))
    run = read_run(only_run_dir(tmp_path))
    wb = json.loads(leet("--summary", "--json", run.path / "wandb"))
    assert wb["state"] == "failed" and wb["exit_code"] == 1
    assert (wb["summary"]["status"], wb["summary"]["reason"]) == ("failed", "RuntimeError: boom")
    assert history(records(run.path / "wandb")) == run.metrics and len(run.metrics) == 2


@pytest.mark.slow
def test_sigkilled_run_resumes_the_same_wandb_run(tmp_path, tiny_corpus):
    args = cli_args(tiny_corpus, tmp_path, "--wandb", "offline", *LONG)
    with mirrored_run(args, tmp_path) as proc:
        # Freeze training, give wandb-core (a separate process) time for its 0.1 s flush, then kill.
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    resumed = run_module("experiments.run", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert WARNING not in resumed.stderr

    run = read_run(only_run_dir(tmp_path))
    assert run.summary["status"] == "completed" and run.summary["resumes"] == 1
    state = json.loads((run.path / "wandb" / STATE).read_text())
    killed, resumed_frag = fragments(run.path)
    killed_recs, resumed_recs = records(killed), records(resumed_frag)
    assert [h["run_id"] for h in of_type(killed_recs + resumed_recs, "run")] == [state["id"]] * 2
    assert of_type(resumed_recs, "run")[0]["resume"] is True

    before, after = history(killed_recs), history(resumed_recs)
    # W&B kept everything up to the checkpoint
    assert before[-1]["step"] == run.summary["resumed_from_step"]
    assert after[0]["step"] == run.summary["resumed_from_step"] + 100  # and continues from there
    steps = [row["step"] for row in before + after]
    assert steps == sorted(set(steps)) == list(range(0, 601, 100))  # increasing, no gap, no repeat
    assert before + after == run.metrics
    wb = json.loads(leet("--summary", "--json", run.path / "wandb"))
    assert (wb["state"], wb["summary"]["resumes"], wb["summary"]["step"]) == ("finished", 1, 600)


@pytest.mark.reliability("fault", "SIGTERM to a run while its W&B mirror starts")
def test_a_sigterm_while_wandb_starts_marks_the_run_interrupted(tmp_path, tiny_corpus):
    """Its summary already says running: the stop marks it interrupted (exit 130), never leaves it
    running as if it were still training."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run",
                             *cli_args(tiny_corpus, tmp_path, "--wandb", "offline", *LONG)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(tmp_path.glob("adhoc/*/summary.json")), proc, "the run's summary")
    proc.send_signal(signal.SIGTERM)  # W&B takes about a second to start: it lands there
    _, err = proc.communicate(timeout=60)
    run_dir = only_run_dir(tmp_path)
    assert proc.returncode == 130 and read_run(run_dir).metrics == [], err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.reliability("fault", "an offline-mirrored run killed with a lagging wandb-core")
def test_evaluations_a_kill_cost_wandb_are_sent_again_on_resume(tmp_path, tiny_corpus):
    """wandb-core frozen (a loaded machine), then the run and it killed together: mirror.json counts
    evaluations W&B's file never got. The resumed run asks W&B's files what they hold and sends
    the rest, so W&B's copy has every evaluation once (it lacked those for good)."""
    args = cli_args(tiny_corpus, tmp_path, "--wandb", "offline", *LONG)
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: mirrored_step(tmp_path) >= 0, proc, "the first evaluation mirrored")
        for pid, name in children(proc.pid).items():
            if name == "wandb-core":
                os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: mirrored_step(tmp_path) >= 100, proc, "a second evaluation handed over")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its wandb-core, as a job's end kills both
        proc.wait()
    resumed = run_module("experiments.run", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    run = read_run(only_run_dir(tmp_path))
    rows = [row for fragment in fragments(run.path) for row in history(records(fragment))]
    assert rows == run.metrics and [row["step"] for row in rows] == list(range(0, 601, 100))


@pytest.mark.parametrize("mode, env", [
    ("online", {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:{port}",
                "WANDB_INIT_TIMEOUT": "2"}),
    ("auto", {"WANDB_API_KEY": "not-a-key"}),
], ids=["online-no-network", "auto-bad-key"])
@pytest.mark.reliability("fault", "W&B unreachable or the API key bad")
def test_wandb_failure_to_start_never_stops_training(tmp_path, tiny_corpus, monkeypatch, mode, env):
    """One warning, no traceback, exit 0; the local record is complete."""
    # auto must decide by the key, not by the suite's offline default
    monkeypatch.delenv("WANDB_MODE")
    env = {k: v.format(port=closed_port()) for k, v in env.items()}
    out = run_module("experiments.run", *cli_args(tiny_corpus, tmp_path, "--wandb", mode), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count(WARNING) == 1 and "Traceback" not in out.stderr, out.stderr
    run = read_run(only_run_dir(tmp_path))
    assert run.summary["status"] == "completed" and [m["step"] for m in run.metrics] == [0, 10, 20]
    assert run.samples


@pytest.mark.reliability("fault", "HOME unusable for W&B (a file, so nothing can be made under it)")
def test_an_unusable_home_is_one_warning_and_the_run_completes(tmp_path, tiny_corpus, monkeypatch):
    """Exactly one stderr line, the warning naming W&B's folder and the variable that moves it, none of wandb-core's
    log lines; exit 0, the local record complete."""
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_MODE",
                "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)  # W&B's folders default to ones under HOME
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    out = run_module("experiments.run", *cli_args(tiny_corpus, tmp_path, "--wandb", "offline"),
                     env={"HOME": str(home)})
    assert out.returncode == 0, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert (line.startswith(f"{WARNING} for adhoc/") and f"W&B cannot write its folder {home}/"
            in line), line
    assert "set WANDB_DATA_DIR to a writable folder" in line and "--wandb offline" not in line, line
    assert read_run(only_run_dir(tmp_path)).summary["status"] == "completed"


@pytest.mark.slow
@pytest.mark.reliability("fault", "W&B service (wandb-core) SIGKILLed mid-run")
def test_wandb_service_killed_mid_run_never_stops_training(tmp_path, tiny_corpus):
    """One warning, exit 0, every evaluation recorded locally; what reached W&B stays readable."""
    args = cli_args(tiny_corpus, tmp_path, "--wandb", "offline", *LONG)
    with mirrored_run(args, tmp_path) as proc:
        (core,) = [pid for pid, name in children(proc.pid).items() if name == "wandb-core"]
        os.kill(core, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert (stderr.count(WARNING) == 1 and "Traceback" not in stderr and "Exception ignored"
            not in stderr), stderr
    run = read_run(only_run_dir(tmp_path))
    assert run.summary["status"] == "completed" and [m["step"] for m in run.metrics] == list(
        range(0, 601, 100))
    assert run.samples
    # what reached W&B before the kill is still readable
    mirrored = history(records(run.path / "wandb"))
    assert mirrored == run.metrics[:len(mirrored)] and len(mirrored) < len(run.metrics)


@pytest.mark.parametrize("settings, env_mode", [
    (None, "offline"), (WandbSettings("off"), "online"), (WandbSettings("auto"), "disabled"),
], ids=["none", "off", "auto-WANDB_MODE-disabled"])
def test_mirror_off_writes_no_wandb_files(tmp_path, tiny_corpus, monkeypatch, settings, env_mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    summary = train_run(smoke(tiny_corpus), tmp_path, quiet=True, wandb=settings)
    assert summary["status"] == "completed"
    assert not (tmp_path / "adhoc" / summary["run_id"] / "wandb").exists()


def test_cli_with_wandb_off_never_imports_wandb(tmp_path, tiny_corpus):
    code = ("import sys; from experiments.run import main; "
            f"rc = main({cli_args(tiny_corpus, tmp_path, '--wandb', 'off')!r}); "
            "assert rc == 0, rc; assert 'wandb' not in sys.modules, 'wandb was imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert read_run(only_run_dir(tmp_path)).summary["status"] == "completed"


def test_auto_mode_resolution(monkeypatch):
    for env_mode, expected in [("disabled", None), ("dryrun", "offline"), ("offline", "offline"),
                               ("online", "online")]:
        monkeypatch.setenv("WANDB_MODE", env_mode)
        assert resolve_mode("auto") == expected
    assert resolve_mode("offline") == "offline" and resolve_mode("off") is None
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode("auto") == "offline"  # no API key anywhere
    import wandb

    wandb.teardown()  # W&B reads the environment (and the key) once per process setup
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"  # a key is enough: nothing is asked of the server


def test_cli_help_and_bad_mode(capsys):
    help_text = build_parser().format_help()
    assert "--wandb {auto,online,offline,off}" in help_text and "--wandb-project" in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["--wandb", "sometimes"])
    assert exit_info.value.code == 2 and "invalid choice: 'sometimes'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="auto, online, offline, off"):
        WandbSettings("sometimes")

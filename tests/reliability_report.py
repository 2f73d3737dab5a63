"""A pytest plugin: the fault-injection and bad-input tests write docs/reliability.md themselves.

Mark a test `@pytest.mark.reliability("fault", "SIGKILL during a step")` (or "bad input"); its
docstring's first line says what was checked. `pytest -m reliability --reliability-report PATH
tests` then writes a table of every marked test: how many cases ran, what was checked, how many
passed. The numbers in the document are therefore always the numbers of the last run.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections import defaultdict
from pathlib import Path

import pytest

KINDS = ("fault", "bad input", "security")
_rows: defaultdict[tuple[str, str], dict] = defaultdict(lambda: {"cases": 0, "passed": 0,
                                                                 "checked": ""})
HEADINGS = {"fault": "Faults injected", "bad input": "Bad inputs", "security": "Security"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-report", metavar="PATH",
                     help="write the reliability table (Markdown) to PATH")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability(kind, what): a fault-injection, bad-input or security test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("reliability")
        if mark and (len(mark.args) != 2 or mark.args[0] not in KINDS):
            raise pytest.UsageError(
                f"{item.nodeid}: use @pytest.mark.reliability(kind, what), kind in {KINDS}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Where the test runs (an xdist worker, or this process): label its report with what it
    checked."""
    outcome = yield
    report = outcome.get_result()
    mark = item.get_closest_marker("reliability")
    if mark is not None and report.when == "call":
        doc = (getattr(item, "function", None).__doc__ or "").strip().splitlines()
        report.user_properties.append(("reliability", (mark.args[0], mark.args[1], doc[0] if doc
                                                       else item.name)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Where the results meet (the xdist controller, or this process): count each labelled
    report."""
    for name, (kind, what, checked) in report.user_properties:
        if name != "reliability":
            continue
        row = _rows[(kind, what)]
        row["cases"] += 1
        row["passed"] += report.passed
        row["checked"] = row["checked"] or checked


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-report")
    rows = _rows
    # an xdist worker: the controller writes
    if not path or not rows or hasattr(session.config, "workerinput"):
        return
    lines = [
        "# Reliability: faults injected and bad inputs tried",
        "",
        "Written by the test suite itself (`make reliability`); every row is a marked test that "
        "ran.",
        f"Last run: {dt.date.today().isoformat()}, Python {platform.python_version()}, "
        f"{platform.platform()}.",
        "",
    ]
    for kind in KINDS:
        kind_rows = sorted((what, r) for (k, what), r in rows.items() if k == kind)
        if not kind_rows:
            continue
        cases = sum(r["cases"] for _, r in kind_rows)
        passed = sum(r["passed"] for _, r in kind_rows)
        lines += [f"## {HEADINGS[kind]}: {cases} cases, {passed} passed", "",
                  "| what | cases | checked | result |", "|---|---:|---|---|"]
        for what, r in kind_rows:
            result = ("pass" if r["passed"] == r["cases"]
                      else f"**{r['cases'] - r['passed']} failed**")
            lines.append(f"| {what} | {r['cases']} | {r['checked']} | {result} |")
        lines.append("")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(target)  # never a half-written report

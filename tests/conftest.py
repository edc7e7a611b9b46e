from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from codex_cli_image import pipeline as pipeline_module
from codex_cli_image._watchdog import WATCHDOG
from codex_cli_image.testing import realcodex

from helpers import E2E_SUMMARY, IN_CI, NPM_CACHE

# tests/hermes runs inside hermes-agent's own environment (tests/test_hermes_agent.py starts it),
# tests/apps inside each application's (tests/test_applications.py).
collect_ignore = [] if os.environ.get("CODEX_IMAGE_HERMES_INNER") else ["hermes"]
if not os.environ.get("CODEX_IMAGE_APPS_INNER"):
    collect_ignore.append("apps")

_CALLER_ENV = (
    "CODEX_BIN",
    "CODEX_API_KEY",
    "CODEX_ACCESS_TOKEN",
    "OPENAI_API_KEY",
    "CODEX_MANAGED_BY_NPM",
    "CODEX_MANAGED_PACKAGE_ROOT",
    "FAKE_CODEX_DIR",
    "FAKE_CODEX_OPTIONS",
    "FAKE_CODEX_SCENARIO",
)


@pytest.fixture(autouse=True, scope="session")
def watchdog_started() -> None:
    """This test process's codex watchdog, started once up front rather than by whichever test
    runs codex first: pytest-subprocess replaces Popen in some tests, and process checks tell
    it (by pid) from a leak. It lives, as in any host, until the process exits."""
    WATCHDOG.start()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty HOME, CODEX_HOME and cache folder: nothing can reach the real
    ~/.codex, and no test sees what another learned about a codex binary."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("CODEX_HOME", str(codex_home))
    monkeypatch.setenv("CODEX_IMAGE_NPM_CACHE", str(NPM_CACHE))
    monkeypatch.setenv("CODEX_IMAGE_CACHE_DIR", str(tmp_path / "cache"))
    for name in _CALLER_ENV:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files (our runner's workspaces) go here, so a test can prove none is left, and
    retries wait 10 ms instead of seconds."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(pipeline_module, "_BACKOFF_S", 0.01)
    return scratch


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves a fake codex (or a helper it started) running; then end them."""
    yield
    leftovers = list(_fake_processes(tmp_path))
    if not leftovers:
        return
    described = [f"{p.pid} {' '.join(p.cmdline()[:4])}" for p in leftovers]
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=2)
    pytest.fail(f"processes left behind: {described}")


def _fake_processes(tmp_path: Path) -> Iterator[psutil.Process]:
    """Live processes whose environment marks them as this test's fake codex or its helpers."""
    marker = str(tmp_path)
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            fake_dir = proc.environ().get("FAKE_CODEX_DIR", "")
            if fake_dir.startswith(marker):
                yield proc


@pytest.fixture(scope="session")
def real_codex_shim() -> Path:
    """The npm shim of the newest pinned real codex; skipped without npm (a failure in CI)."""
    version = realcodex.VERSIONS[0]
    try:
        return realcodex.install(version, root=NPM_CACHE)
    except (realcodex.NpmUnavailable, subprocess.CalledProcessError, OSError) as exc:
        reason = f"real codex {version} is not installable here: {exc}"
        if IN_CI:
            pytest.fail(f"{reason} (CI must run the real-codex tests)")
        pytest.skip(reason)


# --- the fault suite's figures (README, "Fault suite") ---------------------------------------

_TALLIED = ("faults", "bad_input")
_KINDS: dict[str, list[str]] = {}
_TALLY: dict[str, dict[str, Any]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Markers, not keywords: every test under tests/faults has "faults" among its keywords.
        kinds = [kind for kind in _TALLIED if item.get_closest_marker(kind) is not None]
        if kinds:
            _KINDS[item.nodeid] = kinds


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note each fault and bad-input case: whether it ran, whether it held, and how many runs
    its guard verified (``leak_free_runs``, recorded by tests/faults/faultkit.py)."""
    kinds = _KINDS.get(report.nodeid)
    if not kinds:
        return
    entry = _TALLY.setdefault(report.nodeid, {"kinds": kinds, "ran": False, "failed": False})
    entry["failed"] = entry["failed"] or report.failed
    entry["ran"] = entry["ran"] or report.failed or (report.when == "call" and report.passed)
    if report.when == "teardown":
        entry["runs"] = sum(v for k, v in report.user_properties if k == "leak_free_runs")
        entry["gone_s"] = [v for k, v in report.user_properties if k == "caller_killed_gone_s"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if E2E_SUMMARY:  # the real CLI's cases ran in an inner pytest: say what they came to
        terminalreporter.write_sep("-", "end-to-end (the real Codex CLI)")
        terminalreporter.write_line(
            f"{E2E_SUMMARY[0]} (a skip is a case that does not apply to that codex version)"
        )
    ran = [entry for entry in _TALLY.values() if entry["ran"]]
    faults = [e for e in ran if "faults" in e["kinds"]]
    bad = [e for e in ran if "bad_input" in e["kinds"]]
    if not ran:
        return
    held = [e for e in faults if not e["failed"]]
    refused = [e for e in bad if not e["failed"]]
    runs = sum(e.get("runs", 0) for e in held)
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(
        f"faults survived: {len(held)}/{len(faults)}; bad inputs refused: "
        f"{len(refused)}/{len(bad)}; runs without a leak: {runs}"
    )
    gone = [seconds for e in held for seconds in e.get("gone_s", [])]
    if gone:
        terminalreporter.write_line(
            f"callers killed with SIGKILL: {len(gone)}; codex's tree gone within "
            f"{max(gone):.2f} s (median {sorted(gone)[len(gone) // 2]:.2f} s)"
        )

"""The guard is not blind: each of its checks fails on the leak it is there to catch.

These are checks of the checker, not faults (no `faults` marker): a green fault suite means
something only if a leaked process, a temporary file, a touched user file, a modified
auth.json or a secret in any output would have turned it red.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest

from faultkit import Guard, wait_for

pytestmark = pytest.mark.timeout(60)


def _fails(guard: Guard, match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        guard.verify()
    guard.verified = True  # the failure was the point: no second check at teardown


def test_a_clean_run_passes(guard: Guard) -> None:
    guard.generate()
    guard.verify(delivered=[guard.target])
    assert guard.runs == 1 and guard.scanned > 0


def test_a_leftover_child_is_caught_and_ended(guard: Guard) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _fails(guard, "processes left behind")
    assert child.wait(10) != 0


def test_an_orphan_elsewhere_in_the_system_is_caught(guard: Guard) -> None:
    """Re-parented away from us, found by its environment (our codex home)."""
    pid_file = guard.root / "orphan.pid"
    subprocess.run(
        ["sh", "-c", f'sleep 60 </dev/null >/dev/null 2>&1 & echo $! > "{pid_file}"'], check=True
    )
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    # Until it has exec'd, its environment may not be readable yet (seen once under load).
    wait_for(lambda: _name(pid) == "sleep", 10, "the orphan to start sleeping")
    _fails(guard, "processes left behind")
    wait_for(lambda: not _running(pid), 10, "the orphan to be ended")


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("leak", "match"),
    [
        (lambda g: (g.temp / "codex-image-left").mkdir(), "temporary files left behind"),
        (lambda g: g.target.write_bytes(b"truncated"), "user files modified"),
        (lambda g: (g.out / ".image.1234.partial").write_bytes(b""), "files added"),
        (lambda g: (g.out / "notes.txt").unlink(), "user files lost"),
        (lambda g: os.utime(g.auth_file, ns=(0, time.time_ns())), "auth.json was modified"),
        (lambda g: g.said(f"error: {g.secrets[3]}"), "secrets in our output"),
        (
            lambda g: logging.getLogger("codex_cli_image.api").debug("token %s", g.secrets[-1]),
            "secrets in our output",
        ),
    ],
    ids=["temp", "modified", "added", "lost", "auth.json", "said", "logged"],
)
def test_each_check_catches_its_leak(
    guard: Guard, leak: Callable[[Guard], object], match: str
) -> None:
    leak(guard)
    _fails(guard, match)


def test_credentials_reaching_codex_are_caught(guard: Guard) -> None:
    """Run the fake directly with a credential variable, as a careless wrapper would."""
    subprocess.run(
        [str(guard.fake.path), "exec", "--json", "--skip-git-repo-check", "-C", str(guard.root),
         "-"],
        input=b"draw", env={**os.environ, "CODEX_API_KEY": "sk-x"}, capture_output=True,
        check=True,
    )  # fmt: skip
    guard.said("its output, free of secrets")
    _fails(guard, "credential variables reached codex")

"""Faults of the codex home: unreadable, holding a FIFO instead of a file, not a directory,
missing. Each is refused before codex runs (no quota spent), promptly, with the right reason,
and nothing in it is changed. Run through the CLI, as a user meets them."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faultkit import Guard
from helpers import IN_CI

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]


def _without_dac_override() -> list[str]:
    """A prefix under which permission bits bind: root ignores them unless it drops the
    capabilities that override them (CI runs as root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        reason = "as root, permission faults need setpriv(1) to drop CAP_DAC_OVERRIDE"
        if IN_CI:
            pytest.fail(reason + " (CI must run this fault)")
        pytest.skip(reason)
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def _refused(guard: Guard, *, prefix: list[str] | None = None) -> dict[str, object]:
    started = time.monotonic()
    result = guard.cli("generate", "a lighthouse", "-o", str(guard.out), "--json",
                       prefix=prefix or [])  # fmt: skip
    assert time.monotonic() - started < 30
    assert result.returncode == 3, result.stderr
    error = json.loads(result.stdout)["error"]
    assert isinstance(error, dict) and error["kind"] == "auth" and error["hint"]
    assert guard.fake.exec_calls == []  # refused before codex ran: no quota spent
    return error


@pytest.mark.parametrize(
    ("victim", "reason", "said"),
    [
        ("home", "codex_home_unreadable", "cannot be read: permission denied"),
        ("auth.json", "auth_unreadable", "cannot be read: permission denied"),
    ],
)
def test_unreadable(guard: Guard, victim: str, reason: str, said: str) -> None:
    prefix = _without_dac_override()
    path = guard.fake.codex_home if victim == "home" else guard.auth_file
    mode = path.stat().st_mode
    path.chmod(0)
    try:
        error = _refused(guard, prefix=prefix)
    finally:
        path.chmod(mode)
    assert error["reason"] == reason and said in str(error["message"])
    guard.verify()


def _fifo(name: str) -> Callable[[Guard], None]:
    def arrange(guard: Guard) -> None:
        path = guard.fake.codex_home / name
        path.unlink()
        os.mkfifo(path)

    return arrange


@pytest.mark.parametrize(
    ("arrange", "reason", "said"),
    [
        (_fifo("auth.json"), "auth_unreadable", "not a regular file"),
        (_fifo("config.toml"), "config_unreadable", "not a regular file"),
    ],
    ids=["auth.json", "config.toml"],
)
def test_fifo_instead_of_a_file(
    guard: Guard, arrange: Callable[[Guard], None], reason: str, said: str
) -> None:
    """Reading a FIFO blocks until someone writes to it: the call must not hang on it."""
    arrange(guard)
    guard.snapshot()
    error = _refused(guard)
    assert error["reason"] == reason and said in str(error["message"])
    guard.verify()


@pytest.mark.parametrize("what", ["a file", "missing"])
def test_codex_home_not_a_directory(
    guard: Guard, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, what: str
) -> None:
    home = tmp_path / "not-a-home"
    if what == "a file":
        home.write_text("")
    monkeypatch.setenv("CODEX_HOME", str(home))
    error = _refused(guard)
    expected = "is not a directory" if what == "a file" else "does not exist"
    assert error["reason"] == "codex_home_missing" and expected in str(error["message"])
    guard.verify()

"""#32 on every release: the usage windows the backend reports, as codex records them after an
image, and as codex app-server reads them without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codex_cli_image import generate, usage_limits
from codex_cli_image.testing.backend import MockBackend

pytestmark = pytest.mark.timeout(180)
Start = Callable[..., MockBackend]
SignIn = Callable[..., Path]


def limits_cli(shim: Path) -> subprocess.CompletedProcess[str]:
    """`codex-image limits --json` as a user runs it, with a GUI's short PATH."""
    return subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "limits", "--json", "--codex", str(shim),
         "--allow-relay"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_an_image_reports_the_windows_codex_recorded(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend(image_scenario, usage_percent=(61.5, 23.0))
    signed_in(mock)
    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90)
    limits = result.usage_limits
    assert limits is not None and limits.primary is not None and limits.secondary is not None
    assert (limits.primary.used_percent, limits.primary.window_minutes) == (61.5, 300)
    assert (limits.secondary.used_percent, limits.secondary.window_minutes) == (23.0, 10080)
    assert limits.primary.resets_at is not None
    assert abs(limits.primary.resets_at - (time.time() + mock.windows_s[0])) < 120


def test_no_headers_no_windows(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend(image_scenario, usage_percent=None)
    signed_in(mock)
    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90)
    assert result.usage_limits is None


@pytest.mark.parametrize("scenario", ["image", "usage_limit"])
def test_limits_reads_the_windows_without_a_model_request(
    shim: Path, backend: Start, signed_in: SignIn, scenario: str
) -> None:
    mock = backend(scenario)
    signed_in(mock)
    run = limits_cli(shim)
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    expected = 100.0 if scenario == "usage_limit" else 34.0
    assert document["ok"] is True and document["plan"] == "plus"
    assert document["primary"] == {
        "used_percent": expected,
        "window_minutes": 300,
        "resets_at": document["primary"]["resets_at"],
    }
    assert document["secondary"]["window_minutes"] == 10080
    assert "/backend-api/wham/usage" in mock.paths("GET")
    assert not [p for p in mock.paths("POST") if p.endswith("/responses")]  # no model request
    assert usage_limits(codex=shim, allow_relay=True).plan == "plus"  # the library, the same way


@pytest.mark.parametrize(("status", "code", "reason"), [(401, 3, "login_refused"),
                                                       (502, 5, "usage_unavailable")])  # fmt: skip
def test_a_refused_read_is_sorted_as_the_fake_says_it(
    shim: Path, backend: Start, signed_in: SignIn, status: int, code: int, reason: str
) -> None:
    """The fake's refused/unavailable answers are held to what each release says when the
    usage endpoint refuses the login or fails."""
    mock = backend("image", usage_status=status)
    signed_in(mock)
    run = limits_cli(shim)
    assert run.returncode == code, run.stdout + run.stderr
    error = json.loads(run.stdout)["error"]
    assert error["reason"] == reason
    assert "failed to fetch codex rate limits: GET https://" in error["message"]
    assert f"failed: {status} " in error["message"]

"""Runs tests/apps inside each application's own environment (.venv-apps/NAME, made by
scripts/test.sh): LiteLLM, LangChain and Haystack, as their users install them, pointed at
`codex-image serve` (run by this environment's Python) with the fake codex behind it.
Offline: in a private network namespace where one can be made."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import IN_CI, REPO, run_inner_suite

pytestmark = pytest.mark.timeout(900)
APPS = {"litellm": "litellm", "langchain": "langchain_community", "haystack": "haystack"}


@pytest.mark.parametrize("app", sorted(APPS))
def test_the_application_against_serve(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    python = REPO / ".venv-apps" / app / "bin" / "python"
    probe = [str(python), "-c", f"import {APPS[app]}, codex_cli_image, pytest"]
    found = subprocess.run(probe, capture_output=True, text=True) if python.exists() else None
    if found is None or found.returncode != 0:
        reason = f"{app} is not installed in {python} (scripts/test.sh installs it)"
        if IN_CI:
            pytest.fail(reason + " (CI must run the application tests)")
        pytest.skip(reason)
    env = {"CODEX_IMAGE_APPS_INNER": "1", "CODEX_IMAGE_SERVE_PYTHON": sys.executable}
    # The applications' own deprecation and resource warnings are theirs, not failures here.
    quiet = [f"-Wignore::{kind}" for kind in ("DeprecationWarning", "PendingDeprecationWarning",
                                               "UserWarning", "ResourceWarning")]  # fmt: skip
    run_inner_suite(python, f"tests/apps/test_{app}.py", app, env, capsys, quiet)

"""Runs tests/hermes inside the real hermes-agent (its own environment, .venv-hermes, made by
scripts/test.sh): Hermes needs Python 3.11+ and brings ~230 MB of its own dependencies, so it is
kept out of the test environment. Offline: in a private network namespace where one can be made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import IN_CI, REPO, run_inner_suite

pytestmark = pytest.mark.timeout(600)
HERMES_VERSION = "0.19.0"


def hermes_python() -> Path:
    given = os.environ.get("CODEX_IMAGE_HERMES_PYTHON")
    return Path(given) if given else REPO / ".venv-hermes" / "bin" / "python"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Hermes Agent needs Python 3.11+")
def test_the_backend_inside_hermes_agent(capsys: pytest.CaptureFixture[str]) -> None:
    python = hermes_python()
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('hermes-agent'))"]
    found = subprocess.run(probe, capture_output=True, text=True) if python.exists() else None
    if found is None or found.returncode != 0 or found.stdout.strip() != HERMES_VERSION:
        reason = f"hermes-agent {HERMES_VERSION} is not installed in {python} (scripts/test.sh)"
        if IN_CI:
            pytest.fail(reason + " (CI must run the Hermes Agent tests)")
        pytest.skip(reason)
    run_inner_suite(python, "tests/hermes", "hermes", {"CODEX_IMAGE_HERMES_INNER": "1"}, capsys)

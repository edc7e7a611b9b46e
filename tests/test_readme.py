"""Every Python block of the README runs as shown, against the fake codex (a newcomer copies
them into a file: a top-level `await` or an undefined name is a broken promise)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codex_cli_image.testing import FakeCodex

from helpers import REPO

pytestmark = pytest.mark.timeout(120)

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
BLOCKS = _BLOCK.findall((REPO / "README.md").read_text("utf-8"))


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS, ids=lambda code: code.strip().splitlines()[-1][:40])
def test_a_readme_block_runs_as_shown(code: str, fake_codex: FakeCodex, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fake_codex.configure("success", width=96, height=64)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    if re.search(r"^def test_", code, re.M):  # a test of the user's: run by pytest, as theirs
        script = work / "test_readme_example.py"
        script.write_text(code, "utf-8")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        script = work / "example.py"
        script.write_text(code, "utf-8")
        argv = [sys.executable, str(script)]
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr

"""tests/apps runs inside each application's own environment (.venv-apps/NAME, made by
scripts/test.sh; tests/test_applications.py starts it): the application as its users install
it, pointed at `codex-image serve` (run by the test environment's Python, as a separate
program) with the fake codex behind it."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from codex_cli_image.testing import FakeCodex

TOKEN = "sk-apps-test-token-0123456789abcdef"


@dataclass
class Served:
    url: str
    token: str
    log: Path

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace")


@pytest.fixture
def serve(fake_codex: FakeCodex, tmp_path: Path) -> Iterator[Served]:
    python = os.environ.get("CODEX_IMAGE_SERVE_PYTHON", sys.executable)
    log = tmp_path / "serve.log"
    env = {**os.environ, "CODEX_IMAGE_TOKEN": TOKEN}
    with log.open("w") as err:
        process = subprocess.Popen(
            [python, "-m", "codex_cli_image", "serve", "--port", "0", "--codex",
             str(fake_codex.path)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        url = lines.get(timeout=60).strip()
        assert url.startswith("http://"), log.read_text()
        yield Served(url, TOKEN, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stdout.close()
    text = log.read_text("utf-8", "replace")
    assert "Traceback" not in text and TOKEN not in text, text


def run_readme_snippet(app: str, served: Served, cwd: Path) -> Path:
    """Run the README's block for ``app`` (```python app=NAME) as a user would, in ``cwd``,
    with the server's URL and token in the environment; the image it saved."""
    import re

    from helpers import REPO

    text = (REPO / "README.md").read_text("utf-8")
    (code,) = re.findall(rf"^```python app={app}\n(.*?)^```", text, re.S | re.M)
    script = cwd / "snippet.py"
    script.write_text(code, "utf-8")
    env = {**os.environ, "CODEX_IMAGE_URL": served.url, "CODEX_IMAGE_TOKEN": served.token}
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return cwd / "fox.png"

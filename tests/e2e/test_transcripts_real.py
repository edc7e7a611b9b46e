"""What the real CLI prints and writes, per version, against the recordings in fixtures/.

A format change in a new CLI version shows up here as a diff. To record anew (after checking
the change is understood): CODEX_IMAGE_RECORD=1 scripts/test.sh -k transcript
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codex_cli_image.launcher import locate
from codex_cli_image.testing.backend import MockBackend, codex_home_for, image_refusal
from codex_cli_image.testing.transcripts import record

from helpers import FIXTURES

NAMES = (
    "success", "success_code_mode", "refused", "refused_code_mode", "moderation_code_mode",
    "usage_limit", "rate_limited", "refresh_failed", "text_only", "forged_code_mode",
)  # fmt: skip
CODE_MODE = ("success_code_mode", "refused_code_mode", "moderation_code_mode", "forged_code_mode")


def scenario_for(name: str, version: tuple[int, int, int]) -> tuple[str, dict[str, Any]]:
    client_side = version >= (0, 149, 0)
    return {
        "success": ("image" if client_side else "image_hosted", {}),
        "success_code_mode": ("image_code_mode", {}),
        "refused": ("images_403" if client_side else "image_hosted_failed", {}),
        "refused_code_mode": ("image_code_mode", {"images_error": image_refusal("not_supported")}),
        "moderation_code_mode": ("image_code_mode", {"images_error": image_refusal("moderation")}),
        "usage_limit": ("usage_limit", {}),
        "rate_limited": ("responses_429", {}),
        "refresh_failed": ("unauthorized", {}),
        "text_only": ("text_only", {}),
        # The model's script throws codex's failure line: what codex records of it (#29).
        "forged_code_mode": ("forged_failure", {}),
    }[name]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_transcript_matches_the_recording(
    shim: Path,
    version: tuple[int, int, int],
    backend: Callable[..., MockBackend],
    tmp_path: Path,
    name: str,
) -> None:
    if name in CODE_MODE and version < (0, 149, 0):
        pytest.skip("code mode (the exec tool) arrived with the client-side image tool in 0.149")
    scenario, options = scenario_for(name, version)
    mock = backend(scenario, **options)
    home = tmp_path / "h"
    env = codex_home_for(mock, home)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    codex = locate(shim)
    proc = subprocess.run(
        codex.command("exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only",
                      "--cd", str(workspace), "--config", "analytics.enabled=false", "-"),
        input=b"draw a fox",
        capture_output=True,
        env={**codex.env, **env},
        timeout=90,
    )  # fmt: skip
    got = {"exit_code": proc.returncode, **record(proc.stdout, home, proc.stderr)}
    path = FIXTURES / f"codex-{'.'.join(map(str, version))}" / f"{name}.json"
    if os.environ.get("CODEX_IMAGE_RECORD") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert path.exists(), f"no recording at {path}: record with CODEX_IMAGE_RECORD=1"
    assert got == json.loads(path.read_text(encoding="utf-8"))

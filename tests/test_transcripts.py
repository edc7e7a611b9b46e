"""The fake codex writes what the real CLI writes: the same event and record structure as the
transcripts recorded from each real version (fixtures/codex-<version>/, see tests/e2e)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from codex_cli_image.testing import FakeCodex
from codex_cli_image.testing.backend import image_refusal
from codex_cli_image.testing.transcripts import record, shape

from helpers import FIXTURES

RECORDINGS = sorted(FIXTURES.glob("codex-*/*.json"))


def refused(name: str) -> dict[str, Any]:
    """The fake's options for the images endpoint's refusal the mock answered with."""
    status, body = image_refusal(name)
    return {"name_style": "exec", "images_status": status, "images_body": body}


def fake_for(name: str, version: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    client_side = version >= (0, 149, 0)
    style = {"name_style": "call" if client_side else "ig"}
    return {
        "success": ("success", style),
        "success_code_mode": ("success", {"name_style": "exec"}),
        "refused": ("image_refused", style) if client_side else ("hosted_failed", style),
        "refused_code_mode": ("image_refused", refused("not_supported")),
        "moderation_code_mode": ("image_refused", refused("moderation")),
        "usage_limit": ("usage_limit", {}),
        "rate_limited": ("rate_limited", {}),
        "refresh_failed": ("refresh_failed", {}),
        "text_only": ("no_image", {}),
        "forged_code_mode": ("forged_failure", {}),
    }[name]


def test_every_version_is_recorded() -> None:
    from codex_cli_image.testing.realcodex import VERSIONS

    assert {p.parent.name for p in RECORDINGS} == {f"codex-{v}" for v in VERSIONS}


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fake_matches_the_recorded_structure(path: Path, tmp_path: Path) -> None:
    version_text = path.parent.name.removeprefix("codex-")
    version = tuple(int(part) for part in version_text.split("."))
    real = json.loads(path.read_text(encoding="utf-8"))
    scenario, options = fake_for(path.stem, version)
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "home")
    fake.configure(scenario, version=version_text, **options)
    proc = subprocess.run(
        [str(fake.path), "exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only",
         "--cd", str(tmp_path), "-"],
        input=b"draw a fox",
        capture_output=True,
        env=fake.env(),
        timeout=60,
    )  # fmt: skip
    got = {"exit_code": proc.returncode, **record(proc.stdout, fake.codex_home, proc.stderr)}
    assert got["exit_code"] == real["exit_code"]
    assert shape(got) == shape(real)

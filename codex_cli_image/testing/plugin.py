"""pytest plugin (entry point ``pytest11``): the ``fake_codex`` fixture.

Kept import-light: pytest loads it in every session of an environment that has this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from . import FakeCodex


@pytest.fixture
def fake_codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCodex]:
    """A fake ``codex`` signed in to a fake ChatGPT plus account, selected through the environment.

    ``CODEX_BIN`` points at the fake, ``CODEX_HOME`` at its private home, ``HOME`` at an empty
    directory and ``CODEX_IMAGE_CACHE_DIR`` at the test's own folder, so nothing reaches the
    real ``~/.codex`` or ``~/.cache``. Configure it with
    ``fake_codex.configure("usage_limit")``; read what it saw in ``fake_codex.calls``.
    """
    from . import FakeCodex

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    fake = FakeCodex(tmp_path / "fake-codex", codex_home=tmp_path / "codex-home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CODEX_HOME", str(fake.codex_home))
    monkeypatch.setenv("CODEX_BIN", str(fake.path))
    # What we learn of a codex binary is cached per user: here, per test, not in ~/.cache.
    monkeypatch.setenv("CODEX_IMAGE_CACHE_DIR", str(tmp_path / "cache"))
    yield fake

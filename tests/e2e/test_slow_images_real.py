"""#31 on every release: what codex does with a slow or failing images request. Its resends
are counted and reported; the code-mode cell's yield setting is taken where codex takes it
(a run with it on a release that refuses it would not start at all)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from codex_cli_image import generate
from codex_cli_image.testing.backend import MockBackend

pytestmark = pytest.mark.timeout(180)
Start = Callable[..., MockBackend]
SignIn = Callable[..., Path]


def test_codex_resends_of_the_image_request_are_reported(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    if version < (0, 149, 0):
        pytest.skip("the images request (and codex's HTTP log) came with the client-side tool")
    mock = backend("image", images_fail_first=2)
    signed_in(mock)
    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90)
    assert mock.images_requests == 3
    assert any("codex sent the image request 3 times" in w for w in result.warnings)


def test_a_code_mode_cell_without_its_own_yield_runs_on_every_release(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """The script names no yield time, so codex's default (or ours) applies; the image comes
    in one cell and one more model request closes the turn."""
    scenario = "image_code_mode" if version >= (0, 149, 0) else "image_hosted"
    mock = backend(scenario, cell_yield_ms=None, image_delay_s=1.0)
    signed_in(mock)
    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90)
    assert result.path.read_bytes() == mock.image
    assert not [w for w in result.warnings if "image request" in w]

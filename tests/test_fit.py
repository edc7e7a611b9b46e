"""--fit WxH: an exact-size copy beside the original (Pillow, the fit extra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codex_cli_image import CodexImageError
from codex_cli_image import pipeline as pipeline_module
from codex_cli_image.api import generate, generate_many
from codex_cli_image.fit import crop_box, fit_png
from codex_cli_image.png import inspect_png
from codex_cli_image.testing import FakeCodex, make_png

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("private_tmp")]


@pytest.mark.parametrize(
    ("size", "target", "box"),
    [
        ((300, 200), (100, 100), (50, 0, 250, 200)),  # too wide: sides trimmed
        ((200, 300), (100, 100), (0, 50, 200, 250)),  # too tall: top and bottom trimmed
        ((300, 200), (60, 40), (0, 0, 300, 200)),  # same aspect: nothing trimmed
        ((1024, 1024), (1200, 630), (0, 243, 1024, 781)),
    ],
)
def test_crop_box_is_centred_and_minimal(
    size: tuple[int, int], target: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    assert crop_box(*size, target) == box


@pytest.mark.parametrize("alpha", [False, True])
def test_fit_png_gives_exactly_the_size(alpha: bool) -> None:
    fitted = fit_png(make_png(300, 200, "seed", alpha=alpha), (120, 90))
    info = inspect_png(fitted)
    assert (info.width, info.height, info.has_alpha) == (120, 90, alpha)


def test_generate_keeps_the_original_and_writes_the_copy(
    fake_codex: FakeCodex, tmp_path: Path
) -> None:
    fake_codex.configure("success", width=96, height=64)
    (tmp_path / "fox-32x32.png").write_bytes(b"mine")
    result = generate("a fox", output=tmp_path / "fox.png", fit="32x32", timeout=30)
    assert (result.width, result.height) == (96, 64) and result.path == tmp_path / "fox.png"
    assert inspect_png(result.path.read_bytes()).width == 96
    fitted = result.fitted
    assert fitted is not None and fitted.path.parent == tmp_path
    assert fitted.path.name.startswith("fox-32x32") and fitted.path.name != "fox-32x32.png"
    assert (tmp_path / "fox-32x32.png").read_bytes() == b"mine"
    assert (fitted.width, fitted.height) == (32, 32)
    assert inspect_png(fitted.path.read_bytes()).width == 32
    # No aspect was given: the fit's aspect was asked of the model, and the mismatch reported.
    assert result.requested.aspect == (1, 1) and result.geometry_mismatch
    data = result.to_dict()["fitted"]
    assert isinstance(data, dict) and data["path"] == str(fitted.path)


def test_missing_pillow_is_refused_before_codex_runs(
    fake_codex: FakeCodex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n == "PIL" or n.startswith("PIL.")] + ["PIL"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(CodexImageError) as info:
        generate("a fox", output=tmp_path, fit="32x32")
    assert (info.value.kind, info.value.reason) == ("input", "fit_needs_pillow")
    hint = info.value.hint
    assert f"{sys.executable} -m pip install '.[fit]'" in hint and fake_codex.calls == []


def test_bad_fit_size(fake_codex: FakeCodex, tmp_path: Path) -> None:
    with pytest.raises(CodexImageError) as info:
        generate("a fox", output=tmp_path, fit="big")
    assert info.value.reason == "invalid_size" and fake_codex.calls == []


def test_cli_prints_both_paths(fake_codex: FakeCodex, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "generate", "a fox", "-o",
         str(tmp_path / "a.png"), "--fit", "16x16"],
        capture_output=True, text=True, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "a.png"), str(tmp_path / "a-16x16.png")]


def test_a_failed_copy_keeps_the_delivered_image(
    fake_codex: FakeCodex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(data: bytes, size: tuple[int, int]) -> bytes:
        raise ValueError("decoder exploded")

    monkeypatch.setattr(pipeline_module, "fit_png", broken)
    result = generate("a fox", output=tmp_path / "fox.png", fit="32x32", timeout=30)
    assert result.path.exists() and result.fitted is None
    assert any("32x32 copy could not be made (decoder exploded)" in w for w in result.warnings)


def test_overwrite_applies_to_the_copy_too(fake_codex: FakeCodex, tmp_path: Path) -> None:
    for _ in range(2):
        result = generate("a fox", output=tmp_path / "fox.png", fit="16x16", overwrite=True)
    assert result.fitted is not None and result.fitted.path == tmp_path / "fox-16x16.png"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == [
        "fox-16x16.png",
        "fox.png",
    ]


def test_a_batch_without_pillow_is_refused_before_any_job(
    fake_codex: FakeCodex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n == "PIL" or n.startswith("PIL.")] + ["PIL"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(CodexImageError) as info:
        generate_many(["a fox", {"prompt": "a hen", "fit": "32x32"}], out_dir=tmp_path)
    assert info.value.reason == "fit_needs_pillow" and fake_codex.calls == []


@pytest.mark.bad_input
@pytest.mark.parametrize("timeout", ["10", None, True, 0, -1])
def test_a_timeout_of_the_wrong_type_is_an_input_error(fake_codex: FakeCodex, timeout: Any) -> None:
    with pytest.raises(CodexImageError) as info:
        generate("a fox", timeout=timeout)
    assert info.value.reason == "invalid_timeout" and fake_codex.calls == []

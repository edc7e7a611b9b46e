"""References, geometry and transparency: checks, what reaches codex, what is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_cli_image import CodexImageError, InputError, generate
from codex_cli_image import pipeline as pipeline_module
from codex_cli_image.png import PngInfo, sniff
from codex_cli_image.request import (
    MAX_REFERENCE_BYTES,
    Geometry,
    check_references,
    compare_geometry,
    parse_aspect,
    parse_size,
)
from codex_cli_image.testing import FakeCodex, make_png

from helpers import FIXTURES

pytestmark = pytest.mark.timeout(60)
PNG = (FIXTURES / "png" / "valid-64x48.png").read_bytes()
SAMPLES = {
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    "tiff": b"II*\x00" + b"\x00" * 28,
    "ico": b"\x00\x00\x01\x00" + b"\x00" * 28,
    "heic": b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20,
    "bmp": b"BM" + b"\x00" * 30,
    "pdf": b"%PDF-1.7\n" + b"\x00" * 20,
    "unknown": b"hello, not an image at all",
}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "_BACKOFF_S", 0.01)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("square", (1, 1)),
        ("Landscape", (3, 2)),
        ("portrait", (2, 3)),
        ("16:9", (16, 9)),
        ("1024:768", (4, 3)),
    ],
)
def test_parse_aspect(text: str, expected: tuple[int, int]) -> None:
    assert parse_aspect(text) == expected


@pytest.mark.bad_input
@pytest.mark.parametrize("text", ["wide", "0:1", "16/9", "-1:2", ""])
def test_bad_aspects(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_aspect(text)
    assert info.value.reason == "invalid_aspect"


@pytest.mark.parametrize(
    ("text", "ok"),
    [("1024x1536", True), ("512X512", True), ("8x8", False), ("9000x100", False), ("big", False)],
)
def test_parse_size(text: str, ok: bool) -> None:
    if ok:
        assert parse_size(text)[0] >= 16
    else:
        with pytest.raises(InputError):
            parse_size(text)


@pytest.mark.parametrize(
    ("requested", "size", "mismatch", "warned"),
    [
        (Geometry(), (1536, 1024), False, False),
        (Geometry(aspect=(1, 1)), (1024, 1024), False, False),
        (Geometry(aspect=(2, 3)), (1536, 1024), True, True),
        (Geometry(size=(1024, 1536)), (1536, 1024), True, True),
        (Geometry(size=(1024, 1536)), (512, 768), False, True),  # aspect right, size not
        (Geometry(aspect=(16, 9)), (1600, 901), False, False),  # within tolerance
    ],
)
def test_compare_geometry(
    requested: Geometry, size: tuple[int, int], mismatch: bool, warned: bool
) -> None:
    info = PngInfo(size[0], size[1], 8, 2, False, 100)
    got, warnings = compare_geometry(requested, info)
    assert got is mismatch and bool(warnings) is warned


def test_transparency_warning() -> None:
    opaque = PngInfo(10, 10, 8, 2, False, 100)
    assert compare_geometry(Geometry(transparent=True), opaque)[1]
    assert not compare_geometry(Geometry(transparent=True), PngInfo(10, 10, 8, 6, True, 100))[1]


# --- references ---


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_refused_reference_types_name_the_file_and_type(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"ref.{kind}"
    path.write_bytes(SAMPLES[kind])
    with pytest.raises(InputError) as info:
        check_references([path])
    assert info.value.reason == "invalid_reference"
    assert str(path) in info.value.message
    assert ("an unknown type" if kind == "unknown" else kind.upper()) in info.value.message


def test_accepted_reference_types(tmp_path: Path) -> None:
    samples = {
        "png": PNG,
        "jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 30,
        "gif": b"GIF89a" + b"\x00" * 30,
        "webp": b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
    }
    paths = []
    for kind, data in samples.items():
        (tmp_path / kind).write_bytes(data)
        paths.append(tmp_path / kind)
    assert [r.kind for r in check_references(paths)] == list(samples)
    assert sniff(samples["webp"][:32]) == "webp"


@pytest.mark.bad_input
@pytest.mark.parametrize("problem", ["missing", "symlink", "directory", "oversize", "six"])
def test_reference_problems(tmp_path: Path, problem: str) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(PNG)
    paths: list[Path] = [good]
    if problem == "missing":
        paths = [tmp_path / "nope.png"]
    elif problem == "symlink":
        (tmp_path / "link.png").symlink_to(good)
        paths = [tmp_path / "link.png"]
    elif problem == "directory":
        paths = [tmp_path]
    elif problem == "oversize":
        big = tmp_path / "big.png"
        with big.open("wb") as handle:
            handle.write(PNG)
            handle.truncate(MAX_REFERENCE_BYTES + 1)  # sparse: no real 25 MB written
        paths = [big]
    else:
        paths = [good] * 6
    with pytest.raises(InputError) as info:
        check_references(paths)
    expected = "too_many_references" if problem == "six" else "invalid_reference"
    assert info.value.reason == expected and info.value.hint


# --- through generate ---


def test_references_reach_codex_as_snapshots(fake_codex: FakeCodex, tmp_path: Path) -> None:
    refs = []
    for n in range(2):
        path = tmp_path / f"my,ref {n}.png"  # a comma and a space: must not split or break
        path.write_bytes(make_png(8, 8, f"ref {n}"))
        refs.append(path)
    fake_codex.configure("success")
    result = generate("make it blue", output=tmp_path / "out.png", references=refs, timeout=30)
    call = fake_codex.exec_calls[0]
    assert call.raw["images"] == ["ref-1.png", "ref-2.png"] and call.raw["images_exist"] == [
        True,
        True,
    ]
    assert call.argv[-4:] == ["--image=ref-1.png", "--image=ref-2.png", "--", "-"]
    assert "num_last_images_to_include: 2" in (call.stdin or "")
    assert "referenced_image_paths" not in (call.stdin or "")  # relative paths fail in 0.169
    assert result.path.read_bytes() != refs[0].read_bytes()


@pytest.mark.bad_input
def test_bad_reference_fails_before_codex_runs(fake_codex: FakeCodex, tmp_path: Path) -> None:
    svg = tmp_path / "logo.svg"
    svg.write_bytes(SAMPLES["svg"])
    with pytest.raises(InputError) as info:
        generate("x", output=tmp_path / "o.png", references=[svg], timeout=30)
    assert info.value.reason == "invalid_reference" and fake_codex.calls == []


def test_a_reference_returned_unchanged_is_no_image(fake_codex: FakeCodex, tmp_path: Path) -> None:
    ref = tmp_path / "ref.png"
    ref.write_bytes(PNG)
    fake_codex.configure("success", copy_reference=True)
    with pytest.raises(CodexImageError) as info:
        generate("edit it", output=tmp_path / "o.png", references=[ref], timeout=30, retries=1)
    assert info.value.reason == "no_image" and "unchanged" in info.value.message
    assert len(fake_codex.exec_calls) == 2  # no image was produced, so it was retried
    assert not (tmp_path / "o.png").exists()


def test_geometry_is_asked_and_reported(fake_codex: FakeCodex, tmp_path: Path) -> None:
    fake_codex.configure("success", width=1536, height=1024)
    result = generate("a tower", output=tmp_path / "o.png", size="1024x1536", timeout=30)
    assert "1024x1536 pixels" in (fake_codex.exec_calls[0].stdin or "")
    assert (result.width, result.height, result.geometry_mismatch) == (1536, 1024, True)
    assert any("1536x1024" in w for w in result.warnings)
    document = result.to_dict()
    assert document["requested"] == {"aspect": None, "size": "1024x1536", "transparent": False}
    assert document["geometry_mismatch"] is True


def test_transparent_is_asked_and_reported(fake_codex: FakeCodex, tmp_path: Path) -> None:
    fake_codex.configure("success", alpha=True)
    result = generate("a logo", output=tmp_path / "a.png", transparent=True, timeout=30)
    assert "transparent_background: true" in (fake_codex.exec_calls[0].stdin or "")
    assert result.has_alpha and result.warnings == ()
    fake_codex.configure("success")
    opaque = generate("a logo", output=tmp_path / "b.png", transparent=True, timeout=30)
    assert not opaque.has_alpha and any("alpha" in w for w in opaque.warnings)


def test_cli_options(fake_codex: FakeCodex, tmp_path: Path) -> None:
    ref = tmp_path / "r.png"
    ref.write_bytes(PNG)
    fake_codex.configure("success", width=100, height=100)
    result = subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "generate", "x", "-o", str(tmp_path / "o.png"),
         "-i", str(ref), "--aspect", "square", "--transparent", "--json"],
        capture_output=True, text=True, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    document = json.loads(result.stdout)
    assert result.returncode == 0 and document["requested"]["aspect"] == "1:1"
    assert document["geometry_mismatch"] is False and document["has_alpha"] is False
    bad = subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "generate", "x", "--aspect", "wide", "--json"],
        capture_output=True, text=True, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["reason"] == "invalid_aspect"

"""The per-image path: its shape (no import cycle, short functions, one place for settings) and
the defects a review found along it, each with the test that failed before its fix."""

from __future__ import annotations

import ast
import json
import logging
import os
import pathlib
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import codex_cli_image
from codex_cli_image import Client, ImageRequest, InputError, TransientError, generate, runner
from codex_cli_image.batch import parse_batch
from codex_cli_image.errors import AuthError, log_unexpected, redact
from codex_cli_image.failures import RunOutcome, classify, error_lines
from codex_cli_image.launcher import _Platform, _split_path
from codex_cli_image.pipeline import Reporter, plan_image
from codex_cli_image.rollout import parse_image_records
from codex_cli_image.settings import SETTING_NAMES, ClientOptions, Settings
from codex_cli_image.testing import FakeCodex, make_png

from helpers import png_ok

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("private_tmp")]

PACKAGE = Path(codex_cli_image.__file__).parent
NOW = __import__("datetime").datetime(2026, 12, 3, 12, 0).astimezone()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# --- shape ------------------------------------------------------------------------------------


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of the package: top-level, lazy and
    TYPE_CHECKING ones alike."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                found.update(name.split(".")[0] for name in names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "codex_cli_image."
            ):
                found.add((node.module or "").split(".")[1])
        graph[path.stem] = (found & modules) - {path.stem}
    return graph


def test_no_import_cycle_between_the_package_modules() -> None:
    """Guards the layering: a cycle means a thing has two owners."""
    graph = _imports()
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, dep]))
            if dep not in state:
                visit(dep, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    # The pipeline takes its preflight as a value: it never reaches for the client.
    assert "client" not in graph["pipeline"] and "client" not in graph["batch"]
    assert "cli" not in graph["mcp_server"]


def test_at_most_three_functions_run_over_80_lines() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{path.name}:{node.name}")
    assert len(long) <= 3, long


def test_the_client_options_are_the_settings_fields() -> None:
    """Adding a setting is a field of Settings: the keyword types follow it."""
    assert set(ClientOptions.__annotations__) == SETTING_NAMES


def test_client_generate_takes_the_per_image_keywords(fake_codex: FakeCodex, out: Path) -> None:
    """Regression guard: client.generate("a fox", output="fox.png") was a TypeError."""
    with Client(timeout=30) as client:
        result = client.generate("a fox", output=out / "fox.png", aspect="square")
        assert result.path == out / "fox.png" and result.requested.aspect == (1, 1)

        async def main() -> Path:
            made = await client.agenerate(ImageRequest("a hen"), output=out / "hen.png")
            return made.path

        assert anyio.run(main) == out / "hen.png"
    with pytest.raises(TypeError, match="colour"):
        generate("a fox", colour="red")  # type: ignore[call-arg]


def test_settings_are_checked_once_where_they_are_made() -> None:
    with pytest.raises(InputError) as info:
        Client(timeout=-1)
    assert info.value.reason == "invalid_timeout"
    with pytest.raises(InputError):
        Settings(concurrency=99)
    with pytest.raises(TypeError, match="timout"):
        Client(timout=3)  # type: ignore[call-arg]


def test_a_request_and_its_references_are_read_once_per_image(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "ref.png"
    reference.write_bytes(make_png(8, 8, "ref"))
    reads: list[str] = []
    real = os.open

    def counting(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(reference):
            reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)
    plan = plan_image(ImageRequest("a fox", output=out, references=[str(reference)]))
    assert len(reads) == 1 and plan.references[0].size == reference.stat().st_size


# --- 1: a bug of ours after a verified image is neither retried nor paid twice ---------------


def test_a_deeply_nested_session_log_line_is_skipped() -> None:
    line = b'{"image_gen": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert parse_image_records([line]) == []


def test_a_bug_after_the_image_is_not_retried(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise ValueError("a bug of ours")

    monkeypatch.setattr(runner, "_revised_prompt", broken)
    fake_codex.configure("success")
    with pytest.raises(TransientError) as info:
        generate("a fox", output=out / "fox.png", retries=3, timeout=30)
    assert info.value.reason == "internal_error"
    assert len(fake_codex.exec_calls) == 1  # one image paid for, not two


def test_an_unreadable_session_log_costs_nothing_but_the_revised_prompt(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(runner, "read_rollout", broken)
    fake_codex.configure("success")
    result = generate("a fox", output=out / "fox.png", retries=3, timeout=30, wait_for_turn=True)
    assert png_ok(result.path.read_bytes()) and result.attempts == 1
    assert result.revised_prompt is None and len(fake_codex.exec_calls) == 1


# --- 2: a reference swapped after the check never reaches codex ------------------------------


@pytest.mark.parametrize("swap", ["symlink", "rewrite"])
def test_a_reference_swapped_after_the_check_is_refused(
    fake_codex: FakeCodex, tmp_path: Path, out: Path, swap: str
) -> None:
    reference, secret = tmp_path / "ref.png", tmp_path / "secret.png"
    reference.write_bytes(make_png(8, 8, "ref"))
    secret.write_bytes(make_png(8, 8, "secret"))
    fake_codex.configure("success")
    with Client(timeout=30) as client:
        plan = plan_image(ImageRequest("a fox", output=out, references=[str(reference)]))
        reference.unlink()
        if swap == "symlink":
            reference.symlink_to(secret)
        else:
            reference.write_bytes(secret.read_bytes())

        async def main() -> None:
            await client._queued(plan, client.settings, Reporter(None))

        with pytest.raises(InputError) as info:
            anyio.run(main)
    assert info.value.reason in ("reference_changed", "invalid_reference")
    assert fake_codex.exec_calls == [] and list(out.iterdir()) == []


# --- 3: a prompt that cannot be encoded is an input error before anything runs ---------------


def test_a_lone_surrogate_is_refused_before_codex_starts(fake_codex: FakeCodex, out: Path) -> None:
    with pytest.raises(InputError) as info:
        generate("a fox \ud800 in snow", output=out, timeout=30)
    assert info.value.reason == "invalid_prompt" and "U+D800" in info.value.message
    with pytest.raises(InputError, match="line 1: .*surrogate"):
        parse_batch(json.dumps({"prompt": "a \ud83d hen"}))
    with pytest.raises(InputError) as model:
        Settings(model="gpt\udc80")
    assert model.value.reason == "invalid_model"
    assert fake_codex.calls == []


# --- 4: no secret in an error or a log line -------------------------------------------------


def test_url_credentials_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    assert "hunter2" not in redact("https://bob:hunter2@example.com/a.png")
    log = logging.getLogger("codex_cli_image.test")
    try:
        raise ValueError("could not open https://bob:hunter2@example.com/a.png")
    except ValueError as exc:
        with caplog.at_level(logging.ERROR):
            log_unexpected(log, "unexpected", exc)
    assert "hunter2" not in caplog.text and "ValueError" in caplog.text


# --- 5: classified from codex's error lines, a death by signal as what it is -----------------


def test_a_killed_codex_is_not_sorted_by_old_warnings() -> None:
    tail = "2026-12-03T12:00:00Z WARN codex_core::client: 429 Too Many Requests; retrying 1/5\n"
    error = classify(RunOutcome(exit_code=-9, stderr_tail=tail), now=NOW)
    assert (error.kind, error.reason) == ("transient", "codex_failed")
    assert "SIGKILL" in error.message


def test_info_lines_do_not_decide_the_class() -> None:
    tail = (
        "2026-12-03T12:00:00Z INFO codex_core::config: moderation settings loaded\n"
        "Error: failed to initialize in-process app-server client: No space left on device\n"
        "\nStack backtrace:\n   0: <unknown>\n  13: <unknown>\n"
    )
    error = classify(RunOutcome(exit_code=1, stderr_tail=tail), now=NOW)
    assert error.reason == "disk_full"
    assert "No space left on device" in error.message and "<unknown>" not in error.message
    assert error_lines("Error: a\n\nCaused by:\n    b\n") == ["Error: a: b"]


# --- 6: the image is taken whatever the codex home's clock says ------------------------------


def test_an_image_with_an_old_mtime_is_taken(tmp_path: Path) -> None:
    folder = tmp_path / "generated_images" / "thread-1"
    folder.mkdir(parents=True)
    image = folder / "exec-1.png"
    image.write_bytes(make_png(8, 8, "old clock"))
    os.utime(image, (time.time() - 3600, time.time() - 3600))  # a file server an hour behind
    state = runner._State(thread_id="thread-1")
    runner._look_for_image(state, tmp_path)
    assert state.image is not None and state.image[0] == image


# --- 7: a bad saved file is named as such ----------------------------------------------------


@pytest.mark.parametrize("scenario", ["invalid_png", "truncated_png", "jpeg"])
def test_a_bad_saved_file_is_named(fake_codex: FakeCodex, out: Path, scenario: str) -> None:
    fake_codex.configure(scenario)
    with pytest.raises(TransientError) as info:
        generate("a fox", output=out / "fox.png", retries=0, timeout=30)
    message = info.value.message
    assert info.value.reason == "invalid_image"
    assert "saved no file" not in message and "generated_images" in message, message


# --- 8: OS errors from paths become our errors -----------------------------------------------


def test_an_unsearchable_output_folder_is_an_input_error(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Path.is_symlink raises on Python 3.10/3.11 below a folder one may not enter."""
    real = pathlib.Path.is_symlink

    def denied(self: pathlib.Path) -> bool:
        if str(self).startswith(str(out)):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "is_symlink", denied)
    with pytest.raises(InputError) as info:
        generate("a fox", output=out / "locked" / "fox.png", timeout=30)
    assert info.value.reason == "output_unusable" and "Permission denied" in info.value.message
    assert fake_codex.exec_calls == []


def test_an_unsearchable_codex_home_is_an_auth_error(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = str(fake_codex.codex_home)
    real = pathlib.Path.is_dir

    def denied(self: pathlib.Path) -> bool:
        if str(self).startswith(home):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "is_dir", denied)
    with pytest.raises(AuthError) as info:
        generate("a fox", output=out, codex_home=home, timeout=30)
    assert info.value.reason == "codex_home_unreadable"
    assert fake_codex.exec_calls == []


# --- also from the review --------------------------------------------------------------------


def test_the_preflight_lock_wait_keeps_the_call_deadline(fake_codex: FakeCodex) -> None:
    client = Client(timeout=30)
    with client._preflight_lock:  # another call's probe that does not end
        started = time.monotonic()
        with pytest.raises(TransientError) as info:
            client._prepare(time.monotonic() + 0.5, stop=threading.Event())
    assert info.value.reason == "timeout" and time.monotonic() - started < 10


def test_quoted_windows_path_entries_are_kept() -> None:
    win = _Platform("win32", "x64")
    path = '"C:\\Program Files\\nodejs";C:\\bin;relative'
    assert _split_path(path, win) == ["C:\\Program Files\\nodejs", "C:\\bin"]

"""generate / agenerate and `codex-image generate` against the fake codex, scenario by scenario."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_cli_image import CodexImageError, runner
from codex_cli_image import pipeline as pipeline_module
from codex_cli_image._interrupts import interrupt
from codex_cli_image.api import agenerate, generate
from codex_cli_image.failures import SENTINEL
from codex_cli_image.results import ImageResult, Progress
from codex_cli_image.testing import FakeCodex, make_png
from codex_cli_image.testing.backend import IMAGE_REFUSALS, image_refusal

from helpers import FIXTURES, check_refusal, default_sigint, png_ok, survivors

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("private_tmp")]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def run(fake: FakeCodex, out: Path, scenario: str = "success", **kwargs: Any) -> ImageResult:
    options = kwargs.pop("options", {})
    fake.configure(scenario, **options)
    kwargs.setdefault("output", out / "image.png")
    kwargs.setdefault("timeout", 30)
    return generate(kwargs.pop("prompt", "a red fox in the snow"), **kwargs)


def fails(fake: FakeCodex, out: Path, scenario: str, **kwargs: Any) -> CodexImageError:
    with pytest.raises(CodexImageError) as info:
        run(fake, out, scenario, **kwargs)
    return info.value


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["exec", "call", "ig"])
def test_success_with_each_file_name_style(
    fake_codex: FakeCodex, out: Path, private_tmp: Path, style: str
) -> None:
    result = run(fake_codex, out, options={"name_style": style, "width": 40, "height": 30})
    assert result.path == out / "image.png" and png_ok(result.path.read_bytes())
    assert (result.width, result.height, result.format) == (40, 30, "png")
    assert result.image_source == "file" and result.attempts == 1
    assert (
        result.codex_version == "0.169.0" and result.thread_id == fake_codex.exec_calls[0].thread_id
    )
    assert result.bytes == result.path.stat().st_size
    assert fake_codex.generated_images() == []  # codex's copy is removed once delivered
    assert list(private_tmp.iterdir()) == []  # the workspace is gone


def test_the_run_is_private_read_only_and_keeps_the_prompt_off_argv(
    fake_codex: FakeCodex, out: Path
) -> None:
    run(fake_codex, out, prompt="a secret-ish prompt about foxes")
    call = fake_codex.exec_calls[0]
    assert "a secret-ish prompt about foxes" not in " ".join(call.argv)
    assert call.argv[-1] == "-" and not call.stdin_left_open
    assert "a secret-ish prompt about foxes" in (call.stdin or "")
    assert SENTINEL in (call.stdin or "")
    for flag in ("--json", "--skip-git-repo-check", "analytics.enabled=false"):
        assert flag in call.argv
    assert call.argv[call.argv.index("--sandbox") + 1] == "read-only"
    workspace = call.argv[call.argv.index("--cd") + 1]
    assert call.cwd == workspace and not Path(workspace).exists()


def test_rollout_only_image(fake_codex: FakeCodex, out: Path) -> None:
    result = run(fake_codex, out, "hosted")
    assert result.image_source == "rollout" and png_ok(result.path.read_bytes())
    assert result.revised_prompt == "a red fox in the snow"


def test_an_empty_image_in_the_session_log_says_so(
    fake_codex: FakeCodex, out: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    error = fails(fake_codex, out, "hosted", options={"image_file": str(empty)}, retries=0)
    assert error.reason == "invalid_image" and "holds no image data" in error.message
    assert "saved a file" not in error.message


def test_early_stop_does_not_wait_for_the_closing_message(fake_codex: FakeCodex, out: Path) -> None:
    started = time.monotonic()
    result = run(fake_codex, out, options={"final_delay": 20})
    # Waiting for the closing message would take 20 s; the bound leaves room for a busy machine.
    assert time.monotonic() - started < 12 and result.usage is None
    assert survivors(fake_codex) == []


def test_wait_for_turn_reports_usage(fake_codex: FakeCodex, out: Path) -> None:
    result = run(fake_codex, out, wait_for_turn=True, options={"final_delay": 0.2})
    assert result.usage and result.usage["output_tokens"] == 122


def test_keep_codex_copy(fake_codex: FakeCodex, out: Path) -> None:
    run(fake_codex, out, keep_codex_copy=True)
    (copy,) = fake_codex.generated_images()
    assert copy.read_bytes() == (out / "image.png").read_bytes()


def test_progress_events(fake_codex: FakeCodex, out: Path) -> None:
    seen: list[Progress] = []
    run(fake_codex, out, "reconnecting", on_progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases[0] == "started" and phases[-1] == "finished"
    assert {"thread_started", "reconnecting", "image_saved"} <= set(phases)
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(seen, seen[1:], strict=False))


def test_a_heartbeat_fills_the_silences(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """codex says nothing while the image is made: on_progress still hears from us."""
    monkeypatch.setattr(pipeline_module, "HEARTBEAT_S", 0.2)
    fake_codex.configure("success", delay=1.5)
    seen: list[Progress] = []
    generate("a fox", output=out / "a.png", on_progress=seen.append)
    working = [p for p in seen if p.phase == "working"]
    assert len(working) >= 3 and working[-1].thread_id  # the thread, once codex named it
    assert [p.phase for p in seen][-1] == "finished"
    gaps = [b.elapsed_s - a.elapsed_s for a, b in zip(seen, seen[1:], strict=False)]
    assert max(gaps) < 1.2  # never the whole 1.5 s of silence


def test_a_broken_progress_callback_does_not_break_the_run(
    fake_codex: FakeCodex, out: Path
) -> None:
    def explode(progress: Progress) -> None:
        raise RuntimeError("callback bug")

    assert run(fake_codex, out, on_progress=explode).path.exists()


def test_directory_output_and_default_name(fake_codex: FakeCodex, out: Path) -> None:
    first = run(fake_codex, out, output=out, prompt="A red fox!")
    second = run(fake_codex, out, output=out, prompt="A red fox!")
    assert first.path.parent == out and first.path.name.startswith("a-red-fox-")
    assert second.path != first.path and second.warnings == ()


def test_hostile_output_streams(fake_codex: FakeCodex, out: Path) -> None:
    """Megabytes of stderr, malformed lines and a huge JSONL line: no stall, bounded memory."""
    for scenario, options in (
        ("stderr_flood", {"stderr_bytes": 6 * 1024 * 1024}),
        ("malformed_lines", {}),
        ("huge_line", {"huge_bytes": 12 * 1024 * 1024}),
    ):
        tracemalloc.start()
        try:
            result = run(fake_codex, out, scenario, output=out, options=options)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert png_ok(result.path.read_bytes())
        assert peak < 8 * 1024 * 1024, f"{scenario}: peak {peak} bytes"


def test_a_verified_png_is_taken_at_the_first_look(tmp_path: Path) -> None:
    """Regression guard: the image was only read once its size had stayed the same for a second
    poll, ~50 ms after it was complete; verification already proves a PNG is complete."""
    folder = tmp_path / "generated_images" / "thread-1"
    folder.mkdir(parents=True)
    png = make_png(40, 30, "complete")

    async def looks() -> None:
        state = runner._State(thread_id="thread-1")
        (folder / "exec-1.png").write_bytes(png[:-20])  # codex is still writing
        runner._look_for_image(state, tmp_path)  # no IEND at the end yet: not even read
        assert state.image is None and state.invalid is None and not state.refused
        runner._look_for_image(state, tmp_path, final=True)  # codex has exited: read it
        assert state.image is None and state.invalid and "truncated" in state.invalid
        assert list(state.refused) == [folder / "exec-1.png"]
        (folder / "exec-1.png").write_bytes(png)
        runner._look_for_image(state, tmp_path)
        assert state.image is not None and state.image[1] == png and state.invalid is None

    anyio.run(looks)


@pytest.mark.parametrize("scenario", ["success", "hosted"])
def test_a_large_image_costs_its_size_once(
    fake_codex: FakeCodex, out: Path, tmp_path: Path, scenario: str
) -> None:
    """Regression guard: the session log's base64 copy of the image was parsed whole, for the
    revised prompt after a file run and as text on the rollout path: about 4x the image."""
    image = tmp_path / "noise.png"
    image.write_bytes(make_png(1024, 1024, "photo-like", noise=True))  # 3 MiB
    size = image.stat().st_size
    tracemalloc.start()
    try:
        # Waiting for the turn: the log then surely holds the image line the run reads.
        result = run(fake_codex, out, scenario, options={"image_file": str(image)},
                     wait_for_turn=True)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.bytes == size and result.revised_prompt == "a red fox in the snow"
    assert result.image_source == ("file" if scenario == "success" else "rollout")
    assert peak < size + 3 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte image"


# --- failures --------------------------------------------------------------------------------

FAILURE_TABLE = [
    ("usage_limit", "quota", "usage_limit", 4),
    ("usage_limit_date", "quota", "usage_limit", 4),
    ("rate_limited", "quota", "rate_limited", 4),
    ("credits_exhausted", "quota", "credits_exhausted", 4),
    ("plan_not_included", "quota", "plan_not_included", 4),
    ("refresh_failed", "auth", "refresh_failed", 3),
    ("unauthorized", "auth", "unauthorized", 3),
    ("model_not_supported", "auth", "model_not_supported", 3),
    ("image_refused", "auth", "image_generation_refused", 3),
    ("capacity", "transient", "capacity", 5),
    ("stream_disconnected", "transient", "stream_error", 5),
    ("no_image", "transient", "no_image", 5),
    ("invalid_png", "transient", "invalid_image", 5),
    ("truncated_png", "transient", "invalid_image", 5),
    ("jpeg", "transient", "invalid_image", 5),
]


@pytest.mark.parametrize(("scenario", "kind", "reason", "code"), FAILURE_TABLE)
def test_failures_are_sorted(
    fake_codex: FakeCodex,
    out: Path,
    private_tmp: Path,
    scenario: str,
    kind: str,
    reason: str,
    code: int,
) -> None:
    error = fails(fake_codex, out, scenario, retries=0)
    assert (error.kind, error.reason) == (kind, reason)
    assert error.thread_id == fake_codex.exec_calls[0].thread_id
    assert error.codex_version == "0.169.0" and error.hint
    assert list(out.iterdir()) == [] and list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(("scenario", "kind", "reason", "code"), FAILURE_TABLE)
def test_cli_json_and_exit_code_for_failures(
    fake_codex: FakeCodex, out: Path, scenario: str, kind: str, reason: str, code: int
) -> None:
    fake_codex.configure(scenario)
    result = cli("generate", "a fox", "-o", str(out / "a.png"), "--retries", "0", "--json")
    assert result.returncode == code
    document = json.loads(result.stdout)
    assert document["ok"] is False
    error = document["error"]
    assert (error["kind"], error["reason"]) == (kind, reason)
    assert set(error) == {
        "kind", "reason", "message", "hint", "retry_after_s", "retry_at", "retryable",
        "exit_code", "codex_exit_code", "thread_id", "codex_version",
    }  # fmt: skip
    assert error["exit_code"] == result.returncode  # ours; codex's is codex_exit_code
    if reason == "usage_limit":
        assert error["retry_at"] and error["retry_after_s"] > 0
        if scenario == "usage_limit_date":  # the fake's reset is 2 days 1 h 45 min ahead
            assert 2 * 86400 + 6300 - 120 <= error["retry_after_s"] <= 2 * 86400 + 6300


@pytest.mark.parametrize(
    ("scenario", "options", "extra", "kind", "reason", "code"),
    [
        ("no_image", {"message": SENTINEL}, [], "auth", "image_tool_unavailable", 3),
        ("turn_failed", {"error_message": "Your request was rejected by the safety system."}, [],
         "input", "content_policy", 2),
        ("turn_failed", {"error_message": "panic in codex_core"}, [],
         "transient", "codex_failed", 5),
        ("hang", {}, ["--timeout", "1"], "transient", "timeout", 5),
    ],
)  # fmt: skip
def test_cli_json_and_exit_code_for_the_other_reasons(
    fake_codex: FakeCodex,
    out: Path,
    scenario: str,
    options: dict[str, Any],
    extra: list[str],
    kind: str,
    reason: str,
    code: int,
) -> None:
    fake_codex.configure(scenario, **options)
    result = cli("generate", "a fox", "-o", str(out / "a.png"), "--retries", "0", "--json", *extra)
    error = json.loads(result.stdout)["error"]
    assert (result.returncode, error["kind"], error["reason"]) == (code, kind, reason)
    assert survivors(fake_codex) == []


def test_empty_file_of_a_failed_hosted_call_is_no_image(fake_codex: FakeCodex, out: Path) -> None:
    """0.125 leaves a 0-byte ig_*.png for a failed call: the failure is reported, not the file."""
    old_cli = {"version": "0.125.0", "name_style": "ig"}
    error = fails(fake_codex, out, "hosted_failed", options=old_cli, retries=0)
    assert error.reason == "no_image" and "image call failed" in error.message


def test_sentinel_means_no_image_tool(fake_codex: FakeCodex, out: Path) -> None:
    error = fails(fake_codex, out, "no_image", options={"message": SENTINEL}, retries=0)
    assert (error.kind, error.reason) == ("auth", "image_tool_unavailable")


def test_codex_that_dies_is_described(fake_codex: FakeCodex, out: Path) -> None:
    error = fails(
        fake_codex, out, "turn_failed", options={"error_message": "segfault in libfoo"}, retries=0
    )
    assert error.reason == "codex_failed" and "exit code 1" in error.message
    assert "segfault in libfoo" in error.message


# --- retries ---------------------------------------------------------------------------------


def test_transient_failures_are_retried(fake_codex: FakeCodex, out: Path) -> None:
    seen: list[Progress] = []
    error = fails(fake_codex, out, "stream_disconnected", retries=2, on_progress=seen.append)
    assert error.reason == "stream_error" and len(fake_codex.exec_calls) == 3
    assert [p.attempt for p in seen if p.phase == "retrying"] == [1, 2]


@pytest.mark.parametrize("scenario", ["usage_limit", "unauthorized", "jpeg"])
def test_no_retry_for_quota_auth_or_a_produced_image(
    fake_codex: FakeCodex, out: Path, scenario: str
) -> None:
    fails(fake_codex, out, scenario, retries=3)
    assert len(fake_codex.exec_calls) == 1


def test_no_retry_after_a_timeout(fake_codex: FakeCodex, out: Path) -> None:
    # 4 s: under load, a 1 s deadline could pass before codex even started (no exec call).
    error = fails(fake_codex, out, "hang", retries=3, timeout=4)
    assert error.reason == "timeout" and len(fake_codex.exec_calls) == 1


# --- timeout, cancel, interrupt --------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["hang", "hang_ignore_sigterm", "grandchild"])
def test_timeout_ends_the_whole_tree(
    fake_codex: FakeCodex, out: Path, private_tmp: Path, scenario: str
) -> None:
    started = time.monotonic()
    error = fails(fake_codex, out, scenario, timeout=1.0)
    assert error.kind == "transient" and error.reason == "timeout"
    # The deadline (1 s), the SIGTERM grace (2 s), the kill; a codex left to hang runs 120 s.
    assert time.monotonic() - started < 12
    assert survivors(fake_codex) == []
    assert list(private_tmp.iterdir()) == [] and list(out.iterdir()) == []


def test_image_saved_before_a_hang_is_delivered(fake_codex: FakeCodex, out: Path) -> None:
    result = run(fake_codex, out, "hang_after_image", timeout=10)
    assert png_ok(result.path.read_bytes()) and survivors(fake_codex) == []


def test_cancelling_agenerate_ends_the_tree(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure("grandchild")

    async def main() -> None:
        with anyio.move_on_after(1.0) as scope:
            await agenerate("a fox", output=out / "a.png", timeout=30)
        assert scope.cancelled_caught

    anyio.run(main)
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codex_cli_image", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=dict(os.environ),
        timeout=60,
    )


@pytest.mark.parametrize("refusal", IMAGE_REFUSALS)
@pytest.mark.parametrize("style", ["exec", "call"], ids=["code-mode", "direct"])
def test_images_endpoint_refusals_on_both_tool_paths(
    fake_codex: FakeCodex, out: Path, private_tmp: Path, refusal: str, style: str
) -> None:
    """The fake refuses as the real CLI does (exit 0, the reason only in the tool's output and on
    stderr): each refusal is sorted, quotes the backend, and only a server error is retried."""
    status, body = image_refusal(refusal)
    fake_codex.configure("image_refused", name_style=style, images_status=status,
                         images_body=body)  # fmt: skip
    result = cli("generate", "a fox", "-o", str(out / "a.png"), "--json")
    check_refusal(refusal, json.loads(result.stdout)["error"], result.returncode)
    assert len(fake_codex.exec_calls) == (2 if refusal == "server_error" else 1)
    assert list(out.iterdir()) == [] and list(private_tmp.iterdir()) == []


def start_cli_with_helper(fake: FakeCodex, out: Path) -> subprocess.Popen[str]:
    """`codex-image generate` with codex running and its helper started (ready for a signal)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_cli_image", "generate", "a fox", "-o", str(out / "a.png")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 20
    while not (fake.exec_calls and fake.exec_calls[-1].helper_pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_cli_cleans_up_and_exits_130(
    fake_codex: FakeCodex, out: Path, private_tmp: Path, sig: signal.Signals
) -> None:
    fake_codex.configure("grandchild")
    proc = start_cli_with_helper(fake_codex, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []
    assert list(out.iterdir()) == []


def test_sync_api_inside_a_running_event_loop(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success")

    async def main() -> ImageResult:
        # Blocking on purpose: the sync API must work in a thread whose loop is running.
        return generate("a fox", output=out / "a.png", timeout=30)

    assert anyio.run(main).path.exists()


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test, whatever the suite inherited (a background job
    starts with SIGINT ignored, and then rightly no signal is taken over)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c")
def test_the_loop_runs_in_the_calling_main_thread_and_elsewhere_in_a_worker(
    fake_codex: FakeCodex, out: Path
) -> None:
    """The command line's path (main thread, no loop running) needs no worker thread and no
    portal; any other thread still gets one, so the call never touches its signals."""
    fake_codex.configure("success")
    threads: dict[str, set[str]] = {"main": set(), "worker": set()}

    def call(who: str) -> None:
        def seen(progress: Progress) -> None:
            threads[who].add(threading.current_thread().name)

        generate("a fox", output=out, timeout=30, on_progress=seen)

    call("main")
    worker = threading.Thread(target=call, args=("worker",), name="caller")
    worker.start()
    worker.join(60)
    assert threads["main"] == {threading.main_thread().name}
    assert threads["worker"] and "caller" not in threads["worker"]


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_in_the_main_thread_ends_the_tree_before_keyboard_interrupt(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure("grandchild")
    timer = threading.Timer(0, lambda: None)

    def press(progress: Progress) -> None:
        nonlocal timer
        if progress.phase == "thread_started":
            timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()

    try:
        with pytest.raises(KeyboardInterrupt):
            generate("a fox", output=out, timeout=30, on_progress=press)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        timer.join(5)
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []
    assert list(out.iterdir()) == []


@pytest.mark.usefixtures("ctrl_c")
def test_the_hosts_handlers_and_wakeup_fd_are_put_back(fake_codex: FakeCodex, out: Path) -> None:
    """The loop replaces them while it runs (asyncio leaves SIGTERM at the system default and
    no wakeup fd): a host's SIGTERM handler and its toolkit's wakeup fd must survive a call."""
    fake_codex.configure("success")
    mine, theirs = socket.socketpair()
    mine.setblocking(False)
    previous = signal.signal(signal.SIGTERM, interrupt)
    old_fd = signal.set_wakeup_fd(mine.fileno())
    try:
        generate("a fox", output=out, timeout=30)
        assert signal.getsignal(signal.SIGTERM) is interrupt
        assert signal.set_wakeup_fd(old_fd) == mine.fileno()
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, previous)
        mine.close()
        theirs.close()


def test_the_cli_imports_no_blocking_portal(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success")
    script = (
        "import sys\nfrom codex_cli_image.cli import main\n"
        f"code = main(['generate', 'a fox', '-o', {str(out)!r}, '-q'])\n"
        "print(code, 'anyio.from_thread' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.stdout.splitlines()[-1] == "0 False", done.stderr


# --- input, preflight, delivery --------------------------------------------------------------


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("", "empty_prompt"),
        ("   \n", "empty_prompt"),
        ("a\x00b", "invalid_prompt"),
        ("x" * 32_001, "prompt_too_long"),
    ],
)
def test_bad_prompts_fail_before_codex_runs(
    fake_codex: FakeCodex, out: Path, prompt: str, reason: str
) -> None:
    error = fails(fake_codex, out, "success", prompt=prompt)
    assert (error.kind, error.reason) == ("input", reason)
    assert fake_codex.calls == []


@pytest.mark.bad_input
def test_existing_output_is_refused_before_codex_runs(fake_codex: FakeCodex, out: Path) -> None:
    (out / "image.png").write_bytes(b"precious")
    error = fails(fake_codex, out, "success")
    assert error.reason == "output_exists" and fake_codex.calls == []
    assert (out / "image.png").read_bytes() == b"precious"


@pytest.mark.bad_input
def test_api_key_login_fails_fast(fake_codex: FakeCodex, out: Path) -> None:
    """No `exec` for a login that cannot make images: refused before any quota is spent."""
    shutil.copy(FIXTURES / "auth" / "apikey.json", fake_codex.codex_home / "auth.json")
    error = fails(fake_codex, out, "success")
    assert (error.kind, error.reason) == ("auth", "api_key_login")
    assert fake_codex.exec_calls == []


def test_destination_taken_while_codex_works_is_never_overwritten(
    fake_codex: FakeCodex, out: Path
) -> None:
    target = out / "image.png"

    def squat(progress: Progress) -> None:
        if progress.phase == "image_saved":
            target.write_bytes(b"someone else's")

    result = run(fake_codex, out, on_progress=squat)
    assert target.read_bytes() == b"someone else's"
    assert result.path == out / "image-1.png" and png_ok(result.path.read_bytes())
    assert result.warnings and "image-1.png" in result.warnings[0]


def test_failed_delivery_keeps_codex_copy(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(data: bytes, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline_module, "write_atomically", full)
    error = fails(fake_codex, out, "success")
    assert (error.kind, error.reason) == ("input", "output_write_failed")
    (copy,) = fake_codex.generated_images()
    assert str(copy) in error.message and png_ok(copy.read_bytes())


def test_parallel_generations_get_their_own_images(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success", delay=0.3)
    prompts = [f"picture number {n}" for n in range(4)]
    results: dict[str, ImageResult] = {}

    async def one(prompt: str) -> None:
        results[prompt] = await agenerate(prompt, output=out / f"{prompt[-1]}.png", timeout=30)

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for prompt in prompts:
                tasks.start_soon(one, prompt)

    anyio.run(main)
    assert len({r.thread_id for r in results.values()}) == 4
    by_thread = {call.thread_id: call for call in fake_codex.exec_calls}
    for prompt, result in results.items():
        data = result.path.read_bytes()
        assert f"thread_id\x00{result.thread_id}".encode() in data  # provenance written by codex
        assert prompt in (by_thread[result.thread_id].stdin or "")


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_success_human_and_json(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success")
    human = cli("generate", "a fox", "-o", str(out / "a.png"))
    assert human.returncode == 0 and human.stdout == f"{out / 'a.png'}\n"
    assert "\r" not in human.stderr  # no status line when stderr is not a terminal
    machine = cli("generate", "-", "-o", str(out), "--json", stdin="a cat on a mat")
    document = json.loads(machine.stdout)
    assert machine.returncode == 0 and machine.stdout.count("\n") == 1
    assert document["ok"] is True and Path(document["path"]).name.startswith("a-cat-on-a-mat")
    assert set(document) >= {
        "path", "bytes", "sha256", "width", "height", "format", "thread_id", "codex_version",
        "elapsed_s", "usage", "revised_prompt", "attempts", "warnings",
    }  # fmt: skip


def test_every_image_reports_the_usage_windows_codex_recorded(
    fake_codex: FakeCodex, out: Path
) -> None:
    """#32: the windows of the run's session log, in the JSON and as one line for people."""
    fake_codex.configure("success")
    human = cli("generate", "a fox", "-o", str(out / "a.png"))
    assert human.returncode == 0 and human.stdout == f"{out / 'a.png'}\n"
    (line,) = [line for line in human.stderr.splitlines() if line.startswith("usage: ")]
    assert re.fullmatch(
        r"usage: 5 h window 34\.5 % used \(resets \d\d:\d\d\) · "
        r"weekly 12 % used \(resets \w{3} \d\d:\d\d\)",
        line,
    ), line
    document = json.loads(cli("generate", "a fox", "-o", str(out), "--json").stdout)
    limits = document["usage_limits"]
    assert limits["plan"] == "plus" and limits["secondary"]["window_minutes"] == 10080
    assert limits["primary"]["used_percent"] == 34.5 and limits["primary"]["window_minutes"] == 300
    resets = dt.datetime.fromisoformat(limits["primary"]["resets_at"].replace("Z", "+00:00"))
    assert 3600 < resets.timestamp() - time.time() < 3 * 3600
    fake_codex.configure("success", usage_windows=None)  # the backend sent no headers
    document = json.loads(cli("generate", "a fox", "-o", str(out), "--json").stdout)
    assert document["usage_limits"] is None
    human = cli("generate", "a fox", "-o", str(out / "b.png"))
    assert human.returncode == 0 and "usage:" not in human.stderr


def test_cli_events_stream(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success")
    result = cli("generate", "a fox", "-o", str(out / "a.png"), "--events")
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events][0] == "started" and events[-1]["event"] == "finished"
    assert [e["event"] for e in events].count("finished") == 1
    assert events[-1]["message"] == str(out / "a.png") and events[-1]["warnings"] == []


@pytest.mark.parametrize("scenario", ["usage_limit", "no_login"])
def test_cli_events_end_with_a_failed_event_and_stay_json(
    fake_codex: FakeCodex, out: Path, scenario: str
) -> None:
    """A daemon reading --events gets one terminal event, and nothing but JSON lines."""
    if scenario == "no_login":
        (fake_codex.codex_home / "auth.json").unlink()
    else:
        fake_codex.configure(scenario)
    result = cli("generate", "a fox", "-o", str(out / "a.png"), "--events", "--retries", "0")
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert events[-1]["event"] == "failed"
    error = events[-1]["error"]
    assert error["exit_code"] == result.returncode == {"usage_limit": 4, "no_login": 3}[scenario]
    assert error["hint"] and result.stdout == ""


def test_the_status_line_ticks_while_waiting(fake_codex: FakeCodex, out: Path) -> None:
    """On a terminal the elapsed time is redrawn about every second, not only at each phase."""
    import pty

    fake_codex.configure("success", delay=5)
    leader, follower = pty.openpty()
    try:
        argv = [
            sys.executable,
            "-m",
            "codex_cli_image",
            "generate",
            "a fox",
            "-o",
            str(out / "a.png"),
        ]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=follower, env=dict(os.environ)
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(60) == 0
        assert process.stdout is not None
        process.stdout.close()
    finally:
        os.close(leader)
    shown = {part.strip() for part in seen.decode().split("\r") if "waiting for the image" in part}
    assert len(shown) >= 3, seen  # e.g. (1 s), (2 s), (3 s)


@pytest.mark.bad_input
def test_cli_input_errors(fake_codex: FakeCodex, out: Path) -> None:
    result = cli("generate", "  ", "-o", str(out / "a.png"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: The prompt is empty.\nhint: ")


def test_no_secret_in_any_output(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: no token or key from the fixtures in any generate output."""
    monkeypatch.setenv("CODEX_API_KEY", "sk-FIXTURE_SECRET-env")
    outputs = []
    for name in ("chatgpt-plus.json", "apikey.json", "chatgpt-with-key.json", "bad-jwt.json"):
        shutil.copy(FIXTURES / "auth" / name, fake_codex.codex_home / "auth.json")
        for scenario in ("success", "unauthorized"):
            fake_codex.configure(scenario)
            for extra in ([], ["--json"], ["--events"]):
                result = cli("generate", "a fox", "-o", str(out), "--retries", "0", *extra)
                outputs.append(result.stdout + result.stderr)
    assert [o for o in outputs if "FIXTURE_SECRET" in o] == []


# --- regression guards from the second review ------------------------------------------------


def test_repeated_interrupts_still_end_the_tree(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    """Regression guard: a second Ctrl-C cut the clean-up short and leaked codex."""
    fake_codex.configure("hang_ignore_sigterm", helper=True)
    proc = start_cli_with_helper(fake_codex, out)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []


def test_sighup_cleans_up(fake_codex: FakeCodex, out: Path, private_tmp: Path) -> None:
    """Regression guard: closing the terminal (SIGHUP) left codex running."""
    fake_codex.configure("grandchild")
    proc = start_cli_with_helper(fake_codex, out)
    proc.send_signal(signal.SIGHUP)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []


def test_deadline_holds_while_codex_does_not_read_a_large_prompt(
    fake_codex: FakeCodex, out: Path
) -> None:
    """Regression guard: sending the prompt happened before the deadline started."""
    started = time.monotonic()
    error = fails(fake_codex, out, "success", prompt="\U0001f98a" * 32_000, timeout=2,
                  options={"stdin_delay": 30})  # fmt: skip
    assert error.reason == "timeout" and time.monotonic() - started < 12  # codex waits 30 s
    assert survivors(fake_codex) == []


def test_deadline_bounds_the_preflight(fake_codex: FakeCodex, out: Path) -> None:
    """Regression guard: a slow --version ran past the call's deadline, then codex still ran."""
    started = time.monotonic()
    with pytest.raises(CodexImageError):
        run(fake_codex, out, options={"version_delay": 20}, timeout=1)
    assert time.monotonic() - started < 10 and fake_codex.exec_calls == []  # not 20 s


@pytest.mark.bad_input
def test_bad_model_names(fake_codex: FakeCodex, out: Path) -> None:
    assert fails(fake_codex, out, "success", model="gpt\x00x").reason == "invalid_model"
    result = run(fake_codex, out, model="-looks-like-a-flag")
    assert "--model=-looks-like-a-flag" in fake_codex.exec_calls[0].argv and result.path.exists()


def test_cloudflare_block_is_not_retried(fake_codex: FakeCodex, out: Path) -> None:
    blocked = {"error_message": "unexpected status 403: Access blocked by Cloudflare"}
    error = fails(fake_codex, out, "turn_failed", retries=3, options=blocked)
    assert error.reason == "network_blocked" and len(fake_codex.exec_calls) == 1


def test_codex_resending_the_image_request_is_reported(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#31: codex resends the images request after a 5xx or a dropped connection, and nothing
    but its HTTP log says so: counted there (the user's RUST_LOG kept), reported in
    `warnings`, and the log's lines (the backend's headers) kept out of everything else."""
    fake_codex.configure("success", version="0.171.0", image_requests=3)
    monkeypatch.setenv("RUST_LOG", "warn")
    result = generate("a fox", output=out / "a.png")
    assert any("codex sent the image request 3 times" in w for w in result.warnings)
    assert fake_codex.exec_calls[0].env["RUST_LOG"] == "warn,codex_http_client::client=debug"
    fake_codex.configure("success", version="0.171.0")
    again = generate("a hen", output=out / "b.png")
    assert not any("image request" in w for w in again.warnings)
    state = runner._State()
    line = (b'2026-12-07T12:09:53Z DEBUG codex_http_client::client: Request completed method=POST '
            b'url=https://x/backend-api/codex/images/edits status=200 OK headers={"set-cookie": '
            b'"__cf_bm=c"} version=HTTP/2.0\n')  # fmt: skip
    # Fed as codex writes it: lines split anywhere between reads.
    coloured = b"\x1b[34mDEBUG\x1b[0m " + line.split(b" DEBUG ", 1)[1]
    stream = b"ERROR codex_core: one\n" + line + coloured + b"last words"
    chunks = [stream[i : i + 37] for i in range(0, len(stream), 37)]

    class Stderr:
        def __aiter__(self) -> Any:
            async def gen() -> Any:
                for chunk in chunks:
                    yield chunk

            return gen()

    class Process:
        stderr = Stderr()

    anyio.run(runner._drain_stderr, Process(), state)
    assert state.image_requests == 2
    assert bytes(state.stderr) == b"ERROR codex_core: one\nlast words"

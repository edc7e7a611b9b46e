"""The fake codex behaves like the real one for everything codex-cli-image relies on."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from codex_cli_image import _proc, locate
from codex_cli_image.testing import (
    SCENARIOS,
    FakeCodex,
    Invocation,
    chatgpt_auth,
    make_png,
)
from codex_cli_image.testing.fake_codex import FAILURES, failure_text

from helpers import png_ok

EXEC_ARGS = ["exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only",
             "-c", "analytics.enabled=false"]  # fmt: skip
EXERCISED: set[str] = set()
RAN: set[str] = set()


@pytest.fixture(autouse=True)
def _note_ran(request: pytest.FixtureRequest) -> None:
    RAN.add(request.function.__name__)


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    call: Invocation

    @property
    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.stdout.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
        return events

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def run_fake(
    fake: FakeCodex,
    scenario: str = "success",
    prompt: str = "a red fox in the snow",
    args: list[str] | None = None,
    timeout: float = 30,
    **options: Any,
) -> Run:
    fake.configure(scenario, **options)
    EXERCISED.add(scenario)
    workspace = fake.dir / "ws"
    workspace.mkdir(exist_ok=True)
    argv = [
        str(fake.path),
        *(args if args is not None else [*EXEC_ARGS, "-C", str(workspace), "-"]),
    ]
    proc = subprocess.run(
        argv, input=prompt.encode(), capture_output=True, env=fake.env(), timeout=timeout
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, fake.calls[-1])


def rollout_records(fake: FakeCodex) -> list[dict[str, Any]]:
    lines = []
    for path in sorted((fake.codex_home / "sessions").rglob("rollout-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


@pytest.fixture
def fake(tmp_path: Path) -> FakeCodex:
    return FakeCodex(tmp_path / "fake", codex_home=tmp_path / "codex-home")


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "pattern"), [("exec", "exec-"), ("call", "call_"), ("ig", "ig_")]
)
def test_success_writes_png_and_rollout(fake: FakeCodex, style: str, pattern: str) -> None:
    run = run_fake(fake, name_style=style)
    assert run.returncode == 0
    assert run.types == ["thread.started", "turn.started", "item.completed", "turn.completed"]
    thread_id = run.events[0]["thread_id"]
    images = fake.generated_images()
    assert [p.parent.name for p in images] == [thread_id]
    assert images[0].name.startswith(pattern)
    assert png_ok(images[0].read_bytes())
    assert run.call.stdin == "a red fox in the snow"
    assert run.call.thread_id == thread_id and run.call.image_path == str(images[0])
    records = rollout_records(fake)
    assert records[0]["type"] == "session_meta" and records[0]["payload"]["id"] == thread_id
    if style == "ig":
        ends = [r for r in records if r["payload"].get("type") == "image_generation_end"]
        assert ends[0]["payload"]["saved_path"] == str(images[0])
    else:
        item = next(
            r["payload"]["item"] for r in records if r["payload"].get("type") == "item_completed"
        )
        assert item["kind"] == "image_gen.generation" and item["status"] == "completed"
        assert item["savedPath"] == str(images[0])
        assert base64.b64decode(item["result"]) == images[0].read_bytes()


def test_usage_matches_the_version(fake: FakeCodex) -> None:
    new = run_fake(fake).events[-1]["usage"]
    assert "cache_write_input_tokens" in new and "reasoning_output_tokens" in new
    old = run_fake(fake, version="0.142.0").events[-1]["usage"]  # as recorded from 0.142
    assert set(old) == {
        "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
    }  # fmt: skip


def test_each_prompt_gets_its_own_pixels_and_provenance(fake: FakeCodex) -> None:
    run_fake(fake, prompt="one")
    run_fake(fake, prompt="two")
    first, second = (p.read_bytes() for p in fake.generated_images())
    assert first != second
    assert make_png(4, 4, "one") != make_png(4, 4, "two")


def test_ephemeral_writes_the_image_but_no_rollout(fake: FakeCodex) -> None:
    ws = str(fake.dir)
    run = run_fake(fake, args=[*EXEC_ARGS, "--ephemeral", "-C", ws, "-"])
    assert run.returncode == 0 and len(fake.generated_images()) == 1
    assert rollout_records(fake) == []


def test_reconnecting_notices_then_success(fake: FakeCodex) -> None:
    run = run_fake(fake, "reconnecting")
    assert run.returncode == 0
    notices = [e["message"] for e in run.events if e["type"] == "error"]
    assert len(notices) == 2 and all(n.startswith("Reconnecting... ") for n in notices)


def test_delays(fake: FakeCodex) -> None:
    started = time.monotonic()
    run = run_fake(fake, delay=0.3, final_delay=0.3)
    assert run.returncode == 0 and time.monotonic() - started >= 0.6


# --- no image --------------------------------------------------------------------------------


def test_no_image_exits_zero_without_file(fake: FakeCodex) -> None:
    run = run_fake(fake, "no_image", message="IMAGE_TOOL_UNAVAILABLE")
    assert run.returncode == 0 and fake.generated_images() == []
    assert run.events[-2]["item"]["text"] == "IMAGE_TOOL_UNAVAILABLE"


@pytest.mark.parametrize("style", ["exec", "call"], ids=["code-mode", "direct"])
def test_image_refused_records_failure_in_rollout(fake: FakeCodex, style: str) -> None:
    """As 0.149-0.171 record a refusal of the images endpoint (fixtures/codex-*/refused*.json)."""
    run = run_fake(fake, "image_refused", name_style=style, images_status=429,
                   images_body={"error": {"message": 'Say "when" in 12s.'}})  # fmt: skip
    assert run.returncode == 0 and fake.generated_images() == []
    assert run.events[-1]["type"] == "turn.completed"
    records = rollout_records(fake)
    item = next(
        r["payload"]["item"] for r in records if r["payload"].get("type") == "item_completed"
    )
    assert item["status"] == "failed" and "savedPath" not in item and item["failure"] is None
    line = (
        'image generation failed: http 429 Too Many Requests: Some("{\\"error\\": '
        '{\\"message\\": \\"Say \\\\\\"when\\\\\\" in 12s.\\"}}")'
    )
    kind = "custom_tool_call_output" if style == "exec" else "function_call_output"
    (output,) = [r["payload"] for r in records if r["payload"].get("type") == kind]
    if style == "exec":  # the exec call's output, under the exec call's id
        (call,) = [r["payload"] for r in records if r["payload"].get("type") == "custom_tool_call"]
        assert output["call_id"] == call["call_id"] != item["id"]
        assert output["output"][1] == {"type": "input_text", "text": "Script error:\n" + line}
    else:
        assert output["call_id"] == item["id"] and output["output"] == line
    assert f"ERROR codex_core::tools::router: error={line}\n" in run.stderr.decode()


def test_hosted_image_only_in_rollout(fake: FakeCodex) -> None:
    run = run_fake(fake, "hosted")
    assert run.returncode == 0 and fake.generated_images() == []
    call = next(r["payload"] for r in rollout_records(fake) if r["type"] == "response_item")
    assert call["type"] == "image_generation_call" and call["status"] == "completed"
    assert png_ok(base64.b64decode(call["result"]))


@pytest.mark.parametrize(("version", "empty_file"), [("0.125.0", True), ("0.142.0", False)])
def test_hosted_failed(fake: FakeCodex, version: str, empty_file: bool) -> None:
    run = run_fake(fake, "hosted_failed", version=version, name_style="ig")
    assert run.returncode == 0
    files = fake.generated_images()
    assert [p.stat().st_size for p in files] == ([0] if empty_file else [])
    end = next(r["payload"] for r in rollout_records(fake) if r["type"] == "event_msg"
               and r["payload"]["type"] == "image_generation_end")  # fmt: skip
    assert end["status"] == "failed" and end["result"] == ""
    assert ("saved_path" in end) is empty_file


@pytest.mark.parametrize("scenario", ["invalid_png", "truncated_png", "jpeg"])
def test_broken_images(fake: FakeCodex, scenario: str) -> None:
    run = run_fake(fake, scenario)
    assert run.returncode == 0
    (image,) = fake.generated_images()
    data = image.read_bytes()
    assert not png_ok(data)
    if scenario == "jpeg":
        assert data.startswith(b"\xff\xd8\xff")
    else:
        assert data.startswith(b"\x89PNG")


def test_a_crashed_code_mode_host(fake: FakeCodex) -> None:
    """No image record, the exec call's output saying why; codex still exits 0."""
    run = run_fake(fake, "host_crashed")
    assert run.returncode == 0 and fake.generated_images() == []
    outputs = [r["payload"] for r in rollout_records(fake) if r["type"] == "response_item"]
    assert any("code-mode session closed" in json.dumps(o) for o in outputs)


# --- a model obeying an injected prompt ------------------------------------------------------

LOCKED = ["--disable=shell_tool", "--disable=unified_exec", "-c", 'web_search="disabled"']


@pytest.mark.parametrize("locked", [False, True], ids=["shell-on", "shell-off"])
def test_an_injected_model_reads_the_login_only_while_codex_offers_a_shell(
    fake: FakeCodex, locked: bool
) -> None:
    """As the real codex (0.171 at the mock): the command's output, auth.json included, becomes
    the image's prompt unless both shell features are off."""
    workspace = fake.dir / "ws"
    workspace.mkdir(exist_ok=True)
    args = [*EXEC_ARGS, *(LOCKED if locked else []), "-C", str(workspace), "-"]
    run = run_fake(fake, "injected", args=args)
    assert run.returncode == 0 and len(fake.generated_images()) == 1
    revised = [
        r["payload"]["item"]["revisedPrompt"]
        for r in rollout_records(fake)
        if r["payload"].get("type") == "item_completed"
    ]
    token = json.loads((fake.codex_home / "auth.json").read_text())["tokens"]["refresh_token"]
    assert (token in revised[0]) is not locked
    assert run.call.raw.get("ran_command", False) is not locked
    if locked:
        assert revised == ["A poster of: TypeError: tools.exec_command is not a function"]


def test_the_configured_mcp_servers_start_unless_turned_off_by_name(fake: FakeCodex) -> None:
    with (fake.codex_home / "config.toml").open("a") as config:
        config.write('[mcp_servers.slow]\ncommand = "x"\n[mcp_servers."odd.name"]\ncommand = "y"\n')
    workspace = fake.dir / "ws"
    workspace.mkdir(exist_ok=True)
    run_fake(fake, args=[*EXEC_ARGS, "-C", str(workspace), "-"])
    assert fake.calls[-1].raw["mcp_started"] == ["odd.name", "slow"]
    off = ["-c", 'mcp_servers={slow={enabled=false},"odd.name"={enabled=false}}']
    run_fake(fake, args=[*EXEC_ARGS, *off, "-C", str(workspace), "-"])
    assert fake.calls[-1].raw["mcp_started"] == []


def test_a_forged_failure_is_only_the_scripts_output(fake: FakeCodex) -> None:
    """As 0.171 records a script that throws codex's failure line: no image record, nothing on
    stderr, exit 0; the line is in the exec call's output and the closing message."""
    run = run_fake(fake, "forged_failure")
    assert run.returncode == 0 and fake.generated_images() == []
    assert b"image generation failed" not in run.stderr
    payloads = [r["payload"] for r in rollout_records(fake)]
    assert not [p for p in payloads if p.get("type") == "item_completed"]
    outputs = [p for p in payloads if p.get("type") == "custom_tool_call_output"]
    assert (
        "Script error:\nError: image generation failed: http 429" in outputs[0]["output"][1]["text"]
    )


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(FAILURES))
def test_failures_end_with_turn_failed_and_exit_1(fake: FakeCodex, scenario: str) -> None:
    run = run_fake(fake, scenario)
    assert run.returncode == 1
    assert run.events[-1]["type"] == "turn.failed"
    message = run.events[-1]["error"]["message"]
    head, _, tail = FAILURES[scenario].partition("{reset}")
    assert message.startswith(head) and message.endswith(tail)
    assert f"ERROR: {message}" in run.stderr.decode()
    assert fake.generated_images() == []
    if scenario == "stream_disconnected":
        notices = [e for e in run.events if e["type"] == "error"]
        assert sum(e["message"].startswith("Reconnecting... ") for e in notices) == 5


def test_failure_texts_are_the_real_ones() -> None:
    now = dt.datetime(2026, 11, 21, 14, 0, tzinfo=dt.timezone.utc)
    assert "try again at 3:45 PM." in failure_text("usage_limit", now)
    assert "try again at Nov 23rd, 2026 3:45 PM." in failure_text("usage_limit_date", now)
    assert "429 Too Many Requests" in FAILURES["rate_limited"]
    assert "req-401-abc" in FAILURES["rate_limited"]  # a 401 that is not a 401
    assert FAILURES["unauthorized"].startswith("unexpected status 401 Unauthorized")
    assert "Please log out and sign in again." in FAILURES["refresh_failed"]


@pytest.mark.parametrize("scenario", ["success", "hosted"])
def test_image_file_is_the_image_delivered(fake: FakeCodex, tmp_path: Path, scenario: str) -> None:
    image = tmp_path / "big.png"
    image.write_bytes(make_png(300, 200, "a large one"))
    run = run_fake(fake, scenario, image_file=str(image))
    assert run.returncode == 0
    payloads = [r["payload"] for r in rollout_records(fake)]
    results = [p.get("result") or p.get("item", {}).get("result") for p in payloads]
    assert base64.b64encode(image.read_bytes()).decode() in results
    if scenario == "success":
        assert fake.generated_images()[0].read_bytes() == image.read_bytes()


def test_turn_failed_with_custom_message(fake: FakeCodex) -> None:
    run = run_fake(fake, "turn_failed", error_message="Connection failed: reset by peer")
    assert run.returncode == 1
    assert run.events[-1]["error"]["message"] == "Connection failed: reset by peer"


# --- hostile behaviour -----------------------------------------------------------------------


def start_fake(fake: FakeCodex, scenario: str, **options: Any) -> subprocess.Popen[bytes]:
    fake.configure(scenario, **options)
    EXERCISED.add(scenario)
    proc = subprocess.Popen(
        [str(fake.path), *EXEC_ARGS, "-C", str(fake.dir), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=fake.env(),
        **_proc.new_group_kwargs(),
    )
    assert proc.stdin is not None
    proc.stdin.write(b"draw")
    proc.stdin.close()
    return proc


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def hanging(fake: FakeCodex) -> bool:
    calls = fake.exec_calls
    return bool(calls) and bool(calls[-1].raw.get("hanging"))


def test_hang_until_terminated(fake: FakeCodex) -> None:
    proc = start_fake(fake, "hang")
    wait_for(lambda: hanging(fake))
    assert proc.poll() is None
    proc.terminate()
    assert proc.wait(5) == -signal.SIGTERM
    assert proc.stdout is not None and b"turn.started" in proc.stdout.read()
    proc.stdout.close()


@pytest.mark.parametrize(
    ("scenario", "options"),
    [("hang_ignore_sigterm", {}), ("hang_after_image", {"ignore_sigterm": True})],
    ids=["hang_ignore_sigterm", "ignore_sigterm_in_any_scenario"],
)
def test_hang_ignoring_sigterm_needs_sigkill(
    fake: FakeCodex, scenario: str, options: dict[str, Any]
) -> None:
    proc = start_fake(fake, scenario, **options)
    wait_for(lambda: hanging(fake))
    proc.terminate()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)
    _proc.kill_tree(proc.pid, grace_s=0.2)
    assert proc.wait(5) == -signal.SIGKILL
    assert proc.stdout is not None
    proc.stdout.close()


def test_hang_after_image(fake: FakeCodex) -> None:
    proc = start_fake(fake, "hang_after_image")
    wait_for(lambda: hanging(fake))
    assert len(fake.generated_images()) == 1
    _proc.kill_tree(proc.pid, grace_s=1)
    proc.wait(5)
    assert proc.stdout is not None
    proc.stdout.close()


def test_hang_max_bounds_a_forgotten_fake(fake: FakeCodex) -> None:
    run = run_fake(fake, "hang", hang_max=0.3)
    assert run.returncode == 1 and b"hang_max reached" in run.stderr


def test_grandchild_is_started_and_dies_with_the_tree(fake: FakeCodex) -> None:
    proc = start_fake(fake, "grandchild")
    wait_for(lambda: hanging(fake))
    helper_pid = fake.exec_calls[-1].helper_pid
    assert helper_pid is not None and psutil.pid_exists(helper_pid)
    assert psutil.Process(helper_pid).ppid() == proc.pid
    _proc.kill_tree(proc.pid, grace_s=1)
    proc.wait(5)
    wait_for(
        lambda: not psutil.pid_exists(helper_pid) or psutil.Process(helper_pid).status() == "zombie"
    )
    assert proc.stdout is not None
    proc.stdout.close()


def test_kill_tree_reaches_helpers_orphaned_before_the_kill(fake: FakeCodex) -> None:
    """Regression guard: a helper whose parent already died is still in the process group."""
    proc = start_fake(fake, "grandchild")
    wait_for(lambda: hanging(fake))
    helper_pid = fake.exec_calls[-1].helper_pid
    assert helper_pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert psutil.pid_exists(helper_pid)
    _proc.kill_tree(proc.pid, grace_s=1)
    wait_for(
        lambda: not psutil.pid_exists(helper_pid) or psutil.Process(helper_pid).status() == "zombie"
    )
    assert proc.stdout is not None
    proc.stdout.close()


def test_kill_group_ends_helpers_of_an_exited_leader_without_a_clock(fake: FakeCodex) -> None:
    """Helpers codex left after exiting are found by group, whatever the wall clock says (it
    used to compare creation times with it: a clock stepped back hid the helpers)."""
    proc = start_fake(fake, "grandchild")
    wait_for(lambda: hanging(fake))
    helper_pid = fake.exec_calls[-1].helper_pid
    assert helper_pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)  # reaped: only the helper holds the group id now
    _proc.kill_group(proc.pid)
    wait_for(
        lambda: not psutil.pid_exists(helper_pid) or psutil.Process(helper_pid).status() == "zombie"
    )
    assert proc.stdout is not None
    proc.stdout.close()


def test_kill_group_leaves_a_group_whose_id_has_a_live_leader() -> None:
    """A live process with the group's id means the id is not (or no longer) an exited
    leader's: its group is left alone."""
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        _proc.kill_group(other.pid)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(5)


def test_image_written_slowly_in_pieces(fake: FakeCodex) -> None:
    proc = start_fake(fake, "success", write_pieces=4, piece_delay=0.3)
    sizes: list[int] = []
    while proc.poll() is None:
        sizes += [p.stat().st_size for p in fake.generated_images()]
        time.sleep(0.05)
    assert proc.stdout is not None
    proc.stdout.close()
    (image,) = fake.generated_images()
    data = image.read_bytes()
    assert png_ok(data)
    assert len({size for size in sizes if 0 < size < len(data)}) == 3  # seen part-written
    assert hashlib.sha256(data).hexdigest() == fake.exec_calls[-1].raw["image_sha256"]


@pytest.mark.parametrize(
    ("moment", "events", "image"),
    [("turn", 2, None), ("image", 2, "partial"), ("saved", 2, "complete")],
)
def test_sigkill_itself(fake: FakeCodex, moment: str, events: int, image: str | None) -> None:
    run = run_fake(fake, sigkill_at=moment, write_pieces=3)
    assert run.returncode == -signal.SIGKILL and len(run.types) == events
    images = fake.generated_images()
    if image is None:
        assert images == []
    else:
        (path,) = images
        assert png_ok(path.read_bytes()) == (image == "complete")


def test_stderr_flood(fake: FakeCodex) -> None:
    run = run_fake(fake, "stderr_flood", stderr_bytes=3 * 1024 * 1024)
    assert run.returncode == 0 and len(run.stderr) >= 3 * 1024 * 1024
    assert run.types[-1] == "turn.completed"


def test_malformed_lines_among_real_events(fake: FakeCodex) -> None:
    run = run_fake(fake, "malformed_lines")
    assert run.returncode == 0
    assert b"this is not json" in run.stdout and b"\xff\xfe" in run.stdout
    assert "future.event" in run.types and run.types[-1] == "turn.completed"


def test_huge_line(fake: FakeCodex) -> None:
    run = run_fake(fake, "huge_line", huge_bytes=2 * 1024 * 1024)
    assert max(len(line) for line in run.stdout.splitlines()) > 2 * 1024 * 1024
    assert run.types[-1] == "turn.completed" and len(fake.generated_images()) == 1


# --- command line and stdin, as the real codex -----------------------------------------------


def test_stdin_left_open_fails_instead_of_hanging(fake: FakeCodex) -> None:
    fake.configure("success", stdin_timeout=0.3)
    proc = subprocess.Popen(
        [str(fake.path), *EXEC_ARGS, "a prompt argument"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=fake.env(),
        cwd=fake.dir,
    )
    # Not communicate(): that would close stdin, which is exactly what must not happen here.
    assert proc.wait(10) == 1
    assert proc.stderr is not None and b"stdin was never closed" in proc.stderr.read()
    assert fake.exec_calls[-1].stdin_left_open
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        assert stream is not None
        stream.close()


def test_prompt_argument_with_piped_stdin_is_appended(fake: FakeCodex) -> None:
    run = run_fake(fake, args=[*EXEC_ARGS, "-C", str(fake.dir), "draw this"], prompt="extra")
    assert run.returncode == 0
    assert b"Reading additional input from stdin" in run.stderr
    assert run.call.raw["stdin_prompt"] == "draw this\n\n<stdin>\nextra\n</stdin>"


def test_empty_stdin_prompt(fake: FakeCodex) -> None:
    run = run_fake(fake, prompt="   ")
    assert run.returncode == 1 and b"No prompt provided via stdin." in run.stderr


def test_outside_git_repo_without_skip_flag(fake: FakeCodex) -> None:
    run = run_fake(fake, args=["exec", "--json", "-C", str(fake.dir), "-"])
    assert run.returncode == 1
    assert b"--skip-git-repo-check was not specified" in run.stderr


def test_unknown_argument_exits_2_like_clap(fake: FakeCodex) -> None:
    run = run_fake(fake, args=["exec", "--full-auto", "-"])
    assert run.returncode == 2 and b"unexpected argument '--full-auto' found" in run.stderr
    bad_sandbox = run_fake(fake, args=["exec", "--sandbox", "yolo", "-"])
    assert bad_sandbox.returncode == 2


def test_missing_codex_home_fails_like_codex(fake: FakeCodex, tmp_path: Path) -> None:
    fake.configure("success")
    env = {**fake.env(), "CODEX_HOME": str(tmp_path / "missing")}
    proc = subprocess.run(
        [str(fake.path), *EXEC_ARGS, "-"], input=b"x", capture_output=True, env=env
    )
    assert proc.returncode == 1
    assert b'CODEX_HOME points to "' in proc.stderr and b"does not exist" in proc.stderr


def test_image_flag_is_variadic(fake: FakeCodex, tmp_path: Path) -> None:
    run = run_fake(fake, args=[*EXEC_ARGS, "-C", str(fake.dir), "-i", "a.png", "b.png", "--", "-"])
    assert run.returncode == 0
    assert run.call.argv[-5:] == ["-i", "a.png", "b.png", "--", "-"]


def test_version_and_features(fake: FakeCodex) -> None:
    fake.configure("success", version="0.142.0", image_generation=False)
    version = subprocess.run([str(fake.path), "--version"], capture_output=True, text=True)
    assert version.stdout == "codex-cli 0.142.0\n"
    features = subprocess.run([str(fake.path), "features", "list"], capture_output=True, text=True)
    row = next(
        line for line in features.stdout.splitlines() if line.startswith("image_generation ")
    )
    assert row.split() == ["image_generation", "stable", "false"]


@pytest.mark.parametrize(
    ("auth", "forced", "code", "text"),
    [
        (chatgpt_auth(), None, 0, "Logged in using ChatGPT"),
        (chatgpt_auth(auth_mode=None, api_key="sk-test"), None, 0, "API key configured - ***"),
        (
            {"auth_mode": "agentIdentity", "OPENAI_API_KEY": None},
            None,
            0,
            "Logged in using Agent Identity",
        ),
        (None, None, 1, "Not logged in"),
        ("{not json", None, 1, "Error checking login status"),
        (None, "chatgpt", 0, "Logged in using ChatGPT"),  # credentials in the OS keyring
    ],
)
def test_login_status(fake: FakeCodex, auth: Any, forced: str | None, code: int, text: str) -> None:
    target = fake.codex_home / "auth.json"
    target.unlink()
    if isinstance(auth, dict):
        target.write_text(json.dumps(auth))
    elif isinstance(auth, str):
        target.write_text(auth)
    if forced is not None:
        (fake.codex_home / "config.toml").write_text('cli_auth_credentials_store = "keyring"\n')
    fake.configure("success", login=forced)
    proc = subprocess.run(
        [str(fake.path), "login", "status"], capture_output=True, text=True, env=fake.env()
    )
    assert proc.returncode == code
    assert proc.stdout == "" and text in proc.stderr


@pytest.mark.parametrize(
    ("store", "override", "expected"),
    [
        ("keyring", None, "Logged in using ChatGPT"),  # the keyring's login
        ("file", None, "Not logged in"),  # the file store never looks in the keyring
        ("file", "keyring", "Logged in using ChatGPT"),  # -c beats config.toml, as in codex
        ("keyring", "file", "Not logged in"),
    ],
)
def test_login_status_looks_where_the_store_says(
    fake: FakeCodex, store: str, override: str | None, expected: str
) -> None:
    (fake.codex_home / "auth.json").unlink()
    (fake.codex_home / "config.toml").write_text(f'cli_auth_credentials_store = "{store}"\n')
    fake.configure("success", login="chatgpt")
    options = [] if override is None else ["-c", f'cli_auth_credentials_store="{override}"']
    proc = subprocess.run(
        [str(fake.path), *options, "login", "status"], capture_output=True, text=True,
        env=fake.env(),
    )  # fmt: skip
    assert expected in proc.stderr


def test_secrets_are_recorded_by_presence_only(fake: FakeCodex) -> None:
    fake.configure("success")
    env = {**fake.env(), "CODEX_API_KEY": "sk-live-secret"}
    subprocess.run([str(fake.path), "--version"], capture_output=True, env=env, check=True)
    call = fake.calls[-1]
    assert call.env_present == ["CODEX_API_KEY"]
    assert "sk-live-secret" not in json.dumps(call.raw)


# --- the kit ---------------------------------------------------------------------------------


def test_configure_rejects_unknown_names(fake: FakeCodex) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        fake.configure("sucess")
    with pytest.raises(ValueError, match="unknown fake codex option"):
        fake.configure(dealy=1)


def test_env_var_selects_scenario(fake: FakeCodex) -> None:
    fake.configure("success")
    env = {**fake.env(), "FAKE_CODEX_SCENARIO": "capacity"}
    proc = subprocess.run(
        [str(fake.path), *EXEC_ARGS, "-"], input=b"x", capture_output=True, env=env, cwd=fake.dir
    )
    assert proc.returncode == 1 and b"at capacity" in proc.stderr


def test_reset_forgets_calls_and_options(fake: FakeCodex) -> None:
    run_fake(fake, "capacity")
    fake.reset()
    assert fake.calls == []
    assert run_fake(fake, args=[*EXEC_ARGS, "-C", str(fake.dir), "-"]).returncode == 0


def test_fixture_points_the_environment_at_the_fake(fake_codex: FakeCodex) -> None:
    codex = locate()
    assert codex.source == "CODEX_BIN" and codex.found == fake_codex.path
    assert os.environ["CODEX_HOME"] == str(fake_codex.codex_home)
    assert not Path(os.environ["HOME"], ".codex").exists()
    assert json.loads((fake_codex.codex_home / "auth.json").read_text())["auth_mode"] == "chatgpt"


def test_chatgpt_auth_is_shaped_like_a_real_login() -> None:
    doc = chatgpt_auth(plan="pro", email="me@example.com")
    payload = doc["tokens"]["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["email"] == "me@example.com"
    assert claims["https://api.openai.com/auth"]["chatgpt_plan_type"] == "pro"
    assert doc["auth_mode"] == "chatgpt" and doc["OPENAI_API_KEY"] is None
    assert "auth_mode" not in chatgpt_auth(auth_mode=None)


# --- regression guards from review ---------------------------------------------------------

BAD_ARGS = [
    ["exec", "--json", "--json", "-"],
    ["exec", "-m", "--json", "-"],
    ["exec", "--skip-git-repo-check", "--", "a", "b"],
    ["exec", "-s", "read-only", "--sandbox", "read-only", "-"],
]


@pytest.mark.parametrize("argv", BAD_ARGS, ids=lambda a: " ".join(a[1:]))
def test_argument_errors_like_clap(fake: FakeCodex, argv: list[str]) -> None:
    """Regression guard: the fake accepted what the real CLI rejects (false passes)."""
    run = run_fake(fake, args=argv)
    assert run.returncode == 2 and b"error: " in run.stderr


@pytest.mark.parametrize("flag", [["-mgpt-5"], ["-m=gpt-5"], ["--model=gpt-5"], ["-sread-only"]])
def test_attached_option_values(fake: FakeCodex, flag: list[str]) -> None:
    run = run_fake(fake, args=[*EXEC_ARGS[:3], *flag, "-C", str(fake.dir), "-"])
    assert run.returncode == 0


def test_image_values_split_on_commas_and_dash_is_a_file(fake: FakeCodex) -> None:
    run = run_fake(
        fake, args=[*EXEC_ARGS, "-C", str(fake.dir), "-i", "a.png,b.png", "c.png", "--", "-"]
    )
    assert run.returncode == 0 and run.call.raw["images"] == ["a.png", "b.png", "c.png"]
    dash = run_fake(fake, args=[*EXEC_ARGS, "-C", str(fake.dir), "-i", "a.png", "-"])
    assert dash.call.raw["images"] == ["a.png", "-"]  # as the real CLI: `-` after -i is a file


def test_watchdog_ends_a_fake_blocked_on_a_full_pipe(fake: FakeCodex) -> None:
    """Regression guard: a stderr flood nobody drained blocked the fake forever."""
    fake.configure("stderr_flood", hang_max=0.5, stderr_bytes=8 * 1024 * 1024)
    EXERCISED.add("stderr_flood")
    proc = subprocess.Popen(
        [str(fake.path), *EXEC_ARGS, "-C", str(fake.dir), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # never read
        env=fake.env(),
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"x")
    proc.stdin.close()
    assert proc.wait(15) == 1
    proc.stderr.close()


def test_never_the_real_codex_home(fake: FakeCodex) -> None:
    env = {k: v for k, v in fake.env().items() if k != "CODEX_HOME"}
    proc = subprocess.run(
        [str(fake.path), "login", "status"], capture_output=True, text=True, env=env
    )
    assert "Logged in using ChatGPT" in proc.stderr
    assert fake.calls[-1].env["CODEX_HOME"] == str(fake.codex_home)


def test_the_kit_keeps_out_of_the_users_cache_and_runs_without_pytest(
    fake_codex: FakeCodex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: the fixture wrote a file per test into the user's cache folder (with
    XDG_CACHE_HOME set), and FakeCodex.env() lacked CODEX_BIN (a LaunchError)."""
    from codex_cli_image import generate

    user_cache = tmp_path / "users-xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    generate("a fox", output=tmp_path / "a.png")
    assert not user_cache.exists()
    other = FakeCodex(tmp_path / "standalone")
    env = other.env({"PATH": "/usr/bin:/bin", "CODEX_IMAGE_CACHE_DIR": str(tmp_path / "c")})
    assert env["CODEX_BIN"] == str(other.path)
    assert generate("a hen", output=tmp_path / "b.png", env=env).path.exists()
    assert other.exec_calls and len(fake_codex.exec_calls) == 1


def test_every_scenario_was_exercised(request: pytest.FixtureRequest) -> None:
    """Runs last in this module: each scenario of the fake must have been run by a test above."""
    tests = {name for name in dir(request.module) if name.startswith("test_")}
    if tests - RAN:
        pytest.skip("only part of this module was selected")
    assert set(SCENARIOS) - EXERCISED == set()

"""`codex-image mcp` driven by the official SDK's own client over stdio, against the fake codex."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, ImageContent, TextContent

from codex_cli_image import cli
from codex_cli_image.testing import FakeCodex

from helpers import survivors

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("private_tmp")]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "images"


def server(out: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "codex_cli_image", "mcp", "--out-dir", str(out), *extra],
        env=dict(os.environ),
    )


def call(out: Path, tool: str, arguments: dict[str, Any], *extra: str) -> CallToolResult:
    async def main() -> CallToolResult:
        async with Client(server(out, *extra)) as client:
            return await client.call_tool(tool, arguments)

    return anyio.run(main)


def test_tools_are_listed_with_their_parameters(fake_codex: FakeCodex, out: Path) -> None:
    async def main() -> dict[str, Any]:
        async with Client(server(out)) as client:
            return {tool.name: tool for tool in (await client.list_tools()).tools}

    tools = anyio.run(main)
    assert set(tools) == {"generate_image", "doctor", "usage_limits"}
    schema = tools["generate_image"].input_schema
    assert schema["required"] == ["prompt"]
    assert set(schema["properties"]) == {
        "prompt", "output_dir", "references", "aspect", "size", "transparent",
    }  # fmt: skip
    assert tools["doctor"].annotations is not None and tools["doctor"].annotations.read_only_hint
    for tool in tools.values():  # regression guard: the docstring's indentation reached agents
        assert tool.description and "  " not in tool.description and "\n" not in tool.description
    described = {name: field["description"] for name, field in schema["properties"].items()}
    assert "relative to the server's --out-dir" in described["output_dir"]
    assert "absolute paths" in described["output_dir"]
    assert "absolute paths" in described["references"]
    assert fake_codex.exec_calls == []


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("arguments", "reason", "words"),
    [
        ({}, "missing_argument", "prompt is missing"),
        ({"prompt": 5}, "invalid_argument", "prompt: input should be a valid string"),
        ({"prompt": "a fox", "transparent": "maybe"}, "invalid_argument", "transparent: "),
        ({"prompt": "a fox", "references": "a.png"}, "invalid_argument", "references: "),
        ({"prompt": "a fox", "references": ["a.png"]}, "invalid_reference", "not an absolute"),
        ({"prompt": " "}, "empty_prompt", "The prompt is empty"),
    ],
)
def test_bad_arguments_come_back_in_the_documented_shape(
    fake_codex: FakeCodex, out: Path, arguments: dict[str, Any], reason: str, words: str
) -> None:
    """Regression guard: the SDK's own validation answered with pydantic's text (and a link),
    without kind, reason, hint or structured content."""
    result = call(out, "generate_image", arguments)
    assert result.is_error and result.structured_content is not None
    error = result.structured_content["error"]
    assert (error["kind"], error["reason"]) == ("input", reason) and error["hint"]
    assert words in error["message"] and "pydantic" not in error["message"]
    text = result.content[0]
    assert isinstance(text, TextContent) and text.text.startswith(f"input error ({reason}): ")
    assert fake_codex.exec_calls == []


def test_generate_image_round_trip(fake_codex: FakeCodex, out: Path, private_tmp: Path) -> None:
    fake_codex.configure("success", width=48, height=32)
    result = call(out, "generate_image", {"prompt": "a red fox", "output_dir": "foxes"})
    assert not result.is_error
    data = result.structured_content
    assert data is not None and data["ok"] is True
    path = Path(data["path"])
    assert path.parent == out / "foxes" and (data["width"], data["height"]) == (48, 32)
    assert data["usage_limits"]["primary"]["used_percent"] == 34.5  # #32
    text, image = result.content
    assert isinstance(text, TextContent) and str(path) in text.text
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data) == path.read_bytes()
    stdin = fake_codex.exec_calls[0].stdin
    assert stdin is not None and "a red fox" in stdin
    assert list(private_tmp.iterdir()) == [] and survivors(fake_codex) == []


def test_large_images_are_returned_by_path_only(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success")
    result = call(out, "generate_image", {"prompt": "a hen"}, "--inline-max-bytes", "10")
    assert not result.is_error and [c.type for c in result.content] == ["text"]
    assert result.structured_content is not None
    assert Path(result.structured_content["path"]).parent == out


def test_failures_are_tool_errors_and_the_server_lives_on(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("usage_limit")

    async def main() -> tuple[CallToolResult, CallToolResult, CallToolResult, CallToolResult]:
        async with Client(server(out)) as client:
            quota = await client.call_tool("generate_image", {"prompt": "a fox"})
            bad = await client.call_tool("generate_image", {"prompt": "a", "aspect": "round"})
            fake_codex.configure("success")
            # #32: the limit codex recorded holds until its reset: answered without codex.
            again = await client.call_tool("generate_image", {"prompt": "a fox"})
            good = await client.call_tool("doctor", {})
            return quota, bad, again, good

    quota, bad, again, good = anyio.run(main)
    assert quota.is_error and quota.structured_content is not None
    error = quota.structured_content["error"]
    assert (error["kind"], error["reason"]) == ("quota", "usage_limit") and error["retry_at"]
    text = quota.content[0]
    assert isinstance(text, TextContent)
    assert text.text.startswith("quota error (usage_limit): ") and "What to do: " in text.text
    assert bad.is_error and bad.structured_content is not None
    assert bad.structured_content["error"]["reason"] == "invalid_aspect"
    assert again.is_error and again.structured_content is not None
    assert again.structured_content["error"]["reason"] == "usage_limit"
    assert len(fake_codex.exec_calls) == 1
    assert not good.is_error  # the server lives on


def test_output_dir_stays_inside_the_servers_folder(
    fake_codex: FakeCodex, out: Path, tmp_path: Path
) -> None:
    async def main() -> list[CallToolResult]:
        async with Client(server(out)) as client:
            return [
                await client.call_tool("generate_image", {"prompt": "a fox", "output_dir": bad})
                for bad in ("../escaped", str(tmp_path / "elsewhere"), "~/Pictures", "a/../../b")
            ] + [await client.call_tool("generate_image", {"prompt": " ", "output_dir": "new"})]

    *outside, empty = anyio.run(main)
    for result in outside:
        assert result.is_error and result.structured_content is not None
        assert result.structured_content["error"]["reason"] == "output_dir_outside"
    assert empty.is_error and empty.structured_content is not None
    assert empty.structured_content["error"]["reason"] == "empty_prompt"
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "b").exists() and not (out / "new").exists()
    assert fake_codex.exec_calls == []


def test_sigterm_stops_the_server_and_codex(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    """A server told to stop while an image is being made ends codex's tree and exits."""
    fake_codex.configure("grandchild")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_cli_image", "mcp", "--out-dir", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    hello = {"protocolVersion": "2025-06-18", "capabilities": {},
             "clientInfo": {"name": "test", "version": "1"}}  # fmt: skip
    for message in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}}},
    ):  # fmt: skip
        proc.stdin.write(json.dumps(message).encode() + b"\n")
        proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["id"] == 1
    deadline = time.monotonic() + 30
    while not (fake_codex.exec_calls and fake_codex.exec_calls[0].helper_pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 130
    finally:
        proc.kill()
        proc.communicate()
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []


def test_doctor_tool(fake_codex: FakeCodex, out: Path) -> None:
    result = call(out, "doctor", {})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["ok"] is True
    text = result.content[0]
    assert isinstance(text, TextContent) and text.text.startswith("Ready")
    assert result.structured_content["usage_limits"]["plan"] == "plus"


def test_usage_limits_tool(fake_codex: FakeCodex, out: Path) -> None:
    """#32: the windows without an image; errors as the image tool's."""
    result = call(out, "usage_limits", {})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["ok"] is True
    assert result.structured_content["primary"]["used_percent"] == 34.0
    text = result.content[0]
    assert isinstance(text, TextContent) and text.text.startswith("5 h window 34 % used")
    fake_codex.configure("success", usage_read="refused")
    refused = call(out, "usage_limits", {})
    assert refused.is_error and refused.structured_content is not None
    assert refused.structured_content["error"]["reason"] == "login_refused"
    assert fake_codex.exec_calls == []


def test_disconnecting_mid_call_ends_codex(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    """A client that goes away (agent closed) must not leave codex running."""
    fake_codex.configure("grandchild")

    async def main() -> None:
        async with Client(server(out)) as client, anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "generate_image", {"prompt": "a fox"})
            with anyio.fail_after(30):
                # Polling on purpose: the helper's pid appears in a file the fake writes.
                while not (fake_codex.exec_calls and fake_codex.exec_calls[0].helper_pid):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()

    anyio.run(main)
    deadline = time.monotonic() + 20
    while survivors(fake_codex) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivors(fake_codex) == []
    deadline = time.monotonic() + 10
    while list(private_tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(private_tmp.iterdir()) == []


def test_missing_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")] + ["mcp"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "codex_cli_image.mcp_server", raising=False)
    assert cli.main(["mcp"]) == 2
    err = capsys.readouterr().err
    assert "needs the mcp extra" in err and f"{sys.executable} -m pip install '.[mcp]'" in err


def test_a_slow_image_sends_progress_at_each_phase_and_every_few_seconds(
    fake_codex: FakeCodex, out: Path
) -> None:
    """Regression guard: no progress was sent, so a client with a 60 s request timeout (the MCP
    Inspector's) failed every real image (20-120 s). Now each phase is reported, and a
    heartbeat at least every 5 s while codex works; the second call of two with -j 1 says it
    waits for a free slot."""
    # 12 s of codex working: without heartbeats the longest gap would be that long.
    fake_codex.configure("success", delay=12, by_prompt={"a quick zebra": {"delay": 0}})
    seen: dict[str, list[tuple[float, float, str]]] = {"first": [], "second": []}
    ended: dict[str, float] = {}

    def noting(name: str) -> Any:
        async def note(progress: float, total: float | None, message: str | None) -> None:
            seen[name].append((time.monotonic(), progress, message or ""))

        return note

    async def main() -> list[CallToolResult]:
        results: list[CallToolResult] = []
        async with Client(server(out, "-j", "1")) as client:

            async def one(name: str, after: float) -> None:
                await anyio.sleep(after)
                arguments = {"prompt": "a quick zebra" if name == "second" else "a slow fox"}
                results.append(await client.call_tool("generate_image", arguments,
                                                      progress_callback=noting(name)))  # fmt: skip
                ended[name] = time.monotonic()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(one, "first", 0.0)
                tasks.start_soon(one, "second", 1.0)
        return results

    results = anyio.run(main)
    assert [r.is_error for r in results] == [False, False]
    first = seen["first"]
    messages = [message for _, _, message in first]
    assert any("codex is working" in m for m in messages), messages
    assert "checking it" in messages[-1] or "done" in messages[-1], messages  # the last phase too
    values = [value for _, value, _ in first]
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing
    times = [at for at, _, _ in first] + [ended["first"]]  # the answer ends the last gap
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    assert gaps and max(gaps) < 5 + 3, gaps  # every 5 s; the rest is a busy machine's slack
    assert any("waiting" in message for _, _, message in seen["second"]), seen["second"]


def test_the_server_runs_with_its_profile(fake_codex: FakeCodex, out: Path) -> None:
    (fake_codex.codex_home / "work.config.toml").write_text('model = "m-work"\n', "utf-8")
    result = call(out, "generate_image", {"prompt": "a fox"}, "--profile", "work")
    assert not result.is_error
    assert fake_codex.exec_calls[-1].raw["model"] == "m-work"
    missing = call(out, "generate_image", {"prompt": "a fox"}, "--profile", "play")
    assert missing.is_error and missing.structured_content is not None
    assert missing.structured_content["error"]["reason"] == "profile_not_found"

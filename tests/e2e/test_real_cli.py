"""The real Codex CLI, through our CLI and library, against the mock backend."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from codex_cli_image import CodexImageError, Progress, agenerate, generate, locate
from codex_cli_image.api import generate_many
from codex_cli_image.testing import make_png
from codex_cli_image.testing.backend import IMAGE_REFUSALS, MockBackend, image_for, image_refusal
from codex_cli_image.testing.fake_codex import CLIENT_SIDE_TOOL

from helpers import check_refusal, mcp_generate, real_serve

pytestmark = pytest.mark.timeout(180)
Start = Callable[..., MockBackend]
SignIn = Callable[..., Path]


def cli(*args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "codex_cli_image", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_delivers_the_served_png(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend(image_scenario)
    home = signed_in(mock)
    out = tmp_path / "fox.png"
    # PATH=/nonexistent: the npm shim is resolved to the native binary, no node needed.
    result = cli("generate", "a red fox", "-o", str(out), "--codex", str(shim),
                 "--allow-relay", "--json", path="/nonexistent")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Regression guard: "Exception ignored ... Event loop is closed" after a successful run
    # whose code-mode host kept codex's stdout open.
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["image_source"] == "file"
    assert out.read_bytes() == mock.image
    assert (document["width"], document["height"]) == (96, 64)
    assert document["codex_version"] == shim.parent.parent.parent.name
    assert not list((home / "generated_images").rglob("*.png"))  # codex's copy was removed
    if image_scenario == "image":
        assert "/backend-api/codex/images/generations" in mock.paths("POST")


def test_library_sync_and_async(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend(image_scenario)
    signed_in(mock)
    sync = generate("a fox", output=tmp_path / "s.png", codex=shim, allow_relay=True, timeout=90)
    assert sync.path.read_bytes() == mock.image

    async def main() -> Path:
        result = await agenerate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True,
                                 timeout=90)  # fmt: skip
        return result.path

    assert anyio.run(main).read_bytes() == mock.image


def test_early_stop_with_a_slow_closing_answer(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend(image_scenario, final_delay_s=5.0)
    signed_in(mock)
    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90)
    ended = time.time()
    assert result.path.read_bytes() == mock.image
    assert mock.image_served_at is not None
    assert ended - mock.image_served_at < 1.0, (
        f"{ended - mock.image_served_at:.2f} s after the image"
    )


@pytest.mark.parametrize(
    ("scenario", "kind", "reason"),
    [
        ("images_403", "auth", "image_generation_refused"),
        ("image_hosted_failed", "transient", "no_image"),
        ("responses_429", "quota", "rate_limited"),
        ("usage_limit", "quota", "usage_limit"),
        ("unauthorized", "auth", "refresh_failed"),
        ("text_only", "transient", "no_image"),
    ],
)
def test_failures_map_to_kind_and_reason(
    shim: Path,
    version: tuple[int, int, int],
    backend: Start,
    signed_in: SignIn,
    tmp_path: Path,
    scenario: str,
    kind: str,
    reason: str,
) -> None:
    client_side = version >= CLIENT_SIDE_TOOL
    if scenario == "images_403" and not client_side:
        pytest.skip("before 0.144 the image is made by the backend's hosted tool: no images call")
    if scenario == "image_hosted_failed" and client_side:
        pytest.skip("0.149+ accept a hosted image item but never write it to a file")
    mock = backend(scenario)
    signed_in(mock)
    with pytest.raises(CodexImageError) as info:
        generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90,
                 retries=0)  # fmt: skip
    error = info.value
    assert (error.kind, error.reason) == (kind, reason), error.message
    assert error.thread_id and error.codex_version
    if reason == "usage_limit":
        assert error.retry_at and error.retry_after_s and error.retry_after_s > 0
    if scenario == "unauthorized":
        assert "/oauth/token" in mock.paths("POST")  # codex did try to refresh
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("refusal", IMAGE_REFUSALS)
@pytest.mark.parametrize("tool_path", ["image", "image_code_mode"], ids=["direct", "code-mode"])
def test_images_endpoint_refusals_are_sorted_on_both_tool_paths(
    shim: Path,
    version: tuple[int, int, int],
    backend: Start,
    signed_in: SignIn,
    tmp_path: Path,
    refusal: str,
    tool_path: str,
) -> None:
    """Regression guard: on the code-mode path the default models take, every refusal of the
    images endpoint came out as transient/no_image (exit 5, retried). Codex exits 0 either way;
    the reason is only in the tool call's output and in one stderr line."""
    if version < CLIENT_SIDE_TOOL:
        pytest.skip("before 0.144 the image is made by the backend's hosted tool: no images call")
    mock = backend(tool_path, images_error=image_refusal(refusal))
    signed_in(mock)
    out = tmp_path / "a.png"
    # A refusal is never retried; a server error is (retries 1 by default), so it runs once here.
    retries = ["--retries", "0"] if refusal == "server_error" else []
    result = cli("generate", "a fox", "-o", str(out), "--codex", str(shim), "--allow-relay",
                 "--json", *retries)  # fmt: skip
    error = json.loads(result.stdout)["error"]
    check_refusal(refusal, error, result.returncode)
    assert error["thread_id"] and error["codex_version"] == ".".join(map(str, version))
    if refusal == "server_error":
        assert mock.image_requests() > 1  # codex retried it itself
    else:
        assert mock.image_requests() == 1, mock.paths("POST")
    assert not out.exists() and list(tmp_path.glob("*.png")) == []
    # the autouse fixture proves no codex process is left


def test_hang_times_out_and_leaves_no_process(
    shim: Path, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend("hang")
    signed_in(mock)
    started = time.monotonic()
    with pytest.raises(CodexImageError) as info:
        generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=6)
    assert info.value.reason == "timeout" and time.monotonic() - started < 15
    assert "/backend-api/codex/responses" in mock.paths("POST")  # it hung on a real request
    # the autouse fixture proves no codex process is left


def test_free_plan_is_refused_before_codex_runs(
    shim: Path, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend("image")
    signed_in(mock, plan="free")
    with pytest.raises(CodexImageError) as info:
        generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=60)
    assert (info.value.kind, info.value.reason) == ("auth", "free_plan")
    assert mock.requests == []  # not a single request reached the backend


def test_base_url_override_needs_allow_relay(
    shim: Path, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    mock = backend("image")
    signed_in(mock)
    with pytest.raises(CodexImageError) as info:
        generate("a fox", output=tmp_path / "a.png", codex=shim, timeout=60)
    assert info.value.reason == "relay_provider" and mock.requests == []


def test_hosted_image_without_a_file_comes_from_the_rollout(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """0.149+ accept a hosted image item but save no file: the rollout keeps the base64."""
    if version < (0, 149, 0):
        pytest.skip("before 0.149 a hosted image is saved as ig_*.png")
    mock = backend("image_hosted")
    signed_in(mock)
    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90)
    assert result.image_source == "rollout" and result.path.read_bytes() == mock.image


def test_image_made_through_code_mode(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """How gpt-6.1-sol really does it: JavaScript in codex's exec tool calls imagegen."""
    if version < CLIENT_SIDE_TOOL:
        pytest.skip("code mode arrived with the client-side image tool in 0.144")
    mock = backend("image_code_mode")
    signed_in(mock)
    saved: list[str] = []

    def note(progress: Progress) -> None:
        if progress.phase == "image_saved":
            saved.append(progress.message or "")

    result = generate("a fox", output=tmp_path / "a.png", codex=shim, allow_relay=True, timeout=90,
                      on_progress=note)  # fmt: skip
    assert result.path.read_bytes() == mock.image
    assert Path(saved[0]).name.startswith("exec-")


def test_references_reach_the_image_tool(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """The reference goes to the model with the prompt, and on 0.144+ codex sends it to the
    images edits endpoint when the model asks for num_last_images_to_include, as we instruct."""
    reference = tmp_path / "ref.png"
    reference.write_bytes(make_png(32, 32, "a reference"))
    if version >= CLIENT_SIDE_TOOL:
        arguments = {"prompt": "make it blue", "num_last_images_to_include": 1}
        mock = backend("image", call_arguments=arguments)
    else:
        mock = backend("image_hosted")
    signed_in(mock)
    result = generate("make it blue", output=tmp_path / "a.png", references=[reference],
                      codex=shim, allow_relay=True, timeout=90)  # fmt: skip
    assert result.path.read_bytes() == mock.image
    encoded = base64.b64encode(reference.read_bytes()).decode()
    turns = [r.body for r in mock.requests if r.path.endswith("/responses") and r.body]
    assert any(encoded in json.dumps(body) for body in turns)  # attached for the model
    if version >= CLIENT_SIDE_TOOL:
        (edit,) = [r.body for r in mock.requests if r.path.endswith("/images/edits")]
        assert edit is not None and edit["images"][0]["image_url"].endswith(encoded)


def test_copy_flow_runs_the_scripted_shell_copy(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """The "copy the image to this path" flow the benchmarks compare us with (bench/turns.py):
    codex runs the scripted model's shell copy from code mode, two model turns after the image."""
    if version < CLIENT_SIDE_TOOL:
        pytest.skip("code mode arrived with the client-side image tool in 0.144")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    mock = backend("image_then_copy", copy_to="fox.png")
    signed_in(mock)
    codex = locate(shim)
    run = subprocess.run(
        codex.command("exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write",
                      "-c", "analytics.enabled=false", "-"),
        input=b"Make an image of a fox and save it as fox.png.",
        capture_output=True, cwd=workspace, env=dict(codex.env), timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (workspace / "fox.png").read_bytes() == mock.image
    assert len(mock.model_turns()) == 3 and len(mock.turns_answered) == 3


def test_a_batch_attributes_each_image_to_its_own_request(
    shim: Path, version: tuple[int, int, int], backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """Several real codex runs at once on one CODEX_HOME and one backend: each request gets the
    image made from its own prompt (the mock draws each image from the prompt it was asked)."""
    if version < CLIENT_SIDE_TOOL:
        pytest.skip("the scripted model calls the client-side image tool (0.144+)")
    mock = backend("image", echo_request=True, image_delay_s=0.5)
    signed_in(mock)
    prompts = ["a red fox", "a blue hen", "a green owl", "a grey cat"]
    outcomes = generate_many(prompts, concurrency=2, out_dir=tmp_path / "out", codex=shim,
                             allow_relay=True, timeout=90)  # fmt: skip
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.error for o in outcomes]
    for outcome, prompt in zip(outcomes, prompts, strict=True):
        assert outcome.result is not None
        assert outcome.result.path.read_bytes() == image_for(prompt)
    assert len({o.result.thread_id for o in outcomes if o.result}) == 4


def test_mcp_server_makes_an_image_with_the_real_cli(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """An agent's view: the SDK's stdio client calls generate_image on `codex-image mcp`."""
    mock = backend(image_scenario)
    signed_in(mock)
    result = mcp_generate(shim, tmp_path / "images", "a red fox")
    assert not result.is_error, result.content
    assert Path(result.structured_content["path"]).read_bytes() == mock.image


@pytest.mark.parametrize("limited", [False, True], ids=["image", "usage_limit"])
def test_serve_answers_the_openai_sdk_with_the_real_cli(
    shim: Path,
    image_scenario: str,
    backend: Start,
    signed_in: SignIn,
    tmp_path: Path,
    limited: bool,
) -> None:
    """A tool's view: the official openai SDK calls `codex-image serve`, which runs the real
    codex: the image the mock served comes back as b64_json; a usage limit is a RateLimitError
    that the SDK does not retry (one codex run)."""
    import openai

    mock = backend("usage_limit" if limited else image_scenario)
    signed_in(mock)
    token = "e2e-token-0123456789abcdef"
    log = tmp_path / "serve.log"
    env = {**os.environ, "CODEX_IMAGE_TOKEN": token, "PATH": "/usr/bin:/bin"}
    with real_serve(shim, log, env) as server:
        base_url = server.base_url
        assert base_url.startswith("http://127.0.0.1:"), log.read_text()
        client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=2, timeout=150)
        if limited:
            with pytest.raises(openai.RateLimitError) as caught:
                client.images.generate(model="gpt-image-1", prompt="a red fox")
            assert caught.value.response.headers["x-should-retry"] == "false"
            asked = len(mock.paths("POST"))
            with pytest.raises(openai.RateLimitError):  # at once, without codex
                client.images.generate(model="gpt-image-1", prompt="a red fox")
            assert len(mock.paths("POST")) == asked
        else:
            reply = client.images.generate(model="gpt-image-1", prompt="a red fox")
            assert base64.b64decode(reply.data[0].b64_json or "") == mock.image
            assert reply.size == "96x64"
    code = server.code
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text and token not in text and "red fox" not in text
    if limited:  # the SDK did not retry: one request per call
        assert text.count("POST /v1/images/generations 429") == 2, text


def test_the_profiles_model_reaches_the_backend(
    shim: Path,
    image_scenario: str,
    version: tuple[int, int, int],
    backend: Start,
    signed_in: SignIn,
    tmp_path: Path,
) -> None:
    """--profile is passed as the installed codex expects: its model is what the backend is
    asked for (0.142+ from work.config.toml, before from [profiles.work])."""
    mock = backend(image_scenario)
    home = signed_in(mock)
    config = home / "config.toml"
    config.write_text('model = "gpt-5"\n' + config.read_text("utf-8"), "utf-8")  # not it
    if version >= (0, 142, 0):
        (home / "work.config.toml").write_text('model = "gpt-5.1"\n', "utf-8")
    else:
        with (home / "config.toml").open("a", encoding="utf-8") as config:
            config.write('\n[profiles.work]\nmodel = "gpt-5.1"\n')
    result = generate("a fox", output=tmp_path / "p.png", codex=shim, allow_relay=True,
                      timeout=90, profile="work")  # fmt: skip
    assert result.path.read_bytes() == mock.image
    models = {turn.body.get("model") for turn in mock.model_turns() if turn.body is not None}
    assert models == {"gpt-5.1"}


def test_start_up_requests_an_image_does_not_need_are_skipped(
    shim: Path, image_scenario: str, backend: Start, signed_in: SignIn, tmp_path: Path
) -> None:
    """Plugin lists, suggested plugins and the apps' MCP discovery cost a round trip each over
    a real network: we run codex with --disable plugins --disable apps (names it lists), and
    the mock's request log shows them gone, while the bare CLI makes them."""
    mock = backend(image_scenario)
    signed_in(mock)
    bare = subprocess.run(
        [*locate(shim).command("exec", "--json", "--skip-git-repo-check", "-")],
        input=b"make an image of a fox", capture_output=True, env=dict(os.environ),
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert bare.returncode == 0, bare.stderr[-2000:]
    # Seen on 0.125-0.171: plugins/featured, ps/plugins/*, ps/mcp, connectors/..., wham/apps.
    markers = ("/ps/", "/plugins/", "/connectors/", "/wham/apps")
    skippable = [p for p in mock.paths() if any(m in p for m in markers)]
    assert skippable  # what there is to save, on this version
    before = len(mock.requests)
    result = generate("a fox", output=tmp_path / "f.png", codex=shim, allow_relay=True, timeout=90)
    assert result.path.read_bytes() == mock.image
    ours = [r.path for r in mock.requests[before:]]
    assert not [p for p in ours if any(m in p for m in markers)], ours
    assert any(p.endswith("/codex/responses") for p in ours)

"""Batches: parse_batch (pure), generate_many / agenerate_many and `codex-image batch`."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_cli_image import batch as batch_module
from codex_cli_image import client as client_module
from codex_cli_image.api import agenerate_many, generate_many
from codex_cli_image.batch import BatchOutcome, BatchRequest, coerce_requests, parse_batch
from codex_cli_image.errors import CodexImageError, InputError
from codex_cli_image.pipeline import Plan
from codex_cli_image.results import Progress
from codex_cli_image.testing import FakeCodex

from helpers import default_sigint, png_ok, survivors

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("private_tmp")]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def text_chunks(png: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (the fake writes its thread id and prompt hash there)."""
    found, at = {}, 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            found[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return found


# --- parsing (pure) --------------------------------------------------------------------------


def test_plain_text_is_one_prompt_per_line() -> None:
    requests = parse_batch("a red fox\n\n  a blue hen  \r\n")
    assert requests == [BatchRequest("a red fox"), BatchRequest("a blue hen")]


def test_json_lines_with_every_field() -> None:
    line = {
        "prompt": "a fox",
        "output": "fox.png",
        "references": ["a.png", "b.jpg"],
        "aspect": "16:9",
        "size": "1024x576",
        "transparent": True,
        "fit": "512x288",
    }
    text = json.dumps(line) + "\n\n" + json.dumps({"prompt": "a hen"})
    first, second = parse_batch(text)
    assert first == BatchRequest(
        "a fox", "fox.png", ("a.png", "b.jpg"), "16:9", "1024x576", True, "512x288"
    )
    assert first.to_dict() == line
    assert second == BatchRequest("a hen")


@pytest.mark.parametrize(
    ("text", "reason", "names"),
    [
        ("", "empty_batch", ""),
        ("\n  \n", "empty_batch", ""),
        ('{"prompt": "a"}\n{"prompt": "b"', "invalid_batch", "line 2: not valid JSON"),
        ('{"prompt": "a"}\n["b"]', "invalid_batch", "line 2: not a JSON object"),
        ('{"prompt": "a", "refs": ["x.png"]}', "invalid_batch", "line 1: unknown field 'refs'"),
        ('{"output": "a.png"}', "invalid_batch", "line 1: no prompt"),
        ('{"prompt": 3}', "invalid_batch", "line 1: no prompt"),
        ('{"prompt": "a", "references": "x.png"}', "invalid_batch",
         'line 1: "references" is not a list of paths'),
        ('{"prompt": "a", "transparent": "yes"}', "invalid_batch",
         'line 1: "transparent" is not true or false'),
        ('{"prompt": "a", "size": 1024}', "invalid_batch", 'line 1: "size" is not a string'),
        ('\n{"prompt": "a"}\n{"prompt": " "}', "empty_prompt", "line 3: The prompt is empty"),
        ('{"prompt": "a", "aspect": "wide"}', "invalid_aspect", "line 1: The aspect 'wide'"),
        ('{"prompt": "a", "size": "9x9"}', "invalid_size", "line 1: The size '9x9'"),
        ('{"prompt": "a", "fit": "9x9"}', "invalid_size", "line 1: The size '9x9'"),
        ("a fox\nb\x00c", "invalid_prompt", "line 2: "),
        (json.dumps({"prompt": "a", "references": ["r.png"] * 6}), "too_many_references",
         "line 1: 6 references"),
    ],
)  # fmt: skip
@pytest.mark.bad_input
def test_bad_batches_name_the_line(text: str, reason: str, names: str) -> None:
    with pytest.raises(InputError) as info:
        parse_batch(text)
    assert info.value.reason == reason
    assert info.value.message.startswith(names) and info.value.hint


def test_requests_from_the_api_are_coerced_and_checked() -> None:
    mixed: list[Any] = ["a fox", {"prompt": "a hen", "aspect": "square"}, BatchRequest("a cat")]
    assert [r.prompt for r in coerce_requests(mixed)] == ["a fox", "a hen", "a cat"]
    cases: list[tuple[list[Any], str]] = [
        ([], "empty_batch"),
        ([b"x"], "invalid_batch"),
        (["ok", ""], "empty_prompt"),
    ]
    for bad, reason in cases:
        with pytest.raises(InputError) as info:
            coerce_requests(bad)
        assert info.value.reason == reason
    with pytest.raises(InputError, match="request 1: unknown field 'prompts'"):
        coerce_requests([{"prompt": "a"}, {"prompts": "b"}])


# --- generate_many against the fake ----------------------------------------------------------


def test_bad_requests_fail_before_any_job(fake_codex: FakeCodex, out: Path) -> None:
    with pytest.raises(InputError) as info:
        generate_many(["a fox", {"prompt": "b", "aspect": "round"}], out_dir=out)
    assert info.value.reason == "invalid_aspect" and "request 1" in info.value.message
    with pytest.raises(InputError) as info:
        generate_many([{"prompt": "a", "output": "x.png"}, {"prompt": "b", "output": "x.png"}],
                      out_dir=out)  # fmt: skip
    assert info.value.reason == "duplicate_output"
    assert info.value.message.startswith("request 0 and request 1 both write to ")
    # #30 item 2: job 0's exact-size copy is job 1's output (it was silently replaced).
    pytest.importorskip("PIL")
    with pytest.raises(InputError) as info:
        generate_many([{"prompt": "a", "output": "fox.png", "fit": "48x32"},
                       {"prompt": "b", "output": "fox-48x32.png"}], out_dir=out,
                      overwrite=True)  # fmt: skip
    assert info.value.reason == "duplicate_output" and "fox-48x32.png" in info.value.message
    assert fake_codex.exec_calls == []
    for jobs in (0, 17):
        with pytest.raises(InputError) as info:
            generate_many(["a fox"], concurrency=jobs, out_dir=out)
        assert info.value.reason == "invalid_concurrency"
    assert fake_codex.calls == []


def test_mixed_outcomes_do_not_stop_each_other(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure(
        "success",
        by_prompt={"BROKEN": {"scenario": "invalid_png"}, "REFUSED": {"scenario": "image_refused"}},
    )
    seen: list[BatchOutcome] = []
    outcomes = generate_many(
        ["a red fox", {"prompt": "a BROKEN hen", "output": "hen.png"}, "a REFUSED cat", "an owl"],
        out_dir=out,
        retries=0,
        timeout=30,
        on_outcome=seen.append,
    )
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert sorted(o.index for o in seen) == [0, 1, 2, 3]
    assert [o.status for o in outcomes] == ["ok", "failed", "failed", "ok"]
    errors = [o.error for o in outcomes if o.error is not None]
    assert [(e.kind, e.reason) for e in errors] == [
        ("transient", "invalid_image"),
        ("auth", "image_generation_refused"),
    ]
    for outcome in (outcomes[0], outcomes[3]):
        assert outcome.result is not None and outcome.result.path.parent == out
        assert png_ok(outcome.result.path.read_bytes())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        o.result.path.name for o in outcomes if o.result
    )
    data = outcomes[1].to_dict()
    assert data["status"] == "failed" and data["request"]["output"] == "hen.png"  # type: ignore[index]
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("concurrency", [1, 2])
def test_quota_stops_new_jobs(fake_codex: FakeCodex, out: Path, concurrency: int) -> None:
    """After a usage limit no job starts; the rest are reported with the limit's retry_at."""
    fake_codex.configure(
        "success", by_prompt={"LIMIT": {"scenario": "usage_limit"}, "slow": {"delay": 3.0}}
    )
    prompts = ["a slow fox", "a LIMIT hen", "a cat", "an owl", "a toad"]
    outcomes = generate_many(prompts, concurrency=concurrency, out_dir=out, timeout=30)
    assert [o.status for o in outcomes] == ["ok", "failed"] + ["not_started"] * 3
    limit = outcomes[1].error
    assert limit is not None and limit.kind == "quota" and limit.retry_at
    for outcome in outcomes[2:]:
        assert outcome.error is not None and outcome.error.kind == "quota"
        assert outcome.error.retry_at == limit.retry_at
        assert outcome.error.message.startswith("Not started")
    assert len(fake_codex.exec_calls) == 2


def test_every_job_gets_its_own_image_under_concurrency_4(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    """Eight jobs, four at a time, one CODEX_HOME: each image comes from its own thread."""
    fake_codex.configure("success", delay=2.0)
    prompts = [f"picture number {n}" for n in range(8)]
    running: set[int] = set()
    peak = 0

    def on_progress(index: int, progress: Progress) -> None:
        nonlocal peak
        if progress.phase == "thread_started":
            running.add(index)
            peak = max(peak, len(running))
        elif progress.phase == "finished":
            running.discard(index)

    outcomes = generate_many(
        prompts, concurrency=4, out_dir=out, timeout=60, on_progress=on_progress
    )
    assert all(o.ok for o in outcomes) and peak == 4
    by_thread = {c.thread_id: c for c in fake_codex.exec_calls}
    assert len(by_thread) == 8
    for outcome, prompt in zip(outcomes, prompts, strict=True):
        assert outcome.result is not None
        data = outcome.result.path.read_bytes()
        assert text_chunks(data)["thread_id"] == outcome.result.thread_id
        call = by_thread[outcome.result.thread_id]
        assert call.stdin is not None and prompt in call.stdin
        assert "number" in outcome.result.path.name
    assert len({o.result.sha256 for o in outcomes if o.result}) == 8
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []


def test_async_outcomes_come_as_jobs_finish(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success", by_prompt={"slow": {"delay": 2.0}})

    async def main() -> list[int]:
        order = []
        async with agenerate_many(["a slow fox", "a quick hen"], out_dir=out) as outcomes:
            async for outcome in outcomes:
                order.append(outcome.index)
        return order

    assert anyio.run(main) == [1, 0]


def test_leaving_the_async_block_early_stops_the_rest(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure("success", by_prompt={"hang": {"scenario": "grandchild"}})

    async def main() -> BatchOutcome:
        async with agenerate_many(["a fox", "hang 1", "hang 2"], out_dir=out) as outcomes:
            async for outcome in outcomes:
                return outcome
        raise AssertionError("no outcome")

    first = anyio.run(main)
    assert first.index == 0 and first.ok
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []
    assert [p.name for p in out.iterdir()] == [first.result.path.name]  # type: ignore[union-attr]


def test_cancelling_a_batch_ends_every_tree(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure("grandchild")

    async def main() -> None:
        with anyio.move_on_after(3):
            async with agenerate_many(["a", "b", "c"], concurrency=2, out_dir=out) as outcomes:
                async for _ in outcomes:
                    raise AssertionError("nothing should finish")

    anyio.run(main)
    assert len(fake_codex.exec_calls) == 2
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []
    assert list(out.iterdir()) == []


def test_every_file_is_checked_before_any_job(
    fake_codex: FakeCodex, out: Path, tmp_path: Path
) -> None:
    """A problem with request 3's files must not surface after requests 0-2 were paid for."""
    (out / "sub").mkdir(parents=True)
    (out / "taken.png").write_bytes(b"mine")
    cases = [
        ({"output": "hen.jpg"}, "output_not_png"),
        ({"references": [str(tmp_path / "missing.png")]}, "invalid_reference"),
        ({"output": "taken.png"}, "output_exists"),
        ({"output": "nodir/t.png"}, "output_dir_missing"),
        ({"output": "sub/../first.png"}, "duplicate_output"),
        ({"output": "~no-such-user-here/x.png"}, "invalid_output"),
    ]
    for extra, reason in cases:
        requests = [{"prompt": "a fox", "output": "first.png"}, "a hen", {"prompt": "x", **extra}]
        with pytest.raises(InputError) as info:
            generate_many(requests, out_dir=out)
        assert info.value.reason == reason, extra
        assert info.value.message.startswith(("request 2: ", "request 0 and request 2"))
    for bad in ({"timeout": 0}, {"retries": -1}, {"model": " "}, {"concurrency": 2.5}):
        with pytest.raises(InputError):
            generate_many(["a fox"], out_dir=out, **bad)
    with pytest.raises(InputError, match="not a list of requests"):
        generate_many("owl", out_dir=out)
    assert fake_codex.calls == [] and (out / "taken.png").read_bytes() == b"mine"


def test_a_bug_in_one_job_fails_only_that_job(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = client_module.make_image

    async def flaky(plan: Plan, *args: Any) -> Any:
        if "bug" in plan.request.prompt:
            raise ValueError("boom")
        return await real(plan, *args)

    monkeypatch.setattr(client_module, "make_image", flaky)
    outcomes = generate_many(["a fox", "a bug", "a hen"], out_dir=out)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"]
    error = outcomes[1].error
    assert error is not None and (error.kind, error.reason) == ("transient", "internal_error")
    assert "ValueError: boom" in error.message


def test_the_callers_own_error_is_not_grouped(fake_codex: FakeCodex, out: Path) -> None:
    async def main() -> None:
        async with agenerate_many(["a fox", "a hen"], out_dir=out) as outcomes:
            async for _ in outcomes:
                raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        anyio.run(main)
    assert survivors(fake_codex) == []


def test_a_rate_limit_pauses_new_jobs_but_does_not_stop_them(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_module, "RATE_LIMIT_PAUSE_S", 1.5)
    fake_codex.configure("success", by_prompt={"429": {"scenario": "rate_limited"}})
    started = time.monotonic()
    outcomes = generate_many(["a 429 fox", "a hen", "a cat"], concurrency=1, out_dir=out,
                             retries=0)  # fmt: skip
    assert [o.status for o in outcomes] == ["failed", "ok", "ok"]
    assert outcomes[0].error is not None and outcomes[0].error.reason == "rate_limited"
    assert time.monotonic() - started >= 1.5


def test_request_paths_may_be_path_objects(fake_codex: FakeCodex, out: Path) -> None:
    (outcome,) = generate_many([BatchRequest("a fox", output=Path("fox.png"))], out_dir=out)
    assert outcome.result is not None and outcome.result.path == out / "fox.png"
    assert outcome.to_dict()["request"]["output"] == "fox.png"  # type: ignore[index]


def test_lines_split_only_at_newlines() -> None:
    line = json.dumps({"prompt": "a fox\u2028on a hill"}, ensure_ascii=False)
    assert parse_batch("\ufeff" + line)[0].prompt == "a fox\u2028on a hill"
    assert [r.prompt for r in parse_batch("a fox\x0con snow\r\nb")] == ["a fox\x0con snow", "b"]


# --- the command line ------------------------------------------------------------------------


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "batch", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=dict(os.environ),
        timeout=60,
    )


def test_cli_json_lines_and_summary(fake_codex: FakeCodex, out: Path, tmp_path: Path) -> None:
    fake_codex.configure("success", by_prompt={"LIMIT": {"scenario": "usage_limit"}})
    batch = tmp_path / "jobs.jsonl"
    lines = [{"prompt": "a fox", "output": "fox.png"}, {"prompt": "a LIMIT hen"}, {"prompt": "x"}]
    batch.write_text("\ufeff" + "\n".join(json.dumps(line) for line in lines), "utf-8")
    result = cli(str(batch), "--out-dir", str(out), "--jobs", "1", "--json")
    assert result.returncode == 4, result.stderr
    *jobs, last = [json.loads(line) for line in result.stdout.splitlines()]
    statuses = [(j["index"], j["status"]) for j in jobs]
    assert statuses == [(0, "ok"), (1, "failed"), (2, "not_started")]
    assert jobs[0]["result"]["path"] == str(out / "fox.png") and (out / "fox.png").exists()
    assert jobs[1]["error"]["reason"] == "usage_limit"
    summary = last["summary"]
    counts = [summary[key] for key in ("jobs", "ok", "failed", "not_started")]
    assert counts == [3, 1, 1, 1]
    assert [j["line"] for j in jobs] == [1, 2, 3]
    assert summary["by_kind"] == {"quota": 2} and summary["retry_at"]
    assert summary["interrupted"] is False
    assert summary["elapsed_s"] > 0


def test_cli_plain_prompts_from_stdin(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success", by_prompt={"BROKEN": {"scenario": "invalid_png"}})
    result = cli("-", "--out-dir", str(out), "--retries", "0", stdin="a fox\n\na BROKEN hen\n")
    assert result.returncode == 5
    paths = result.stdout.splitlines()
    assert len(paths) == 1 and Path(paths[0]).parent == out and Path(paths[0]).exists()
    assert "error: line 3: " in result.stderr and "hint: " in result.stderr
    assert "batch: 1 ok, 1 failed, 0 not started in " in result.stderr


def test_cli_refuses_a_bad_file_before_running(
    fake_codex: FakeCodex, out: Path, tmp_path: Path
) -> None:
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "a fox"}\n{"prompt": "a hen", "aspekt": "square"}\n', "utf-8")
    result = cli(str(batch), "--out-dir", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith("error: line 2: unknown field 'aspekt'.\nhint: ")
    result = cli(str(tmp_path / "missing.jsonl"), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["reason"] == "batch_unreadable"
    batch.write_bytes(b"a fox \xff\n")
    assert "not UTF-8" in cli(str(batch)).stderr
    assert fake_codex.calls == [] and not out.exists()


def test_cli_interrupt_stops_every_job(
    fake_codex: FakeCodex, out: Path, private_tmp: Path, tmp_path: Path
) -> None:
    fake_codex.configure("grandchild")
    batch = tmp_path / "prompts.txt"
    batch.write_text("a fox\na hen\na cat\n", "utf-8")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codex_cli_image",
            "batch",
            str(batch),
            "--out-dir",
            str(out),
            "--json",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 30
    while sum(1 for c in fake_codex.exec_calls if c.helper_pid) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert json.loads(stdout)["summary"]["interrupted"] is True
    assert len(fake_codex.exec_calls) == 2
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []
    assert list(out.iterdir()) == []


def test_outcome_errors_are_codex_image_errors(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("unauthorized")
    (outcome,) = generate_many(["a fox"], out_dir=out, retries=0)
    assert outcome.status == "failed" and isinstance(outcome.error, CodexImageError)
    assert outcome.error.kind == "auth" and outcome.to_dict()["ok"] is False


def test_cli_stops_when_its_reader_goes_away(
    fake_codex: FakeCodex, out: Path, tmp_path: Path, private_tmp: Path
) -> None:
    """`codex-image batch ... --json | head -1` must not go on paying for images."""
    fake_codex.configure("success", delay=0.5)
    batch = tmp_path / "prompts.txt"
    batch.write_text("".join(f"picture {n}\n" for n in range(6)), "utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codex_cli_image", "batch", str(batch), "--out-dir", str(out),
         "--json", "-j", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 130
    assert json.loads(first)["ok"] is True and "Traceback" not in err
    assert len(fake_codex.exec_calls) <= 3
    assert survivors(fake_codex) == [] and list(private_tmp.iterdir()) == []

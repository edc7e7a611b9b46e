"""The long-lived ``Client``: warm state, a shared limit, closing that leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_cli_image import AuthError, Client, ImageRequest, InputError, TransientError
from codex_cli_image import client as client_module
from codex_cli_image.api import generate
from codex_cli_image.results import Progress
from codex_cli_image.testing import FakeCodex

from helpers import png_ok, survivors

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("private_tmp")]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The codex homes the client read a login from, one entry per read."""
    seen: list[Path] = []
    real = client_module.check_login

    def counting(home: Any, **kwargs: Any) -> Any:
        seen.append(Path(home) if home else Path(os.environ["CODEX_HOME"]))
        return real(home, **kwargs)

    monkeypatch.setattr(client_module, "check_login", counting)
    return seen


def version_probes(fake: FakeCodex) -> int:
    return sum(1 for call in fake.calls if call.argv == ["--version"])


def test_a_reused_client_probes_the_version_and_reads_the_login_once(
    fake_codex: FakeCodex, out: Path, logins: list[Path]
) -> None:
    with Client(timeout=30) as client:
        results = [client.generate(ImageRequest(f"fox {n}", output=out)) for n in range(4)]
    assert [png_ok(r.path.read_bytes()) for r in results] == [True] * 4
    assert len({r.path for r in results}) == 4
    assert version_probes(fake_codex) == 1 and len(fake_codex.exec_calls) == 4
    assert len(logins) == 1


def test_calls_starting_together_share_one_probe(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure("success", version_delay=0.5)
    results: list[Any] = []
    with Client(timeout=30, concurrency=3) as client:
        threads = [
            threading.Thread(
                target=lambda: results.append(client.generate(ImageRequest("a fox", output=out)))
            )  # fmt: skip
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(results) == 3 and version_probes(fake_codex) == 1


def test_a_changed_login_is_read_again_before_the_next_image(
    fake_codex: FakeCodex, out: Path, logins: list[Path]
) -> None:
    """A reused client must never allow a run on a stale verdict, nor refuse on one."""
    auth = fake_codex.codex_home / "auth.json"
    with Client(timeout=30) as client:
        client.generate(ImageRequest("a fox", output=out))
        good = auth.read_text("utf-8")
        auth.write_text(json.dumps({"OPENAI_API_KEY": "sk-test", "auth_mode": "apikey"}), "utf-8")
        with pytest.raises(AuthError) as info:
            client.generate(ImageRequest("a hen", output=out))
        assert len(fake_codex.exec_calls) == 1  # refused before codex ran: no quota spent
        assert "sk-test" not in str(info.value.to_dict())
        auth.write_text(good, "utf-8")  # signed in again: seen at once
        client.generate(ImageRequest("a cat", output=out))
        client.generate(ImageRequest("a cow", output=out))
    assert len(fake_codex.exec_calls) == 3 and len(logins) == 3


def test_an_auth_failure_during_a_run_voids_the_verdict(
    fake_codex: FakeCodex, out: Path, logins: list[Path]
) -> None:
    with Client(timeout=30, retries=0) as client:
        client.generate(ImageRequest("a fox", output=out))
        fake_codex.configure("unauthorized")
        with pytest.raises(AuthError):
            client.generate(ImageRequest("a hen", output=out))
        fake_codex.configure("success")
        client.generate(ImageRequest("a cat", output=out))
    assert len(logins) == 2  # the first image's verdict, then read again after the failure


def test_a_replaced_codex_is_found_and_probed_again(fake_codex: FakeCodex, out: Path) -> None:
    with Client(timeout=30) as client:
        first = client.generate(ImageRequest("a fox", output=out))
        fake_codex.configure("success", version="0.172.0")
        assert client.generate(ImageRequest("a hen", output=out)).codex_version == (
            first.codex_version
        )  # the same file: its version is not asked again
        script = fake_codex.path.read_bytes()
        staging = fake_codex.path.with_name("codex.new")
        staging.write_bytes(script + b"# upgraded\n")
        staging.chmod(0o755)
        os.replace(staging, fake_codex.path)  # as an installer replaces the binary
        assert client.generate(ImageRequest("a cat", output=out)).codex_version == "0.172.0"
    assert version_probes(fake_codex) == 2


def feature_lists(fake: FakeCodex) -> int:
    return sum(1 for call in fake.calls if call.argv[-2:] == ["features", "list"])


def test_a_new_client_asks_codex_nothing_an_earlier_process_learned(
    fake_codex: FakeCodex, out: Path, tmp_path: Path
) -> None:
    """The version and feature names are kept on disk per binary: a command-line call (a new
    process, a new client) starts codex's turn without spawning codex to ask them again."""
    with Client(timeout=30) as client:
        client.generate(ImageRequest("a fox", output=out))
    assert version_probes(fake_codex) == 1 and feature_lists(fake_codex) == 1
    (entry,) = (tmp_path / "cache" / "binaries").iterdir()
    with Client(timeout=30) as client:
        client.generate(ImageRequest("a hen", output=out))
    assert version_probes(fake_codex) == 1 and feature_lists(fake_codex) == 1
    assert "--disable=plugins" in fake_codex.exec_calls[-1].argv  # from the kept names
    entry.write_text("{not json", "utf-8")  # a damaged entry is asked again, then rewritten
    with Client(timeout=30) as client:
        client.generate(ImageRequest("a cat", output=out))
    assert version_probes(fake_codex) == 2 and feature_lists(fake_codex) == 2
    assert json.loads(entry.read_text("utf-8"))["version"] == "0.169.0"


def test_an_unwritable_cache_costs_only_the_questions(
    fake_codex: FakeCodex, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be", "utf-8")
    monkeypatch.setenv("CODEX_IMAGE_CACHE_DIR", str(blocked))
    for prompt in ("a fox", "a hen"):
        with Client(timeout=30) as client:
            assert png_ok(client.generate(ImageRequest(prompt, output=out)).path.read_bytes())
    assert version_probes(fake_codex) == 2 and feature_lists(fake_codex) == 2
    assert blocked.read_text("utf-8") == "a file where the cache folder would be"


def test_concurrency_is_shared_by_every_call_of_a_client(fake_codex: FakeCodex, out: Path) -> None:
    """Single calls and a batch of one client together never run more than its limit."""
    fake_codex.configure("success", delay=0.6)
    running = 0
    most = 0
    queued: list[str] = []

    def track(progress: Progress) -> None:
        nonlocal running, most
        if progress.phase == "started":
            running += 1
            most = max(most, running)
        elif progress.phase == "finished":
            running -= 1
        elif progress.phase == "queued":
            queued.append(progress.message or "")

    async def main() -> None:
        async with Client(timeout=30, concurrency=2) as client:

            async def single(n: int) -> None:
                await client.agenerate(ImageRequest(f"fox {n}", output=out), on_progress=track)

            async def batch() -> None:
                async with client.agenerate_many(
                    ["hen 1", "hen 2"], out_dir=out, on_progress=lambda _, p: track(p)
                ) as outcomes:
                    assert [o.status async for o in outcomes] == ["ok", "ok"]

            async with anyio.create_task_group() as tasks:
                for n in range(3):
                    tasks.start_soon(single, n)
                tasks.start_soon(batch)

    anyio.run(main)
    assert most == 2 and running == 0
    assert len(fake_codex.exec_calls) == 5
    assert queued and "waiting" in queued[0]


def _wait_for_codex(fake: FakeCodex, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while sum(1 for c in fake.exec_calls if c.helper_pid) < count:
        assert time.monotonic() < deadline, "codex did not start"
        time.sleep(0.05)


def test_aclose_mid_run_ends_codex_and_removes_everything_before_it_returns(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure("grandchild")
    errors: list[BaseException] = []

    async def main() -> None:
        client = Client(timeout=60)

        async def one(n: int) -> None:
            try:
                await client.agenerate(ImageRequest(f"fox {n}", output=out))
            except TransientError as error:
                errors.append(error)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one, 1)
            tasks.start_soon(one, 2)
            await anyio.to_thread.run_sync(_wait_for_codex, fake_codex, 2)
            await client.aclose()
            # Nothing left at the moment aclose returns: no polling here.
            assert await anyio.to_thread.run_sync(nothing_left, fake_codex, private_tmp)
        with pytest.raises(InputError) as info:
            await client.agenerate("a hen")
        assert info.value.reason == "client_closed"

    anyio.run(main)
    assert [getattr(e, "reason", None) for e in errors] == ["cancelled", "cancelled"]
    assert list(out.iterdir()) == []


def test_a_sync_close_on_the_loop_of_its_calls_does_not_deadlock(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    """Regression guard (review): close() waited for calls that needed the very loop it was
    blocking, for a minute. Now it tells them to end and returns; they end as the loop runs."""
    fake_codex.configure("grandchild")
    errors: list[BaseException] = []

    async def main() -> float:
        client = Client(timeout=60)

        async def one() -> None:
            try:
                await client.agenerate(ImageRequest("a fox", output=out))
            except TransientError as error:
                errors.append(error)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one)
            await anyio.to_thread.run_sync(_wait_for_codex, fake_codex, 1)
            started = time.monotonic()
            client.close()  # blocking, on purpose, from the calls' own loop
            took = time.monotonic() - started
        return took

    assert anyio.run(main) < 5
    assert [getattr(e, "reason", None) for e in errors] == ["cancelled"]
    assert nothing_left(fake_codex, private_tmp) and list(out.iterdir()) == []


def test_close_from_another_thread_ends_a_blocking_call(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    fake_codex.configure("hang")
    client = Client(timeout=60)
    failures: list[BaseException] = []

    def blocking() -> None:
        try:
            client.generate(ImageRequest("a fox", output=out))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=blocking)
    thread.start()
    _wait_for_exec(fake_codex)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 15
    assert nothing_left(fake_codex, private_tmp)
    thread.join(15)
    assert len(failures) == 1 and isinstance(failures[0], TransientError)
    assert failures[0].reason == "cancelled"
    client.close()  # closing twice is fine


def nothing_left(fake: FakeCodex, scratch: Path) -> bool:
    return survivors(fake) == [] and list(scratch.iterdir()) == []


def _wait_for_exec(fake: FakeCodex, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while len(fake.exec_calls) < count:
        assert time.monotonic() < deadline, "codex did not start"
        time.sleep(0.05)


def test_a_call_waiting_for_a_slot_is_ended_by_close_without_starting_codex(
    fake_codex: FakeCodex, out: Path
) -> None:
    fake_codex.configure("hang")

    async def main() -> list[str]:
        reasons: list[str] = []
        client = Client(timeout=60, concurrency=1)

        async def one(prompt: str) -> None:
            try:
                await client.agenerate(ImageRequest(prompt, output=out))
            except TransientError as error:
                reasons.append(error.reason)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one, "first")
            await anyio.to_thread.run_sync(_wait_for_exec, fake_codex)
            tasks.start_soon(one, "second")  # waits: the only slot is taken
            await anyio.sleep(0.3)
            await client.aclose()
        return reasons

    assert anyio.run(main) == ["cancelled", "cancelled"]
    assert len(fake_codex.exec_calls) == 1


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"concurrency": 0}, "invalid_concurrency"),
        ({"concurrency": 17}, "invalid_concurrency"),
        ({"concurrency": True}, "invalid_concurrency"),
        ({"timeout": -1}, "invalid_timeout"),
        ({"retries": -1}, "invalid_retries"),
        ({"model": " "}, "invalid_model"),
    ],
)
def test_bad_settings_are_refused_when_the_client_is_made(
    settings: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InputError) as info:
        Client(**settings)
    assert info.value.reason == reason and info.value.hint


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("request_value", "reason"),
    [
        (ImageRequest(" "), "empty_prompt"),
        (ImageRequest("a fox", references="a.png"), "invalid_request"),
        (ImageRequest("a fox", transparent="yes"), "invalid_request"),  # type: ignore[arg-type]
        (ImageRequest("a fox", aspect="wide"), "invalid_aspect"),
        (ImageRequest("a fox", references=["r.png"] * 6), "too_many_references"),
        (42, "invalid_request"),
    ],
)
def test_bad_requests_are_refused_before_codex_runs(
    fake_codex: FakeCodex, request_value: Any, reason: str
) -> None:
    with Client() as client, pytest.raises(InputError) as info:
        client.generate(request_value)
    assert info.value.reason == reason and fake_codex.calls == []


def test_per_call_timeout_and_retries_override_the_clients(
    fake_codex: FakeCodex, out: Path
) -> None:
    fake_codex.configure("capacity")
    with Client(timeout=30, retries=3) as client, pytest.raises(TransientError):
        client.generate(ImageRequest("a fox", output=out), retries=0)
    assert len(fake_codex.exec_calls) == 1
    with Client() as client, pytest.raises(InputError) as info:
        client.generate("a fox", timeout=0)
    assert info.value.reason == "invalid_timeout"


def test_doctor_uses_the_clients_settings(fake_codex: FakeCodex, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    other.mkdir()
    with Client(codex_home=other) as client:
        report = client.doctor()
    assert report.codex_home == str(other) and not report.ok
    assert client.codex_home == other


def test_calls_that_begin_while_the_client_closes_never_start_codex(
    fake_codex: FakeCodex, out: Path
) -> None:
    """Regression guard (from the MCP server): a call arriving while the server stopped ran
    codex past the exit. The first call's codex ignores SIGTERM, so closing takes a while."""
    fake_codex.configure("hang_ignore_sigterm")
    client = Client(timeout=60)

    async def main() -> list[str]:
        reasons: list[str] = []

        async def one(prompt: str, after: float) -> None:
            await anyio.sleep(after)
            try:
                await client.agenerate(ImageRequest(prompt, output=out))
            except (InputError, TransientError) as error:
                reasons.append(error.reason)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one, "early", 0.0)
            await anyio.to_thread.run_sync(_wait_for_exec, fake_codex)
            tasks.start_soon(one, "late", 0.2)
            await client.aclose()
        return sorted(reasons)

    assert anyio.run(main) == ["cancelled", "client_closed"]
    assert len(fake_codex.exec_calls) == 1 and survivors(fake_codex) == []


@pytest.mark.bad_input
def test_signed_out_with_the_default_home_says_sign_in(
    fake_codex: FakeCodex, tmp_path: Path
) -> None:
    """Regression guard: the default home was checked as if it had been given, so a new user
    read "CODEX_HOME points to ~/.codex, which does not exist" instead of "run codex login"."""
    home = tmp_path / "new-user"
    home.mkdir()
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "CODEX_BIN": str(fake_codex.path)}
    with Client(env=env) as client, pytest.raises(AuthError) as info:
        client.generate("a fox")
    assert info.value.reason == "not_signed_in"
    assert f"codex home {home / '.codex'}, the default" in info.value.message
    assert "`codex login`" in info.value.hint and fake_codex.exec_calls == []


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_nothing_before_the_turn_writes_into_the_codex_home(
    fake_codex: FakeCodex, out: Path, private_tmp: Path
) -> None:
    """Regression guard: doctor promised to change nothing, but its probes ran codex with the
    user's home, and every codex start makes $CODEX_HOME/tmp/arg0-* there (the fake does so as
    the real one does, since this home is outside the temp dir)."""
    import subprocess

    home = fake_codex.codex_home
    before = _tree(home)
    with Client() as client:
        report = client.doctor(usage=False)
        assert report.ok and report.image_generation is True  # features read through the mirror
        assert _tree(home) == before
        # Reading the usage windows runs codex app-server in the home, as an image does (a
        # mirror would lose a token codex refreshes): its own tmp/arg0 folder is all it adds.
        assert client.doctor().usage_limits is not None
        assert _tree(home) == sorted([*before, "tmp", "tmp/arg0-linux"])
        (home / "auth.json").unlink()
        with pytest.raises(AuthError):
            client.generate(ImageRequest("a fox", output=out))
    assert _tree(home) == sorted(
        [*(p for p in before if p != "auth.json"), "tmp", "tmp/arg0-linux"]
    )
    assert fake_codex.exec_calls == [] and list(private_tmp.iterdir()) == []
    shutil.rmtree(home / "tmp")
    subprocess.run([fake_codex.path, "--version"], check=True, capture_output=True)
    assert (home / "tmp" / "arg0-linux").is_dir()  # what a probe in the user's home would do


def test_a_keyring_login_is_asked_each_time_not_reused(fake_codex: FakeCodex, out: Path) -> None:
    """Regression guard (review): a verdict from `codex login status` was reused while no file
    changed, but credentials in the OS keyring change without any file changing."""
    (fake_codex.codex_home / "config.toml").write_text(
        'cli_auth_credentials_store = "keyring"\n', "utf-8"
    )
    fake_codex.configure("success", login="chatgpt")
    with Client(timeout=30) as client:
        client.generate(ImageRequest("a fox", output=out))
        fake_codex.configure("success", login="apikey")  # signed in again, with an API key
        with pytest.raises(AuthError) as info:
            client.generate(ImageRequest("a hen", output=out))
    assert info.value.reason == "api_key_login" and len(fake_codex.exec_calls) == 1
    assert sum(1 for c in fake_codex.calls if c.argv[-2:] == ["login", "status"]) == 2


def test_time_in_the_queue_counts_against_the_timeout(fake_codex: FakeCodex, out: Path) -> None:
    """Regression guard (review): a call could wait for a slot without limit, then run its
    whole timeout: a host with its own deadline (Hermes: 420 s) had long given up."""
    fake_codex.configure("hang")

    async def main() -> tuple[str, float]:
        client = Client(timeout=60, concurrency=1)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(client.agenerate, ImageRequest("first", output=out))
            await anyio.to_thread.run_sync(_wait_for_exec, fake_codex)
            started = time.monotonic()
            with pytest.raises(TransientError) as info:
                await client.agenerate(ImageRequest("second", output=out), timeout=1)
            waited = time.monotonic() - started
            tasks.cancel_scope.cancel()
        await client.aclose()
        return info.value.reason, waited

    reason, waited = anyio.run(main)
    assert reason == "timeout" and waited < 10 and len(fake_codex.exec_calls) == 1


def test_a_batch_cancelled_while_paused_gives_its_slot_back(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard (review): leaving a batch while it paused for a 429 kept a slot of
    the client's limit for good; with concurrency 1 every later call then waited forever."""
    from codex_cli_image import batch as batch_module

    monkeypatch.setattr(batch_module, "RATE_LIMIT_PAUSE_S", 60.0)
    fake_codex.configure("success", by_prompt={"limited": {"scenario": "rate_limited"}})

    async def main() -> str:
        async with Client(timeout=30, concurrency=1, retries=0) as client:
            async with client.agenerate_many(["limited fox", "a hen"], out_dir=out) as outcomes:
                async for outcome in outcomes:
                    assert outcome.error is not None and outcome.error.reason == "rate_limited"
                    break  # leave while the batch waits out the pause, holding the next slot
            with anyio.fail_after(20):
                result = await client.agenerate(ImageRequest("a cat", output=out))
        return result.path.name

    assert anyio.run(main).endswith(".png")


def test_a_relative_codex_home_is_fixed_when_the_client_is_made(
    fake_codex: FakeCodex, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(fake_codex.codex_home.parent)
    client = Client(codex_home=fake_codex.codex_home.name, timeout=30)
    monkeypatch.chdir(tmp_path / "out")  # a daemon that changes directory later
    with client:
        assert client.generate(ImageRequest("a fox", output=out)).path.is_file()
    assert client.codex_home == fake_codex.codex_home


def test_a_cancel_before_the_preflight_thread_starts_does_not_wait() -> None:
    """Regression guard (review): anyio skips a worker call cancelled before it starts, so the
    shielded wait for it ran its full 30 s."""
    from codex_cli_image._sync import stoppable

    ran: list[bool] = []

    def step(*, stop: threading.Event) -> None:
        ran.append(True)

    async def main() -> float:
        started = time.monotonic()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await stoppable(step)
        return time.monotonic() - started

    assert anyio.run(main) < 5 and ran == []


def test_a_second_writer_of_an_output_is_refused_before_codex_runs(
    fake_codex: FakeCodex, tmp_path: Path
) -> None:
    """#30 item 3: two calls to one output with overwrite=True both "succeeded", and one result
    described a file holding the other image. The second is refused, naming the path, before
    codex runs for it; once the first is done the file may be replaced again."""
    fake_codex.configure("success", delay=1.5)
    target = tmp_path / "fox.png"
    options = {"output": target, "overwrite": True, "timeout": 30}
    first = threading.Thread(target=generate, args=("a fox",), kwargs=options)
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not fake_codex.exec_calls and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(InputError) as info:
            generate("a hen", output=target, overwrite=True, timeout=30)
        assert info.value.reason == "output_in_use" and str(target) in info.value.message
        assert len(fake_codex.exec_calls) == 1
    finally:
        first.join(30)
    fake_codex.configure("success")
    assert generate("a hen", output=target, overwrite=True, timeout=30).path == target


def test_close_from_another_thread_gives_every_job_of_a_batch_its_outcome(
    fake_codex: FakeCodex, out: Path
) -> None:
    """#30 item 5: a close during generate_many raised "nothing was saved" while an image had
    been saved. Now each request gets its outcome: the saved image as ok, with its path, the
    one in flight and the one never started as cancelled."""
    fake_codex.configure("success", by_prompt={"slow": {"scenario": "hang"}})
    client = Client(timeout=60, concurrency=1)
    closer = threading.Thread(target=lambda: (_wait_for_exec(fake_codex, 2), client.close()))
    closer.start()
    try:
        outcomes = client.generate_many(["a fox", "a slow hen", "a cat"], out_dir=out)
    finally:
        closer.join(30)
    assert [o.status for o in outcomes] == ["ok", "failed", "not_started"]
    assert outcomes[0].result is not None and outcomes[0].result.path.exists()
    assert [o.error.reason for o in outcomes[1:] if o.error] == ["cancelled", "cancelled"]
    assert len(fake_codex.exec_calls) == 2


def test_a_close_while_the_image_is_delivered_reports_the_saved_image(
    fake_codex: FakeCodex, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#30 item 5: with fit=, a close during delivery said "nothing was saved" about an image
    that existed. The image is paid for: the close waits for its delivery, and it is reported."""
    pytest.importorskip("PIL")
    from codex_cli_image import pipeline

    delivering = threading.Event()
    real_fit = pipeline._fit_beside

    def slow_fit(*args: Any) -> Any:
        delivering.set()
        time.sleep(1.0)
        return real_fit(*args)

    monkeypatch.setattr(pipeline, "_fit_beside", slow_fit)
    client = Client(timeout=60)
    closer = threading.Thread(target=lambda: (delivering.wait(30), client.close()))
    closer.start()
    try:
        result = client.generate(ImageRequest("a fox", output=out / "fox.png", fit="48x32"))
    finally:
        closer.join(30)
    assert result.path.exists() and result.fitted is not None and result.fitted.path.exists()


def test_the_usage_windows_are_read_without_an_image(fake_codex: FakeCodex) -> None:
    """#32: a module function and a Client method (sync and async), through codex app-server:
    no exec, nothing left running; a hang is a timeout, ended."""
    import codex_cli_image

    limits = codex_cli_image.usage_limits()
    assert limits.plan == "plus" and limits.primary is not None
    assert (limits.primary.used_percent, limits.primary.window_minutes) == (34.0, 300)
    assert limits.secondary is not None and limits.secondary.window_minutes == 10080
    read = anyio.run(codex_cli_image.ausage_limits)
    assert read.plan == "plus" and read.primary is not None and read.primary.used_percent == 34.0
    with Client() as client:
        again = client.usage_limits()
        assert again.primary is not None and again.primary.used_percent == 34.0
        fake_codex.configure("success", usage_read="hang", hang_max=30)
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            client.usage_limits(timeout=1)
        assert caught.value.reason == "timeout" and time.monotonic() - started < 10
    assert fake_codex.exec_calls == [] and len(fake_codex.app_server_calls) == 4
    deadline = time.monotonic() + 10
    while survivors(fake_codex) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not survivors(fake_codex)
    with pytest.raises(InputError):
        client.usage_limits()  # closed


@pytest.mark.parametrize(("version", "taken"), [("0.142.0", False), ("0.149.0", True)])
def test_code_mode_waits_for_the_image_where_codex_takes_the_setting(
    fake_codex: FakeCodex, out: Path, version: str, taken: bool
) -> None:
    """#31: the exec cell's yield is our timeout (one cell waits for a slow image instead of a
    model request every 10 s) where the release takes it; asked once per binary, then kept."""
    fake_codex.configure("success", version=version)
    with Client(timeout=200) as client:
        client.generate("a fox", output=out / "a.png")
    probes = [c for c in fake_codex.calls if c.argv[-2:] == ["features", "list"]]
    assert len(probes) == (1 if taken else 2)  # with the setting, then (refused) without
    assert fake_codex.exec_calls[0].raw["yield_ms"] == (200000 if taken else None)
    with Client(timeout=200) as client:  # a new process would read the kept answer too
        client.generate("a hen", output=out / "b.png")
    assert len([c for c in fake_codex.calls if c.argv[-2:] == ["features", "list"]]) == len(probes)
    assert fake_codex.exec_calls[1].raw["yield_ms"] == (200000 if taken else None)


def test_a_usage_limit_codex_recorded_is_answered_without_codex_until_it_resets(
    fake_codex: FakeCodex, out: Path
) -> None:
    """#32: a long-lived client (so MCP, Hermes and serve) remembers a usage limit codex
    recorded, from a refusal or from a window the last image used up, and answers with it
    without running codex; a fresh read of free windows lifts it."""
    from codex_cli_image import QuotaError

    with Client() as client:
        fake_codex.configure("usage_limit")
        with pytest.raises(QuotaError):
            client.generate("a fox", output=out / "a.png")
        fake_codex.configure("success")
        with pytest.raises(QuotaError) as held:
            client.generate("a fox", output=out / "a.png")
        assert held.value.reason == "usage_limit" and held.value.retry_after_s
        assert len(fake_codex.exec_calls) == 1
        from codex_cli_image.usage import UsageLimits, UsageWindow

        # An image's record with free windows may be older than the refusal: it lifts nothing.
        client._note_usage(UsageLimits(UsageWindow(34.0, 300, time.time() + 3600)))
        with pytest.raises(QuotaError):
            client.generate("a fox", output=out / "a.png")
        client.usage_limits()  # a fresh read, 34 % and 12 % used: the limit was lifted
        assert client.generate("a fox", output=out / "b.png").path.exists()
        # The image that used the window up: the next call is refused at once, with its reset.
        fake_codex.configure("success", usage_windows={"primary": 100.0, "secondary": 40.0})
        made = client.generate("a hen", output=out / "c.png")
        assert made.usage_limits is not None and made.usage_limits.reached is not None
        with pytest.raises(QuotaError) as full:
            client.generate("a cat", output=out / "d.png")
        assert "5 h window 100 % used" in full.value.message and full.value.retry_at
        assert 3600 < (full.value.retry_after_s or 0) <= 2 * 3600
        assert len(fake_codex.exec_calls) == 3
    with Client() as fresh:  # the memory is the client's: another one asks codex
        fake_codex.configure("success")
        fresh.generate("a cat", output=out / "e.png")
    assert len(fake_codex.exec_calls) == 4


def test_a_window_used_up_with_credits_is_not_held(fake_codex: FakeCodex, out: Path) -> None:
    """#32 (review): credits pay beyond a used-up window: the next call runs codex."""
    fake_codex.configure("success", usage_windows={"primary": 100.0, "secondary": 40.0,
                                                   "credits": True})  # fmt: skip
    with Client() as client:
        made = client.generate("a hen", output=out / "a.png")
        assert made.usage_limits is not None and made.usage_limits.credits
        client.generate("a cat", output=out / "b.png")
    assert len(fake_codex.exec_calls) == 2

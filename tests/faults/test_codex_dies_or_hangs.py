"""Faults of codex itself: killed with SIGKILL, hanging before or after the image, writing the
image slowly in pieces. Each ends in the right kind and reason, or in a delivered image, and
`guard.verify()` checks processes, temporary files, the user's files, auth.json and secrets."""

from __future__ import annotations

import hashlib
import signal
import time
from typing import Any

import pytest

from codex_cli_image.results import Progress

from faultkit import Guard, fake_process, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]


def test_sigkill_before_the_image(guard: Guard) -> None:
    """codex (and the helper it started) dies without a word: a retried crash, then reported."""
    guard.fake.configure("success", sigkill_at="turn", helper=True)
    error = guard.fails()
    assert (error.kind, error.reason) == ("transient", "codex_failed")
    assert "killed by SIGKILL" in error.message and error.thread_id
    assert len(guard.fake.exec_calls) == 2  # retried once: a crash may not happen again
    assert guard.fake.generated_images() == []
    guard.verify()


def test_sigkill_from_outside_mid_run(guard: Guard) -> None:
    """The OOM killer's view: codex, found by pid in our process tree, killed mid-turn."""
    guard.fake.configure("success", delay=30, helper=True)
    killed: list[int] = []

    def kill(progress: Progress) -> None:
        if progress.phase != "thread_started":
            return
        wait_for(lambda: guard.fake.exec_calls and guard.fake.exec_calls[-1].helper_pid)
        proc = fake_process(guard.fake)
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        killed.append(proc.pid)

    started = time.monotonic()
    error = guard.fails(on_progress=kill, retries=0)
    assert killed == [guard.fake.exec_calls[0].pid]
    assert (error.kind, error.reason) == ("transient", "codex_failed")
    assert "killed by SIGKILL" in error.message and time.monotonic() - started < 20
    guard.verify()


def test_sigkill_while_the_image_is_written(guard: Guard) -> None:
    """Half a file is no image: reported as invalid, not retried, not delivered."""
    guard.fake.configure("success", sigkill_at="image", write_pieces=4, piece_delay=0.2)
    error = guard.fails()
    assert (error.kind, error.reason) == ("transient", "invalid_image")
    assert len(guard.fake.exec_calls) == 1
    (partial,) = guard.fake.generated_images()  # codex's own half-written file, left as it is
    assert hashlib.sha256(partial.read_bytes()).hexdigest() != _meant(guard)
    guard.verify()


def test_sigkill_right_after_the_image_is_saved(guard: Guard) -> None:
    """The image was complete before codex died: it is delivered."""
    guard.fake.configure("success", sigkill_at="saved")
    result = guard.generate()
    assert result.path == guard.target and result.sha256 == _meant(guard)
    assert guard.fake.generated_images() == []  # codex's copy, delivered, is removed
    guard.verify(delivered=[guard.target])


@pytest.mark.parametrize(
    ("scenario", "options"),
    [
        ("hang", {}),
        ("hang_ignore_sigterm", {"helper": True}),
        ("grandchild", {}),
    ],
)
def test_hang_before_the_image(guard: Guard, scenario: str, options: dict[str, Any]) -> None:
    guard.fake.configure(scenario, **options)
    started = time.monotonic()
    error = guard.fails(timeout=2)
    assert (error.kind, error.reason) == ("transient", "timeout")
    assert "within 2 s" in error.message
    # The deadline, the grace period for SIGTERM, the kill: nothing waits on codex beyond that.
    assert time.monotonic() - started < 15
    assert len(guard.fake.exec_calls) == 1  # a timeout is not retried
    guard.verify()


@pytest.mark.parametrize(
    "options", [{}, {"ignore_sigterm": True, "helper": True}], ids=["obeys", "ignores-sigterm"]
)
def test_hang_after_the_image(guard: Guard, options: dict[str, Any]) -> None:
    """The image is taken as soon as it is complete; codex is stopped however it resists."""
    guard.fake.configure("hang_after_image", **options)
    started = time.monotonic()
    result = guard.generate(timeout=60)
    assert time.monotonic() - started < 20 and result.sha256 == _meant(guard)
    assert result.usage is None  # stopped before its closing message
    guard.verify(delivered=[guard.target])


def test_hang_after_the_image_while_waiting_for_the_turn(guard: Guard) -> None:
    """wait_for_turn waits for the closing message, but not past the deadline: the image is
    still delivered."""
    guard.fake.configure("hang_after_image", ignore_sigterm=True)
    started = time.monotonic()
    result = guard.generate(timeout=3, wait_for_turn=True)
    assert 3 <= time.monotonic() - started < 20 and result.sha256 == _meant(guard)
    guard.verify(delivered=[guard.target])


@pytest.mark.parametrize(("pieces", "delay"), [(6, 0.25), (3, 1.0)])
def test_image_written_slowly_in_pieces(guard: Guard, pieces: int, delay: float) -> None:
    """A part-written file is never taken for the image (it is not even offered as invalid)."""
    guard.fake.configure("success", write_pieces=pieces, piece_delay=delay)
    saved: list[float] = []
    started = time.monotonic()

    def note(progress: Progress) -> None:
        if progress.phase == "image_saved":
            saved.append(time.monotonic() - started)

    result = guard.generate(on_progress=note)
    assert result.sha256 == _meant(guard) and len(guard.fake.exec_calls) == 1
    assert len(saved) == 1 and saved[0] >= (pieces - 1) * delay
    guard.verify(delivered=[guard.target])


def _meant(guard: Guard) -> str:
    """The sha256 of the image the fake codex set out to write."""
    digest = guard.fake.exec_calls[-1].raw["image_sha256"]
    assert isinstance(digest, str)
    return digest

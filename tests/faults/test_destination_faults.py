"""Faults of the destination: the disk is full (a real, tiny tmpfs, and ENOSPC injected where
output.py writes and syncs), the folder is removed while codex works. The image is never lost:
codex's copy is kept and named; the user's file at the output path survives intact."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from codex_cli_image import CodexImageError
from codex_cli_image import output as output_module
from codex_cli_image.results import Progress
from codex_cli_image.testing import make_png

from faultkit import Guard
from helpers import IN_CI

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

NO_SPACE = os.strerror(errno.ENOSPC)


def _kept_copy(guard: Guard, error: CodexImageError) -> Path:
    """codex's copy of the image: still there, complete, named in the message."""
    (copy,) = guard.fake.generated_images()
    assert str(copy) in error.message
    meant = guard.fake.exec_calls[-1].raw["image_sha256"]
    assert _sha256(copy) == meant
    assert "copy it from" in error.hint  # not "retry": that would pay for the image again
    return copy


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a full disk: a real one ---------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs holding the user's files (a picture at image.png), then filled to the
    last byte."""
    mount = shutil.which("mount")
    umount = shutil.which("umount")
    folder = tmp_path / "full-disk"
    folder.mkdir()
    if not (sys.platform.startswith("linux") and os.geteuid() == 0 and mount and umount):
        _unavailable("a tmpfs needs Linux, root and mount(8)")
    assert mount is not None and umount is not None
    made = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        _unavailable(f"mount -t tmpfs failed: {made.stderr.strip()}")
    try:
        (folder / "notes.txt").write_text("the user's, on the full disk\n")
        (folder / "image.png").write_bytes(make_png(20, 10, "the user's picture on that disk"))
        fd = os.open(folder / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield folder
    finally:
        if subprocess.run([umount, str(folder)], capture_output=True).returncode != 0:
            subprocess.run([umount, "-l", str(folder)], capture_output=True)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI runs as root and must run this fault)")
    pytest.skip(reason)


def test_full_disk_over_the_users_file(guard: Guard, full_disk: Path) -> None:
    """ENOSPC while writing: the user's file at the output path is not truncated or replaced."""
    target = full_disk / "image.png"
    guard.watch(full_disk)
    error = guard.fails(output=target, overwrite=True)
    assert (error.kind, error.reason) == ("input", "output_write_failed")
    assert NO_SPACE in error.message and str(target) in error.message
    _kept_copy(guard, error)
    guard.verify()


def test_full_disk_through_the_cli(guard: Guard, full_disk: Path) -> None:
    guard.watch(full_disk)
    result = guard.cli("generate", "a lighthouse", "-o", str(full_disk), "--json")
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert (error["kind"], error["reason"]) == ("input", "output_write_failed")
    (copy,) = guard.fake.generated_images()
    assert NO_SPACE in error["message"] and str(copy) in error["message"]
    guard.verify()


# --- a full disk: ENOSPC injected where output.py writes and syncs ---------------------------


class _FullHandle:
    """A file whose disk fills up halfway through the write."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __enter__(self) -> _FullHandle:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, NO_SPACE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class _FullDiskOs:
    """The ``os`` module as output.py sees it, on a disk that is full at ``at``."""

    def __init__(self, at: str) -> None:
        self.at = at

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = os.fdopen(fd, *args, **kwargs)
        return _FullHandle(handle) if self.at == "write" else handle

    def fsync(self, fd: int) -> None:
        if self.at == "fsync":  # delayed allocation, NFS, quotas: the error comes at sync
            raise OSError(errno.ENOSPC, NO_SPACE)
        os.fsync(fd)


@pytest.mark.parametrize("at", ["write", "fsync"])
def test_injected_enospc(guard: Guard, monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    monkeypatch.setattr(output_module, "os", _FullDiskOs(at))
    error = guard.fails()
    assert (error.kind, error.reason) == ("input", "output_write_failed")
    assert NO_SPACE in error.message and str(guard.target) in error.message
    assert "Free some space" in error.hint
    _kept_copy(guard, error)
    guard.verify()  # the user's file at the output path intact, no partial file beside it


# --- the destination folder removed while codex works ----------------------------------------


def test_folder_removed_mid_run(guard: Guard) -> None:
    doomed = guard.root / "doomed"
    doomed.mkdir()
    guard.fake.configure("success", delay=0.5)

    def remove(progress: Progress) -> None:
        if progress.phase == "thread_started":
            shutil.rmtree(doomed)

    error = guard.fails(output=doomed / "image.png", overwrite=False, on_progress=remove)
    assert (error.kind, error.reason) == ("input", "output_write_failed")
    assert os.strerror(errno.ENOENT) in error.message and "removed" in error.hint
    _kept_copy(guard, error)
    assert not doomed.exists()  # never recreated behind the user's back
    guard.verify()


def test_folder_removed_mid_run_through_the_cli(guard: Guard) -> None:
    doomed = guard.root / "doomed"
    doomed.mkdir()
    guard.fake.configure("success", delay=2)  # time enough to see the event and act on it
    running = guard.start_cli("generate", "a lighthouse", "-o", str(doomed), "--json", "--events")
    running.wait_for_event("thread_started")
    shutil.rmtree(doomed)
    code, out, err = running.finish()
    assert code == 2, err
    error = json.loads(out)["error"]
    assert (error["kind"], error["reason"]) == ("input", "output_write_failed")
    (copy,) = guard.fake.generated_images()
    assert str(copy) in error["message"]
    guard.verify()

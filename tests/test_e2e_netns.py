"""Runs tests/e2e (the real Codex CLI against the mock backend) in a private network namespace.

The namespace has only loopback: nothing a real codex does can reach another address. Making one
needs root and unshare(1); without them the end-to-end tests are skipped here, and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from helpers import E2E_SUMMARY, IN_CI, NPM_CACHE, REPO

pytestmark = [pytest.mark.real_codex, pytest.mark.timeout(1800)]


def test_end_to_end_suite_in_a_private_network_namespace(
    real_codex_shim: object, capsys: pytest.CaptureFixture[str]
) -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip") or "/usr/sbin/ip"
    if not (
        sys.platform.startswith("linux") and unshare and os.geteuid() == 0 and os.path.exists(ip)
    ):
        reason = "a private network namespace needs Linux, root, unshare and ip"
        if IN_CI:
            pytest.fail(reason + " (CI must run the end-to-end tests)")
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # no -k leaks in
    env |= {"CODEX_IMAGE_E2E_NETNS": "1", "CODEX_IMAGE_NPM_CACHE": str(NPM_CACHE)}
    command = [unshare, "-n", "--", "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
               sys.executable, "-m", "pytest", "tests/e2e", "-v", "-p", "no:cacheprovider",
               ]  # fmt: skip
    inner = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    # Past the deadline, pytest and every codex it started are killed; the loop below then ends.
    killer = threading.Timer(1700, os.killpg, (inner.pid, signal.SIGKILL))
    killer.start()
    lines: list[str] = []
    try:
        assert inner.stdout is not None
        with capsys.disabled():  # the inner run's lines as they come: it takes minutes
            sys.stdout.write("\n")
            for line in inner.stdout:
                lines.append(line)
                sys.stdout.write(f"  e2e | {line}")
                sys.stdout.flush()
        inner.wait()
    finally:
        killer.cancel()
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait()
        if inner.stdout is not None:
            inner.stdout.close()
    assert inner.returncode == 0, "end-to-end tests failed (output above)"
    summary = "".join(lines).strip().splitlines()[-1] if lines else ""
    assert " passed" in summary and "deselected" not in summary, summary
    E2E_SUMMARY.append(summary.strip("= "))

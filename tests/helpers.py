"""Shared test helpers: paths, an independent PNG check, a private network namespace prefix."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from codex_cli_image.testing import FakeCodex, realcodex

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
# Resolved before any test points HOME elsewhere.
NPM_CACHE = realcodex.cache_root()
E2E_SUMMARY: list[str] = []
"""The closing line of the inner end-to-end run (tests/test_e2e_netns.py), once it ran."""
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def png_ok(data: bytes) -> bool:
    """A small independent PNG check: signature, chunk CRCs, IHDR first, IEND last."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    pos, kinds = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            return False
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or int.from_bytes(crc, "big") != zlib.crc32(kind + body):
            return False
        kinds.append(kind)
        pos += 12 + length
    return bool(kinds) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND"


def offline(argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` with a private network namespace when we can make one (root + unshare)."""
    unshare = shutil.which("unshare")
    if sys.platform.startswith("linux") and unshare and os.geteuid() == 0:
        return [unshare, "-n", *argv]
    return list(argv)


def run_inner_suite(
    python: Path,
    tests: str,
    label: str,
    env: dict[str, str],
    capsys: Any,
    extra: Sequence[str] = (),
) -> None:
    """Run ``tests`` with pytest in another environment's ``python`` (offline, with loopback
    only, where a namespace can be made), its lines shown under ``label``; fail unless every
    test passed and none was skipped."""
    command = [str(python), "-m", "pytest", tests, "-v", "-p", "no:cacheprovider", *extra]
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if offline(["x"]) != ["x"] and os.path.exists(ip):  # a namespace with loopback only
        command = offline(["sh", "-c", f'{ip} link set lo up && exec "$@"', "sh", *command])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    run = subprocess.run(command, cwd=REPO, env={**clean, **env}, capture_output=True, text=True,
                         timeout=840)  # fmt: skip
    with capsys.disabled():
        sys.stdout.write(
            "\n" + "".join(f"  {label} | {line}\n" for line in run.stdout.splitlines())
        )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


def survivors(fake: FakeCodex) -> list[int]:
    """The fake codex processes (and their helpers) of ``fake`` that are still running."""
    pids = [c.pid for c in fake.calls] + [c.helper_pid for c in fake.calls if c.helper_pid]
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test sends SIGINT or SIGHUP: start it with both at their
    default disposition. A suite started as a background job (``cmd &``, nohup, many CI agents)
    inherits SIGINT (nohup: SIGHUP) as ignored, which Python and our CLI rightly keep; the test
    means a Ctrl-C, a closed terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# What each refusal of the images endpoint (codex_cli_image.testing.backend.image_refusal) must
# come out as: kind, reason, our CLI's exit code, the backend's words the message must quote, and
# the seconds until retry (None: no retry time; usage_limit_at's is about 7200, made at start).
REFUSALS: dict[str, tuple[str, str, int, str, float | None]] = {
    "moderation": ("input", "content_policy", 2, "rejected by the safety system", None),
    "unauthorized": ("auth", "unauthorized", 3, "authentication token is expired", None),
    "not_supported": ("auth", "image_generation_refused", 3, "not supported for this account",
                      None),
    "rate_limited": ("quota", "rate_limited", 4, "Please try again in 12s", 12.0),
    "rate_limited_minutes": ("quota", "rate_limited", 4, "try again in 1m30s", 90.0),
    "usage_limit": ("quota", "usage_limit", 4, "usage limit for images", 5400.0),
    "usage_limit_at": ("quota", "usage_limit", 4, "hit your usage limit", 7200.0),
    "server_error": ("transient", "backend_error", 5, "error while processing your request",
                     None),
}  # fmt: skip


def check_refusal(name: str, error: dict[str, object], returncode: int) -> None:
    """The CLI's ``--json`` error for the images endpoint's refusal ``name`` is sorted right."""
    kind, reason, code, words, retry_after = REFUSALS[name]
    assert (error["kind"], error["reason"], returncode) == (kind, reason, code), error
    assert words in str(error["message"]), error["message"]
    if retry_after is None:
        assert error["retry_after_s"] is None
    else:
        seconds = error["retry_after_s"]
        assert isinstance(seconds, float) and retry_after - 120 <= seconds <= retry_after
        assert error["retry_at"]


def mcp_generate(shim: Path, out: Path, prompt: str) -> Any:
    """``generate_image`` called on `codex-image mcp` (the real codex at ``shim``) by the MCP
    SDK's stdio client, as an agent calls it; returns the tool's result."""
    import anyio
    from mcp import Client, StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codex_cli_image", "mcp", "--out-dir", str(out), "--codex", str(shim),
              "--allow-relay"],
        env=dict(os.environ),
    )  # fmt: skip

    async def main() -> Any:
        async with Client(server) as client:
            return await client.call_tool("generate_image", {"prompt": prompt})

    return anyio.run(main)


class ServeRun:
    """A `codex-image serve` started by :func:`real_serve`: its URL, and its exit code once
    stopped."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.code: int | None = None


@contextlib.contextmanager
def real_serve(shim: Path, log: Path, env: dict[str, str]) -> Iterator[ServeRun]:
    """`codex-image serve` on a free port with the codex at ``shim`` (its stderr in ``log``),
    stopped with SIGTERM on leaving."""
    with log.open("w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "codex_cli_image", "serve", "--port", "0", "--codex",
             str(shim), "--allow-relay"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
        )  # fmt: skip
    try:
        assert server.stdout is not None
        run = ServeRun(server.stdout.readline().strip())
        yield run
    finally:
        server.terminate()
        code = server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    run.code = code

"""The subscription's usage windows without a model turn: ``codex app-server`` (JSON-RPC, one
JSON object a line on stdio) is asked ``initialize``, told ``initialized``, then asked
``account/rateLimits/read``, which codex answers from the backend's usage endpoint (codex-facts
section 11; 0.125-0.171). Nothing is spent. Reading the answer is pure (:mod:`.usage`); this
is the process around it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from . import __version__, _proc
from ._watchdog import WATCHDOG
from .errors import AuthError, CodexImageError, LaunchError, TransientError
from .launcher import Codex
from .redact import read_login_secrets, redact
from .runner import start_codex, stop_codex
from .usage import UsageLimits, from_app_server

__all__ = ["READ_TIMEOUT_S", "read_usage_limits"]

READ_TIMEOUT_S = 30.0
_LINE_LIMIT = 1 << 20  # the answers are small; a longer line is not one of them
_READ_ID = 2
# codex's words when the backend refused the login: "... failed: 401 Unauthorized; ..." (a 403
# may be a proxy's challenge page: not a verdict on the login).
_REFUSED = re.compile(r"failed: 401\b|\bnot logged in\b", re.IGNORECASE)


async def read_usage_limits(
    codex: Codex,
    codex_home: Path,
    *,
    disable: tuple[str, ...] = (),
    timeout_s: float = READ_TIMEOUT_S,
) -> UsageLimits:
    """The usage windows as the backend reports them now (their plan too), through ``codex
    app-server``; codex's tree is ended before this returns. A login the backend refuses is an
    :class:`AuthError`; no answer in ``timeout_s``, or one codex could not get, a
    :class:`TransientError`."""
    secrets = await anyio.to_thread.run_sync(read_login_secrets, codex_home)
    workspace = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "codex-image-"))
    argv = codex.command(
        # Start-up work a read does not need (plugin and app listings: requests of their own).
        *(f"--disable={name}" for name in disable if name in ("plugins", "apps")),
        "--config",
        "analytics.enabled=false",
        "app-server",
    )
    try:
        env = {**codex.env, "CODEX_HOME": str(codex_home)}
        process = await start_codex(argv, cwd=workspace, env=env, stderr=subprocess.DEVNULL)
    except BaseException as exc:  # a cancel while it starts too: no folder left behind
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove, workspace)
        if not isinstance(exc, OSError):
            raise
        raise LaunchError(
            f"Could not start `{codex.path} app-server`: {exc.strerror or exc}.",
            reason="codex_not_runnable",
            hint="Check that codex runs (`codex --version`), or reinstall it.",
        ) from None
    job = _proc.ProcessJob()
    try:
        WATCHDOG.watch(process.pid, str(workspace))
        job.add(process.pid)
        with anyio.move_on_after(timeout_s):
            return _limits(await _ask(process), secrets)
        raise TransientError(
            f"codex app-server did not report the usage windows within {timeout_s:.0f} s.",
            reason="timeout",
            hint="Check the network, then ask again.",
        )
    finally:
        with anyio.CancelScope(shield=True):
            await stop_codex(process, job)
            await anyio.to_thread.run_sync(_remove, workspace)


async def _ask(process: anyio.abc.Process) -> dict[str, Any]:
    """Send the three messages; the answer to the read (notifications come before it)."""
    assert process.stdin is not None and process.stdout is not None
    client = {"name": "codex-cli-image", "title": "codex-cli-image", "version": __version__}
    messages = [
        {"id": 1, "method": "initialize", "params": {"clientInfo": client}},
        {"method": "initialized"},
        {"id": _READ_ID, "method": "account/rateLimits/read"},
    ]
    try:
        await process.stdin.send("".join(json.dumps(m) + "\n" for m in messages).encode())
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # it exited: its stdout says no more, below
    buffer = bytearray()
    async for chunk in process.stdout:
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            answer = _answer(line)
            if answer is not None:
                return answer
        if len(buffer) > _LINE_LIMIT:
            buffer.clear()
    raise TransientError(
        "codex app-server exited without reporting the usage windows.",
        reason="usage_unavailable",
        hint="Run `codex-image doctor` to check codex and the login, then ask again.",
    )


def _answer(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(message, dict) and message.get("id") == _READ_ID:
        return message
    return None


def _limits(answer: dict[str, Any], secrets: tuple[str, ...]) -> UsageLimits:
    """The windows of the read's answer, or the error it carries (pure)."""
    result = answer.get("result")
    if isinstance(result, dict):
        return from_app_server(result) or UsageLimits()
    error = answer.get("error")
    text = error.get("message") if isinstance(error, dict) else None
    text = redact(str(text)[:500], secrets) if text is not None else "no reason given"
    raise read_error(text, error.get("code") if isinstance(error, dict) else None)


def read_error(text: str, code: object) -> CodexImageError:
    """What codex's refusal to read the windows means (pure)."""
    if code == -32601:  # method not found: a codex without the read
        return LaunchError(
            f"This codex cannot report the usage windows ({text}).",
            reason="codex_too_old",
            hint="Update codex (`npm install -g @openai/codex@latest`).",
        )
    if _REFUSED.search(text):
        return AuthError(
            f"The backend refused the login when asked for the usage windows: {text}",
            reason="login_refused",
            hint="Run `codex login` again (ChatGPT sign-in), then ask again.",
        )
    return TransientError(
        f"codex could not read the usage windows: {text}",
        reason="usage_unavailable",
        hint="Check the network, then ask again.",
    )


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

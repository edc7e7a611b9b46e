"""``codex-image mcp``: a stdio MCP server with ``generate_image``, ``doctor`` and
``usage_limits`` tools.

Built on the official ``mcp`` SDK (the ``mcp`` extra). Any chat agent that speaks MCP can then make
images with the user's signed-in Codex CLI. Every failure comes back as a tool error carrying the
kind, reason and hint (the agent can tell the user to re-login, wait or retry); the server itself
never crashes on a bad call. Cancelling a call ends codex's process tree like Ctrl-C does.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import (
    CallToolResult,
    ImageContent,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field, ValidationError

from . import __version__
from ._stdio import silence_stdout
from ._tasks import beside
from .client import Client
from .errors import CodexImageError, InputError, TransientError, internal_error, log_unexpected
from .request import ImageRequest
from .results import ImageResult, Progress
from .settings import Settings

__all__ = ["ServerOptions", "build_server", "client_for", "serve"]

log = logging.getLogger(__name__)
DEFAULT_INLINE_MAX_BYTES = 2 * 1024 * 1024  # base64 stays under common 5 MB image limits
# A client with a request timeout (the MCP Inspector's is 60 s; images take 20-120 s) resets it
# on each progress notification: one at each phase, and one at least this often in between.
PROGRESS_EVERY_S = 5.0
_PROGRESS_POLL_S = 0.25
_INSTRUCTIONS = (
    "Makes images with the user's signed-in Codex CLI (ChatGPT subscription, no API key). "
    "Call generate_image with a full description; it saves a verified PNG and returns its path. "
    "On an error, follow its hint: auth means the user must sign in again (codex login), quota "
    "means wait until retry_at, transient means a retry may work. Call doctor to check the setup "
    "without spending quota."
)


# One line each: a docstring's indentation would reach the agent (the SDK sends it as it is).
_GENERATE_DESCRIPTION = (
    "Make one image with the signed-in Codex CLI (gpt-image) and save it as a verified PNG. "
    "Returns the file's path, size and metadata, and the image itself when small. Takes "
    "20-120 s; progress is reported when the call carries a progress token."
)
_DOCTOR_DESCRIPTION = (
    "Check, without spending quota, whether images can be made: the codex executable and "
    "version, the login (ChatGPT plan; API-key logins cannot be used), the image tool, and how "
    "much of the subscription's usage windows is used."
)
_USAGE_DESCRIPTION = (
    "How much of the ChatGPT subscription's usage windows is used (primary: 5 hours, secondary: "
    "a week; used_percent and resets_at each) and the plan, read without making an image. Check "
    "it before a large batch: a window at 100 % refuses images until it resets."
)


class _Server(MCPServer):
    """The SDK's server, with argument errors answered like every other failure."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            # The SDK's own answer would be pydantic's text, without kind, reason or hint.
            # (A crash is an UnexpectedToolError, a ToolError too: not the caller's fault.)
            if isinstance(exc.__cause__, ValidationError) and not isinstance(
                exc, UnexpectedToolError
            ):
                return _tool_error(_bad_arguments(name, exc.__cause__))
            raise


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What every call of the server shares (set from ``codex-image mcp``'s options): the
    folder images go to, the client's settings, and how large an image is sent inline."""

    out_dir: Path
    settings: Settings = Settings()
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES


def build_server(options: ServerOptions, client: Client | None = None) -> MCPServer:
    """The server and its tools; every call goes through ``client`` (one for the server's
    lifetime: codex stays warm, and ``--jobs`` limits all calls together)."""
    client = client or client_for(options)
    server = _Server(
        "codex-image", instructions=_INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    @server.tool(
        description=_GENERATE_DESCRIPTION,
        annotations=ToolAnnotations(
            title="Generate an image",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    async def generate_image(
        prompt: Annotated[str, Field(description="What to draw: subject, style, composition.")],
        output_dir: Annotated[
            str | None,
            Field(
                description="A folder relative to the server's --out-dir for the PNG (created "
                "if missing); absolute paths and paths leading outside it are refused. "
                "Default: --out-dir itself."
            ),
        ] = None,
        references: Annotated[
            list[str] | None,
            Field(
                description="Up to 5 absolute paths of PNG, JPEG, GIF or WebP images on this "
                "machine to start from (each at most 25 MB)."
            ),
        ] = None,
        aspect: Annotated[
            str | None, Field(description="square, landscape, portrait or W:H such as 16:9.")
        ] = None,
        size: Annotated[str | None, Field(description="Pixel size WxH, e.g. 1024x1536.")] = None,
        transparent: Annotated[bool, Field(description="A transparent background.")] = False,
        ctx: Context | None = None,
    ) -> CallToolResult:
        try:
            _refuse_relative(references or ())
            request = ImageRequest(prompt, references=references or (), aspect=aspect,
                                   size=size, transparent=transparent)  # fmt: skip
            request.check()  # before a folder is made for it
            folder = await anyio.to_thread.run_sync(_folder, options.out_dir, output_dir)
            reporter = _Reporter(ctx)
            result = await reporter.around(partial(
                client.agenerate, replace(request, output=folder), on_progress=reporter.progress
            ))  # fmt: skip
        except CodexImageError as error:
            return _tool_error(_stopping(error) if client.closed else error)
        except Exception as exc:  # a bug of ours must not cost the agent its whole server
            return _tool_error(_unexpected(exc))
        return await _image_result(result, options.inline_max_bytes)

    @server.tool(
        name="doctor",
        description=_DOCTOR_DESCRIPTION,
        annotations=ToolAnnotations(title="Check the Codex setup", read_only_hint=True),
    )
    async def doctor_tool() -> CallToolResult:
        return await _doctor_result(client)

    @server.tool(
        name="usage_limits",
        description=_USAGE_DESCRIPTION,
        annotations=ToolAnnotations(title="Subscription usage", read_only_hint=True),
    )
    async def usage_limits_tool() -> CallToolResult:
        return await _usage_limits_result(client)

    return server


async def _doctor_result(client: Client) -> CallToolResult:
    report = await anyio.to_thread.run_sync(client.doctor)
    data = report.to_dict()
    if report.ok:
        text = "Ready: images can be made."
    else:
        text = "Not ready: " + " ".join(f"{p.message} {p.hint}" for p in report.problems)
    return CallToolResult(
        content=[TextContent(type="text", text=f"{text}\n{json.dumps(data)}")],
        structured_content=data,
    )


async def _usage_limits_result(client: Client) -> CallToolResult:
    try:
        limits = await client.ausage_limits()
    except CodexImageError as error:
        return _tool_error(_stopping(error) if client.closed else error)
    except Exception as exc:  # a bug of ours must not cost the agent its whole server
        return _tool_error(_unexpected(exc))
    data = {"ok": True, **limits.to_dict()}
    text = limits.describe(time.time())
    return CallToolResult(
        content=[TextContent(type="text", text=f"{text}\n{json.dumps(data)}")],
        structured_content=data,
    )


async def _image_result(result: ImageResult, inline_max_bytes: int) -> CallToolResult:
    """The answer to a made image: its path and metadata, and the image when small enough."""
    data = result.to_dict()
    summary = f"Saved a {result.width}x{result.height} PNG to {result.path}"
    content: list[TextContent | ImageContent] = [
        TextContent(type="text", text=f"{summary}.\n{json.dumps(data)}")
    ]
    if result.bytes <= inline_max_bytes:
        try:
            png = await anyio.to_thread.run_sync(result.path.read_bytes)
        except OSError:  # moved or removed already: the path and metadata still stand
            png = b""
        if png:
            encoded = base64.b64encode(png).decode("ascii")
            content.append(ImageContent(type="image", data=encoded, mime_type="image/png"))
    return CallToolResult(content=list(content), structured_content=data)


def _stopping(error: CodexImageError) -> CodexImageError:
    """A call ended by the server's own shutdown says so."""
    if error.reason not in ("cancelled", "client_closed"):
        return error
    return TransientError(
        "The server is stopping; the image was not made.",
        reason="cancelled",
        hint="Retry once the server runs again.",
    )


class _Reporter:
    """Sends a call's progress to the client (when it asked, with a progress token): at each
    phase, and every PROGRESS_EVERY_S while nothing happens, so that its timeout keeps resetting.

    The value is the seconds elapsed (it must increase); the message says the phase."""

    _PHASES = {
        "queued": "waiting for a free slot",
        "started": "starting codex",
        "thread_started": "codex is working on the image",
        "reconnecting": "codex is reconnecting to the backend",
        "agent_message": "codex is working on the image",
        "image_saved": "the image is saved; checking it",
        "retrying": "retrying after a transient failure",
        "finished": "done",
    }

    def __init__(self, ctx: Context | None) -> None:
        self._ctx = ctx
        self._started = anyio.current_time()
        self._phase = "waiting for codex"
        self._pending = True
        self._sent_at = -PROGRESS_EVERY_S
        self._last = -1.0

    def progress(self, progress: Progress) -> None:
        """``on_progress`` of agenerate: noted here, sent by :meth:`run`."""
        if progress.phase == "working":  # our own heartbeat keeps the client's timeout reset
            return
        self.note(self._PHASES.get(progress.phase, progress.phase.replace("_", " ")))

    def note(self, phase: str) -> None:
        self._phase, self._pending = phase, True

    async def around(self, make: Callable[[], Awaitable[ImageResult]]) -> ImageResult:
        """``make()``, reporting all the while."""

        async def work() -> ImageResult:
            result = await make()
            await self._flush()  # the last phase, before the answer
            return result

        async def send(_: anyio.CancelScope) -> None:
            await self._send()

        done = await beside(work, send)
        if done is None:  # send() never cancels the work
            raise internal_error(RuntimeError("progress reporting ended the call"))
        return done[0]

    async def _send(self) -> None:
        while self._ctx is not None:
            if self._pending or anyio.current_time() - self._sent_at >= PROGRESS_EVERY_S:
                await self._flush(force=True)
            await anyio.sleep(_PROGRESS_POLL_S)

    async def _flush(self, *, force: bool = False) -> None:
        """Send the phase now if it is new (or ``force``)."""
        if self._ctx is None or not (self._pending or force):
            return
        now = anyio.current_time()
        self._pending, self._sent_at = False, now
        elapsed = self._last = max(now - self._started, self._last + 0.001)
        try:
            await self._ctx.report_progress(elapsed, None, f"{self._phase} ({elapsed:.0f} s)")
        except Exception as exc:  # a client that went away: the call ends anyway
            log.debug("progress not sent: %s", exc)
            self._ctx = None


def _bad_arguments(tool: str, error: ValidationError) -> InputError:
    """The SDK's argument check failed: which arguments, and why (never their values)."""
    problems, missing = [], True
    for detail in error.errors():
        name = ".".join(str(part) for part in detail["loc"]) or "the arguments"
        if detail["type"] == "missing":
            problems.append(f"{name} is missing")
        else:
            missing = False
            problems.append(f"{name}: {str(detail['msg']).lower()}")
    return InputError(
        f"The arguments of {tool} are not valid: {'; '.join(problems)}.",
        reason="missing_argument" if missing else "invalid_argument",
        hint="Pass the arguments as the tool's input schema says: a prompt string describing "
        "the image is required, the rest is optional.",
    )


def _refuse_relative(references: list[str] | tuple[str, ...]) -> None:
    for reference in references:
        if not os.path.isabs(reference):
            raise InputError(
                f"The reference {reference!r} is not an absolute path.",
                reason="invalid_reference",
                hint="Pass absolute paths: the server does not share the agent's working folder.",
            )


def _folder(default: Path, requested: str | None) -> Path:
    """The output folder of a call, created: ``--out-dir`` or a folder inside it. The agent
    (or text it read) chooses ``output_dir``, so it cannot reach outside ``--out-dir``."""
    root = default.resolve()
    try:
        folder = (root / requested).resolve() if requested else root
    except (OSError, RuntimeError, ValueError) as exc:
        raise _unusable(requested, str(exc)) from None
    if not folder.is_relative_to(root) or (requested or "").startswith("~"):
        raise InputError(
            f"The output_dir {requested!r} is outside the server's folder {root}.",
            reason="output_dir_outside",
            hint="Pass a folder relative to the server's --out-dir, or leave output_dir out.",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise _unusable(requested, getattr(exc, "strerror", None) or str(exc)) from exc
    return folder


def _unusable(requested: str | None, why: str) -> InputError:
    return InputError(
        f"The output_dir {requested!r} cannot be used: {why}.",
        reason="output_dir_unusable",
        hint="Pass a plain folder name relative to the server's --out-dir.",
    )


def _tool_error(error: CodexImageError) -> CallToolResult:
    data: dict[str, Any] = {"ok": False, "error": error.to_dict()}
    text = f"{error.kind} error ({error.reason}): {error.message}\nWhat to do: {error.hint}"
    if error.retry_at:
        text += f"\nThe limit resets at {error.retry_at}."
    return CallToolResult(
        content=[TextContent(type="text", text=f"{text}\n{json.dumps(data)}")],
        structured_content=data,
        is_error=True,
    )


def client_for(options: ServerOptions) -> Client:
    return Client(options.settings)


def serve(options: ServerOptions) -> int:
    """Run the server on stdin/stdout until the client disconnects (0) or a SIGTERM, SIGHUP or
    SIGINT arrives (130, after every running call has ended its codex tree)."""
    client = client_for(options)
    server = build_server(options, client)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            if sys.platform != "win32":  # no signal receivers there: the client closes stdin
                tg.start_soon(_stop_on_signal, client)
            await server.run_stdio_async()
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except Exception as exc:
        if not _client_gone(exc):
            raise
        # The client vanished (killed, crashed): the calls were cancelled, ending their codex
        # trees, on the way here. Nobody is left to read a traceback or a last flush.
        log.info("the MCP client went away: %s", type(exc).__name__)
        silence_stdout()
    finally:
        client.close()
    return 0


def _client_gone(exc: BaseException) -> bool:
    """True when ``exc`` (or every exception in its group) says the client's pipes closed."""
    group = getattr(exc, "exceptions", None)
    if isinstance(group, tuple) and group:
        return all(_client_gone(inner) for inner in group)
    gone = (BrokenPipeError, ConnectionResetError, anyio.BrokenResourceError,
            anyio.ClosedResourceError)  # fmt: skip
    return isinstance(exc, gone)


async def _stop_on_signal(client: Client) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP, signal.SIGINT) as signals:
        async for _ in signals:
            await client.aclose()  # every call ends, its codex tree and files with it
            sys.stderr.flush()
            # Not a normal exit: that would wait for the SDK's stdin reader thread.
            os._exit(130)


def _unexpected(exc: Exception) -> TransientError:
    log_unexpected(log, "unexpected error in generate_image", exc)
    return internal_error(exc)

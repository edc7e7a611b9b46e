"""The ``codex-image`` command line: renders what the library reports.

Exit codes (stable, documented in the README): 0 ok, 2 input, 3 auth, 4 quota, 5 transient,
6 launch, 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import EXIT_CODES

if TYPE_CHECKING:
    from .batch import BatchOutcome
    from .client import Client
    from .diagnosis import DoctorReport
    from .errors import CodexImageError
    from .results import Progress
    from .settings import Settings

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    # A daemon may start us with stdout or stderr closed (then None): write to nowhere rather
    # than fail on the first status line.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # for the whole process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    for stream in (sys.stdout, sys.stderr):
        # A path that is not valid UTF-8 must not crash the report that names it.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    previous = _interrupt_on_termination()
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        # The library has already ended codex's process tree and removed its files.
        if getattr(args, "events", False):  # stderr stays JSON Lines
            print(json.dumps({"event": "interrupted"}), file=sys.stderr)
        else:
            print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _interrupt_on_termination() -> dict[int, Any]:
    """Treat SIGTERM and SIGHUP (terminal closed) like Ctrl-C: codex runs in its own session, so
    only we can end its tree, and dying without clean-up would leave it running. A signal the
    caller ignores (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    from ._interrupts import interrupt

    previous: dict[int, Any] = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, interrupt)
    return previous


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codex-image",
        description="Images from the Codex CLI you are signed in to (no API key).",
    )
    parser.add_argument("--version", action="version", version=f"codex-image {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate",
        help="make one image and save it as a verified PNG",
        description="Make one image with the signed-in Codex CLI and save it as a verified PNG.",
    )
    gen.add_argument("prompt", metavar="PROMPT", help="what to draw; - reads it from stdin")
    gen.add_argument(
        "-o", "--output", metavar="PATH", help="a .png file or an existing folder (default: .)"
    )
    _add_run_options(gen)
    gen.add_argument(
        "-i", "--ref", action="append", default=[], metavar="PATH",
        help="a reference image (PNG, JPEG, GIF, WebP); repeat for up to 5",
    )  # fmt: skip
    gen.add_argument(
        "--aspect", metavar="A", help="square, landscape, portrait or W:H (asked of the model)"
    )
    gen.add_argument("--size", metavar="WxH", help="pixel size to ask for, e.g. 1024x1536")
    gen.add_argument("--transparent", action="store_true", help="ask for a transparent background")
    gen.add_argument(
        "--fit", metavar="WxH",
        help="also save an exact-size copy (crop, then resize; needs the fit extra: Pillow)",
    )  # fmt: skip
    gen.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    gen.add_argument("--events", action="store_true", help="print progress as JSON lines on stderr")
    gen.add_argument("-q", "--quiet", action="store_true", help="no status line, no warnings")
    gen.set_defaults(run=_generate)

    batch = commands.add_parser(
        "batch",
        help="make many images from a file of requests",
        description="Make one image per request in FILE, a few at a time. FILE holds JSON Lines "
        "(one object per line: prompt, and optionally output, references, aspect, size, "
        "transparent, fit) or one prompt per line.",
    )
    batch.add_argument("file", metavar="FILE", help="the requests; - reads them from stdin")
    batch.add_argument(
        "--out-dir",
        metavar="DIR",
        help="folder for the images and base of relative outputs (created if missing; default: .)",
    )
    batch.add_argument(
        "-j", "--jobs", type=int, default=2, metavar="N", dest="concurrency",
        help="jobs at once (default 2: the backend rate-limits more parallel image streams)",
    )  # fmt: skip
    _add_run_options(batch, per="per job")
    batch.add_argument("--json", action="store_true", help="a JSON line per job, then a summary")
    batch.add_argument("-q", "--quiet", action="store_true", help="no warnings, no summary")
    batch.set_defaults(run=_batch)

    mcp = commands.add_parser(
        "mcp",
        help="serve generate_image and doctor to chat agents (MCP over stdio)",
        description="A Model Context Protocol server on stdin/stdout with the tools "
        "generate_image and doctor. Needs the mcp extra: pip install '.[mcp]' from the clone.",
    )
    mcp.add_argument(
        "--out-dir",
        metavar="DIR",
        help="folder for images and base of relative output_dir (default: the current folder)",
    )
    mcp.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds per image")
    mcp.add_argument(
        "-j", "--jobs", type=int, default=2, metavar="N", dest="concurrency",
        help="images made at once; more calls wait (default 2: the backend rate-limits more)",
    )  # fmt: skip
    mcp.add_argument(
        "--inline-max-bytes", type=int, default=2 * 1024 * 1024, metavar="N",
        help="return the image itself too when its PNG is at most N bytes (0: never)",
    )  # fmt: skip
    _add_codex_options(mcp)
    mcp.add_argument("--model", metavar="M", help="the model codex should use")
    mcp.set_defaults(run=_mcp)

    _add_serve(commands)

    hermes = commands.add_parser(
        "hermes-setup",
        help="enable the Hermes Agent image backend in $HERMES_HOME/config.yaml",
        description="Add the codex-cli-image plugin to plugins.enabled and set "
        "image_gen.provider to codex-cli when it is unset, keeping the rest of config.yaml. "
        "Run it with the Python environment Hermes runs in.",
    )
    hermes.add_argument("--check", action="store_true", help="only report what is missing (1)")
    hermes.add_argument("--uninstall", action="store_true", help="undo the setup")
    hermes.add_argument("--json", action="store_true", help="print one JSON object")
    hermes.set_defaults(run=_hermes_setup)

    doctor = commands.add_parser(
        "doctor",
        help="check that codex can be launched, without spending quota",
        description="Find codex and report what stands in the way of making images.",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument(
        "--no-usage",
        dest="usage",
        action="store_false",
        help="do not read the usage windows (no request to the backend, and codex is not run "
        "in the codex home)",
    )
    _add_codex_options(doctor)
    doctor.set_defaults(run=_doctor)

    limits = commands.add_parser(
        "limits",
        help="show how much of the subscription's usage windows is used, spending nothing",
        description="Ask codex (app-server: no model request, no image) how much of the "
        "5-hour and the weekly usage window is used, when each resets, and the plan.",
    )
    limits.add_argument("--json", action="store_true", help="print one JSON object")
    limits.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default 30)"
    )
    _add_codex_options(limits)
    limits.set_defaults(run=_limits)
    return parser


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the OpenAI Images API over HTTP (for Open WebUI, LibreChat, n8n, SDKs)",
        description="An OpenAI-compatible images endpoint (/v1/images/generations, "
        "/v1/images/edits, /v1/models) made by the signed-in Codex CLI. Prints its base URL "
        "on stdout once it accepts connections. Needs the serve extra: pip install '.[serve]' "
        "from the clone.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default "
        "127.0.0.1; any other needs --token-file or $CODEX_IMAGE_TOKEN)",
    )
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: a free one)")
    serve.add_argument(
        "--token-file",
        metavar="F",
        help="file holding the API key clients must send (default: $CODEX_IMAGE_TOKEN, else one "
        "made once in your config folder, on loopback only)",
    )
    serve.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=2,
        metavar="N",
        dest="concurrency",
        help="images made at once; more wait (default 2: the backend rate-limits more)",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=32,
        metavar="N",
        help="images that may wait for a slot; more get 429 (default 32)",
    )
    serve.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="seconds per image"
    )
    serve.add_argument(
        "--out-dir",
        metavar="DIR",
        help="keep every image here (default: none is kept, but for its URL while it works)",
    )
    serve.add_argument(
        "--url-ttl",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds an image URL (response_format url) works without the token (default 3600)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of ORIGIN (e.g. https://app.example) call the server; repeatable",
    )
    _add_codex_options(serve)
    serve.add_argument("--model", metavar="M", help="the model codex should use")
    serve.set_defaults(run=_serve)


def _add_run_options(parser: argparse.ArgumentParser, per: str = "for the whole call") -> None:
    """How each image is made and kept: the same for ``generate`` and ``batch``."""
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S", help=f"seconds {per}")
    parser.add_argument(
        "--retries", type=int, default=1, metavar="N", help="extra attempts after transient errors"
    )
    _add_codex_options(parser)
    parser.add_argument("--model", metavar="M", help="the model codex should use")
    parser.add_argument(
        "--wait-for-turn",
        action="store_true",
        help="let codex finish its closing message (reports token usage; slower)",
    )
    parser.add_argument(
        "--keep-codex-copy",
        action="store_true",
        help="leave codex's own copy in $CODEX_HOME/generated_images",
    )


def _add_codex_options(parser: argparse.ArgumentParser) -> None:
    """Where codex and its state are, and which logins to accept: the same for every command."""
    parser.add_argument("--codex", metavar="PATH", help="the codex executable to use")
    parser.add_argument(
        "--codex-home",
        metavar="DIR",
        help="codex's state directory (default: $CODEX_HOME or ~/.codex)",
    )
    parser.add_argument(
        "-p", "--profile", metavar="NAME",
        help="the codex profile to use (codex 0.142+: NAME.config.toml in the codex home)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-relay",
        action="store_true",
        help="accept a custom provider or base URL that receives the ChatGPT login",
    )


def _settings(args: argparse.Namespace) -> Settings:
    """The client settings a command's options name (each option's dest is a setting's name);
    raises :class:`InputError` for a bad value."""
    from .settings import SETTING_NAMES, Settings

    return Settings(**{name: value for name, value in vars(args).items() if name in SETTING_NAMES})


def _client(args: argparse.Namespace) -> Client:
    from .client import Client

    return Client(_settings(args))


def _generate(args: argparse.Namespace) -> int:
    from .errors import CodexImageError, InputError
    from .request import ImageRequest

    status = _Status(enabled=not (args.quiet or args.json or args.events) and sys.stderr.isatty())
    if args.events:
        _log_as_events()

    def on_progress(progress: Progress) -> None:
        if args.events and progress.phase != "finished":  # ours, below, ends the stream
            _event(progress.phase, progress.elapsed_s, attempt=progress.attempt,
                   thread_id=progress.thread_id, message=progress.message)  # fmt: skip
        status.show(progress)

    def fail(error: CodexImageError) -> int:
        status.clear()
        if args.events:  # stderr stays JSON: the error is the terminal event
            _event("failed", status.elapsed_s, error=error.to_dict())
            if not args.json:
                return error.exit_code
        return _fail(error, as_json=args.json)

    try:
        prompt = args.prompt
        if prompt == "-":
            prompt = _read_stdin("the prompt").decode("utf-8-sig")
        request = ImageRequest(
            prompt, output=args.output, references=args.ref, aspect=args.aspect, size=args.size,
            transparent=args.transparent, fit=args.fit, overwrite=args.overwrite,
        )  # fmt: skip
        with _client(args) as client:
            result = client.generate(request, on_progress=on_progress)
    except CodexImageError as error:
        return fail(error)
    except UnicodeDecodeError:
        bad = InputError(
            "The prompt on stdin is not UTF-8 text.",
            reason="invalid_prompt",
            hint="Pass the prompt as UTF-8 text.",
        )
        return fail(bad)
    finally:
        status.clear()  # Ctrl-C too: the ticker must not draw over "interrupted"
    try:
        if args.events:
            _event("finished", result.elapsed_s, attempt=result.attempts,
                   thread_id=result.thread_id, message=str(result.path),
                   warnings=list(result.warnings))  # fmt: skip
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            if not (args.quiet or args.events):
                for warning in result.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
                if result.usage_limits is not None:
                    print(f"usage: {result.usage_limits.describe(time.time())}", file=sys.stderr)
            print(result.path, flush=True)
            if result.fitted is not None:
                print(result.fitted.path, flush=True)
    except BrokenPipeError:
        # Whoever read our output is gone (the image is saved all the same), as for batch.
        from ._stdio import silence_stdout

        silence_stdout()
        return EXIT_INTERRUPTED
    return EXIT_OK


def _event(name: str, elapsed_s: float, **fields: object) -> None:
    """One ``--events`` line on stderr."""
    event = {"event": name, "elapsed_s": round(elapsed_s, 3), **fields}
    print(json.dumps(event), file=sys.stderr, flush=True)


def _log_as_events() -> None:
    """Under ``--events`` stderr is JSON Lines only: our log records (a warning while codex is
    stopped, say) become ``log`` events instead of plain lines."""
    import logging

    started = time.monotonic()

    class Events(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                _event("log", time.monotonic() - started, level=record.levelname.lower(),
                       message=record.getMessage())  # fmt: skip
            except Exception:  # a closed stderr: nobody left to tell
                self.handleError(record)

    handler = Events(logging.WARNING)
    logging.getLogger("codex_cli_image").addHandler(handler)


def _fail(error: CodexImageError, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": error.to_dict()}))
    else:
        print(f"error: {error.message}", file=sys.stderr)
        print(f"hint: {error.hint}", file=sys.stderr)
    return error.exit_code


def _batch(args: argparse.Namespace) -> int:
    from .batch import numbered_requests
    from .errors import CodexImageError

    started = time.monotonic()
    finished: list[BatchOutcome] = []

    def report(outcome: BatchOutcome) -> None:
        finished.append(outcome)
        where = f"line {outcome.line}" if outcome.line else f"request {outcome.index}"
        if args.json:
            print(json.dumps(outcome.to_dict()), flush=True)
        elif outcome.result is not None:
            if not args.quiet:
                for warning in outcome.result.warnings:
                    print(f"warning: {where}: {warning}", file=sys.stderr)
            print(outcome.result.path, flush=True)
            if outcome.result.fitted is not None:
                print(outcome.result.fitted.path, flush=True)
        elif outcome.error is not None:
            what = "not started" if outcome.status == "not_started" else "error"
            print(f"{what}: {where}: {outcome.error.message}", file=sys.stderr)
            if outcome.status == "failed":
                print(f"hint: {outcome.error.hint}", file=sys.stderr)

    try:
        numbered = numbered_requests(_read_batch(args.file))
        with _client(args) as client:
            outcomes = client.generate_many(
                [request for _, request in numbered],
                lines=[line for line, _ in numbered],
                out_dir=args.out_dir,
                overwrite=args.overwrite,
                on_outcome=report,
            )
    except CodexImageError as error:
        return _fail(error, as_json=args.json)
    except BrokenPipeError:
        # Whoever read our output is gone: the batch was stopped (no more images paid for).
        from ._stdio import silence_stdout

        silence_stdout()
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if args.json:  # a consumer can tell an interrupted run from a truncated one
            summary = _summary(finished, time.monotonic() - started, interrupted=True)
            print(json.dumps({"summary": summary}), flush=True)
        raise
    summary = _summary(outcomes, time.monotonic() - started)
    if args.json:
        try:
            print(json.dumps({"summary": summary}), flush=True)
        except BrokenPipeError:
            from ._stdio import silence_stdout

            silence_stdout()
    elif not args.quiet:
        line = f"batch: {summary['ok']} ok, {summary['failed']} failed"
        line += f", {summary['not_started']} not started in {summary['elapsed_s']:.1f} s"
        if summary["retry_at"]:
            line += f"; the limit resets at {summary['retry_at']}"
        print(line, file=sys.stderr)
        known = [o.result.usage_limits for o in outcomes if o.result and o.result.usage_limits]
        if known:  # as the last image left them
            print(f"usage: {known[-1].describe(time.time())}", file=sys.stderr)
    if any(outcome.status == "not_started" for outcome in outcomes):
        return EXIT_CODES["quota"]  # cut short by a limit, whatever else failed first
    failed = [outcome.error for outcome in outcomes if outcome.error is not None]
    return EXIT_CODES[failed[0].kind] if failed else EXIT_OK


def _missing_extra(what: str, extra: str, exc: ImportError) -> CodexImageError:
    from .errors import InputError

    return InputError(
        f"{what} needs the {extra} extra ({exc.name or exc} is missing).",
        reason=f"{extra}_not_installed",
        # The same interpreter as ours, or the extra lands in another environment.
        hint=f"Install the {extra} extra into this environment: in your clone of "
        f"codex-cli-image, run {sys.executable} -m pip install '.[{extra}]'.",
    )


def _mcp(args: argparse.Namespace) -> int:
    from .errors import CodexImageError, InputError

    try:
        from .mcp_server import ServerOptions, serve
    except ImportError as exc:
        return _fail(_missing_extra("The MCP server", "mcp", exc), as_json=False)
    try:
        if args.inline_max_bytes < 0:
            raise InputError(
                "--inline-max-bytes must be 0 or more.",
                reason="invalid_option",
                hint="Fix the option and start the server again.",
            )
        out_dir = Path(args.out_dir or ".").expanduser().absolute()
        return serve(ServerOptions(out_dir, _settings(args), args.inline_max_bytes))
    except CodexImageError as error:  # settings refused before the server starts
        return _fail(error, as_json=False)


def _serve(args: argparse.Namespace) -> int:
    from .errors import CodexImageError, InputError

    try:
        from . import serve as server
    except ImportError as exc:
        return _fail(_missing_extra("codex-image serve", "serve", exc), as_json=False)
    try:
        if not 0 <= args.port <= 65535 or args.max_queue < 0 or not 0 < args.url_ttl <= 7 * 86400:
            raise InputError(
                "--port must be 0 to 65535, --max-queue 0 or more, and --url-ttl more than 0 "
                "and at most a week (604800).",
                reason="invalid_option",
                hint="Fix the option and start the server again.",
            )
        token, kept_in = server.resolve_token(args.token_file, args.host, os.environ)
        out_dir = Path(args.out_dir).expanduser().absolute() if args.out_dir else None
        options = server.ServeOptions(
            token,
            host=args.host,
            port=args.port,
            out_dir=out_dir,
            allow_origins=tuple(args.allow_origin),
            max_queue=args.max_queue,
            settings=_settings(args),
            url_ttl_s=args.url_ttl,
        )
        _log_to_stderr()

        def ready(base_url: str) -> None:
            if kept_in:  # before the URL: whoever waits for the URL may read it at once
                print(f"codex-image serve: the token is in {kept_in} (send it as the API key)",
                      file=sys.stderr, flush=True)  # fmt: skip
            print(base_url, flush=True)

        return server.serve(options, on_ready=ready)
    except CodexImageError as error:  # refused before the server starts
        return _fail(error, as_json=False)


def _log_to_stderr() -> None:
    """The server's log (a line per request, warnings, errors) on stderr, with the time."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    package = logging.getLogger("codex_cli_image")
    package.addHandler(handler)
    package.setLevel(logging.WARNING)
    logging.getLogger("codex_cli_image.serve.access").setLevel(logging.INFO)


def _read_batch(name: str) -> str:
    from .errors import InputError

    where = "stdin" if name == "-" else name
    try:
        data = _read_stdin("the batch") if name == "-" else Path(name).read_bytes()
        return data.decode("utf-8-sig")
    except OSError as exc:
        raise InputError(
            f"Could not read the batch file {where}: {exc.strerror or exc}.",
            reason="batch_unreadable",
            hint="Name a readable file of requests, or - for stdin.",
        ) from exc
    except UnicodeDecodeError:
        raise InputError(
            f"The batch file {where} is not UTF-8 text.",
            reason="invalid_batch",
            hint="Save the requests as UTF-8 text.",
        ) from None


def _read_stdin(what: str) -> bytes:
    """Standard input as bytes (decoded as UTF-8 by the caller, whatever the locale or console
    code page says); an input error when there is none to read."""
    from .errors import InputError

    if sys.stdin is None or getattr(sys.stdin, "buffer", None) is None:
        raise InputError(
            f"- asks for {what} on standard input, but standard input is closed.",
            reason="stdin_closed",
            hint=f"Pass {what} another way, or give this command an open standard input.",
        )
    try:
        data: bytes = sys.stdin.buffer.read()
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Standard input could not be read: {getattr(exc, 'strerror', None) or exc}.",
            reason="stdin_closed",
            hint=f"Pass {what} another way, or give this command a readable standard input.",
        ) from None
    return data


def _summary(
    outcomes: list[BatchOutcome], elapsed_s: float, *, interrupted: bool = False
) -> dict[str, Any]:
    counts = {status: 0 for status in ("ok", "failed", "not_started")}
    by_kind: dict[str, int] = {}
    retry_at = None
    for outcome in outcomes:
        counts[outcome.status] += 1
        if outcome.error is not None:
            by_kind[outcome.error.kind] = by_kind.get(outcome.error.kind, 0) + 1
            retry_at = retry_at or outcome.error.retry_at
    return {
        "jobs": len(outcomes),
        **counts,
        "by_kind": by_kind,
        "retry_at": retry_at,
        "elapsed_s": round(elapsed_s, 3),
        "interrupted": interrupted,
    }


class _Status:
    """A one-line live status on a terminal's stderr: the phase and the time elapsed, redrawn
    every second (an image takes 20-120 s: a frozen clock looks like a hang)."""

    _LABELS = {
        "queued": "waiting for a free slot",
        "started": "starting codex",
        "thread_started": "waiting for the image",
        "reconnecting": "reconnecting",
        "agent_message": "waiting for the image",
        "image_saved": "image saved, verifying",
        "retrying": "retrying",
        "working": "working",
        "finished": "done",
    }
    TICK_S = 1.0

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._started = time.monotonic()
        self._width = 0
        self._text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def show(self, progress: Progress) -> None:
        if not self.enabled or (progress.phase == "working" and self._text):
            return  # a heartbeat: the ticker already keeps the clock moving
        text = f"codex-image: {self._LABELS.get(progress.phase, progress.phase)}"
        if progress.attempt > 1:
            text += f", attempt {progress.attempt}"
        with self._lock:
            self._text = text
            self._draw()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="codex-image-status",
                                            daemon=True)  # fmt: skip
            self._ticker.start()

    def clear(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self.enabled and self._width:
                sys.stderr.write("\r" + " " * self._width + "\r")
                sys.stderr.flush()
                self._width = 0

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK_S):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        text = f"{self._text} ({self.elapsed_s:.0f} s)"
        try:
            sys.stderr.write("\r" + text.ljust(self._width))
            sys.stderr.flush()
        except (OSError, ValueError):  # the terminal went away: nobody to show it to
            self.enabled = False
        self._width = len(text)


def _hermes_setup(args: argparse.Namespace) -> int:
    from .errors import CodexImageError
    from .hermes_setup import run

    try:
        report = run(check=args.check, uninstall=args.uninstall)
    except CodexImageError as error:
        return _fail(error, as_json=args.json)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        done = "unchanged" if not report.changed else "updated"
        print(f"{report.config}: {'checked' if args.check else done}")
        for gap in report.missing:
            print(f"missing: {gap}")
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    return 1 if args.check and report.missing else EXIT_OK


def _limits(args: argparse.Namespace) -> int:
    from .errors import CodexImageError

    try:
        with _client(args) as client:
            limits = client.usage_limits(timeout=args.timeout)
    except CodexImageError as error:
        return _fail(error, as_json=args.json)
    if args.json:
        print(json.dumps({"ok": True, **limits.to_dict()}))
    else:
        line = limits.describe(time.time())
        print(line + (f" · plan {limits.plan}" if limits.plan else ""))
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from .diagnosis import doctor

    report = doctor(codex=args.codex, codex_home=args.codex_home, profile=args.profile,
                    allow_relay=args.allow_relay, usage=args.usage)  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if report.ok:
        return EXIT_OK
    return EXIT_CODES[report.problems[0].kind]


def _print_report(report: DoctorReport) -> None:
    rows: list[tuple[str, str]] = []
    codex = report.codex
    if codex is None:
        rows.append(("codex", "not found"))
    else:
        rows.append(("codex", codex.path))
        how: str = codex.source
        if codex.shim and not codex.via_shim:
            how += f" (npm shim {codex.shim} -> native binary)"
        elif codex.via_shim:
            how += " (through node: no native binary next to the npm shim)"
        rows.append(("found via", how))
        rows.append(("version", codex.version or "unknown"))
        if codex.removed_env:
            rows.append(("ignored env", ", ".join(codex.removed_env) + " (removed for codex)"))
    rows.append(("codex home", report.codex_home))
    login = report.login
    if login is not None:
        if login.ok:
            described = {"chatgpt": "ChatGPT"}.get(login.mode or "", login.mode or "?")
            described += f" ({login.plan or 'plan unknown'})"
            if login.account:
                described += f", {login.account}"
        else:
            described = f"not usable ({login.reason})"
        rows.append(("login", described))
        if login.provider != "openai":
            rows.append(("provider", login.provider))
    tool = {True: "on", False: "off", None: "unknown"}[report.image_generation]
    rows.append(("image tool", tool))
    rows.append(("status", "ready" if report.ok else "not ready"))
    if report.usage_limits is not None:
        rows.append(("usage", report.usage_limits.describe(time.time())))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for notice in (*report.warnings, *(login.warnings if login is not None else ())):
        print(f"warning: {notice.message}", file=sys.stderr)
    for problem in report.problems:
        print(f"error: {problem.message}", file=sys.stderr)
        print(f"hint: {problem.hint}", file=sys.stderr)

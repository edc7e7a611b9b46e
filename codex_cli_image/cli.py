"""The ``codex-image`` command line: renders what the library reports.

Exit codes (stable, documented in the README): 0 ok, 2 input, 3 auth, 4 quota, 5 transient,
6 launch, 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .doctor import DoctorReport
    from .errors import Kind
    from .runner import Progress

EXIT_OK = 0
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[Kind, int] = {"input": 2, "auth": 3, "quota": 4, "transient": 5, "launch": 6}


def main(argv: Sequence[str] | None = None) -> int:
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
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _interrupt_on_termination() -> dict[int, Any]:
    """Treat SIGTERM and SIGHUP (terminal closed) like Ctrl-C: codex runs in its own session, so
    only we can end its tree, and dying without clean-up would leave it running."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
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
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    gen.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="seconds for the whole call"
    )
    gen.add_argument(
        "--retries", type=int, default=1, metavar="N", help="extra attempts after transient errors"
    )
    _add_codex_options(gen)
    gen.add_argument("--model", metavar="M", help="the model codex should use")
    gen.add_argument(
        "--wait-for-turn",
        action="store_true",
        help="let codex finish its closing message (reports token usage; slower)",
    )
    gen.add_argument(
        "--keep-codex-copy",
        action="store_true",
        help="leave codex's own copy in $CODEX_HOME/generated_images",
    )
    gen.add_argument(
        "-i", "--ref", action="append", default=[], metavar="PATH",
        help="a reference image (PNG, JPEG, GIF, WebP); repeat for up to 5",
    )  # fmt: skip
    gen.add_argument(
        "--aspect", metavar="A", help="square, landscape, portrait or W:H (asked of the model)"
    )
    gen.add_argument("--size", metavar="WxH", help="pixel size to ask for, e.g. 1024x1536")
    gen.add_argument("--transparent", action="store_true", help="ask for a transparent background")
    gen.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    gen.add_argument("--events", action="store_true", help="print progress as JSON lines on stderr")
    gen.add_argument("-q", "--quiet", action="store_true", help="no status line, no warnings")
    gen.set_defaults(run=_generate)

    doctor = commands.add_parser(
        "doctor",
        help="check that codex can be launched, without spending quota",
        description="Find codex and report what stands in the way of making images.",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    _add_codex_options(doctor)
    doctor.set_defaults(run=_doctor)
    return parser


def _add_codex_options(parser: argparse.ArgumentParser) -> None:
    """Where codex and its state are, and which logins to accept: the same for every command."""
    parser.add_argument("--codex", metavar="PATH", help="the codex executable to use")
    parser.add_argument(
        "--codex-home",
        metavar="DIR",
        help="codex's state directory (default: $CODEX_HOME or ~/.codex)",
    )
    parser.add_argument(
        "--allow-relay",
        action="store_true",
        help="accept a custom provider or base URL that receives the ChatGPT login",
    )


def _generate(args: argparse.Namespace) -> int:
    from .api import generate
    from .errors import CodexImageError, InputError

    status = _Status(enabled=not (args.quiet or args.json or args.events) and sys.stderr.isatty())

    def on_progress(progress: Progress) -> None:
        if args.events:
            event = {
                "event": progress.phase,
                "elapsed_s": round(progress.elapsed_s, 3),
                "attempt": progress.attempt,
                "thread_id": progress.thread_id,
                "message": progress.message,
            }
            print(json.dumps(event), file=sys.stderr, flush=True)
        status.show(progress)

    try:
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        result = generate(
            prompt,
            output=args.output,
            overwrite=args.overwrite,
            timeout=args.timeout,
            retries=args.retries,
            codex=args.codex,
            codex_home=args.codex_home,
            model=args.model,
            allow_relay=args.allow_relay,
            on_progress=on_progress,
            wait_for_turn=args.wait_for_turn,
            keep_codex_copy=args.keep_codex_copy,
            references=args.ref,
            aspect=args.aspect,
            size=args.size,
            transparent=args.transparent,
        )
    except CodexImageError as error:
        status.clear()
        if args.json:
            print(json.dumps({"ok": False, "error": error.to_dict()}))
        else:
            print(f"error: {error.message}", file=sys.stderr)
            print(f"hint: {error.hint}", file=sys.stderr)
        return EXIT_CODES[error.kind]
    except UnicodeDecodeError:
        bad = InputError(
            "The prompt on stdin is not UTF-8 text.",
            reason="invalid_prompt",
            hint="Pass the prompt as UTF-8 text.",
        )
        if args.json:
            print(json.dumps({"ok": False, "error": bad.to_dict()}))
        else:
            print(f"error: {bad.message}\nhint: {bad.hint}", file=sys.stderr)
        return EXIT_CODES["input"]
    status.clear()
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        if not args.quiet:
            for warning in result.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        print(result.path)
    return EXIT_OK


class _Status:
    """A one-line live status on a terminal's stderr: phase and elapsed time."""

    _LABELS = {
        "started": "starting codex",
        "thread_started": "waiting for the image",
        "reconnecting": "reconnecting",
        "agent_message": "waiting for the image",
        "image_saved": "image saved, verifying",
        "retrying": "retrying",
        "finished": "done",
    }

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._width = 0

    def show(self, progress: Progress) -> None:
        if not self.enabled:
            return
        text = f"codex-image: {self._LABELS.get(progress.phase, progress.phase)}"
        text += f" ({progress.elapsed_s:.1f} s)"
        if progress.attempt > 1:
            text += f", attempt {progress.attempt}"
        sys.stderr.write("\r" + text.ljust(self._width))
        sys.stderr.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    report = doctor(codex=args.codex, codex_home=args.codex_home, allow_relay=args.allow_relay)
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
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for notice in login.warnings if login is not None else ():
        print(f"warning: {notice.message}", file=sys.stderr)
    for problem in report.problems:
        print(f"error: {problem.message}", file=sys.stderr)
        print(f"hint: {problem.hint}", file=sys.stderr)

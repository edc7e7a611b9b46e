"""The ``codex-image`` command line: renders what the library reports.

Exit codes (stable, documented in the README): 0 ok, 2 input, 3 auth, 4 quota, 5 transient,
6 launch, 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .doctor import DoctorReport
    from .errors import Kind

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
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codex-image",
        description="Images from the Codex CLI you are signed in to (no API key).",
    )
    parser.add_argument("--version", action="version", version=f"codex-image {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    doctor = commands.add_parser(
        "doctor",
        help="check that codex can be launched, without spending quota",
        description="Find codex and report what stands in the way of making images.",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument("--codex", metavar="PATH", help="the codex executable to use")
    doctor.add_argument(
        "--codex-home",
        metavar="DIR",
        help="codex's state directory (default: $CODEX_HOME or ~/.codex)",
    )
    doctor.add_argument(
        "--allow-relay",
        action="store_true",
        help="accept a custom provider or base URL that receives the ChatGPT login",
    )
    doctor.set_defaults(run=_doctor)
    return parser


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

"""A stand-in for the Codex CLI, for tests that must not log in or touch the network.

It is a standalone script (standard library only, no import of codex_cli_image), run through a
small executable wrapper that :class:`codex_cli_image.testing.FakeCodex` writes. It answers
``--version``, ``login status``, ``features list`` and ``exec --json ... -`` the way codex 0.169
does: JSONL events on stdout, the PNG under ``$CODEX_HOME/generated_images/<thread_id>/``, a session
rollout under ``$CODEX_HOME/sessions/YYYY/MM/DD/``, and the real failure texts.

What it does is chosen by options, read in this order (later wins):
``fake-codex.json`` in the directory named by ``FAKE_CODEX_DIR`` (the wrapper sets it), the JSON
object in ``FAKE_CODEX_OPTIONS``, and the scenario name in ``FAKE_CODEX_SCENARIO``. Each invocation
is recorded as ``calls/<n>.json`` in that directory: argv, cwd, stdin, pid, selected environment.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from http import HTTPStatus
from pathlib import Path
from typing import Any

CONTROL_FILE = "fake-codex.json"
PROFILE_FILES_SINCE = (0, 142, 0)
CODE_MODE_TABLE = (0, 149, 0)
"""The first release whose ``features.code_mode`` takes a table (its exec cell's yield time)."""
CODE_MODE_YIELD = "features.code_mode.default_exec_yield_time_ms"
# Some of the rows `codex features list` prints, as 0.169 prints them: those we disable, and a
# few others.
_FEATURES = (
    ("apps", "stable", True),
    ("browser_use", "stable", True),
    ("browser_use_external", "stable", True),
    ("code_mode_host", "stable", True),
    ("computer_use", "stable", True),
    ("goals", "stable", True),
    ("image_generation", "stable", True),
    ("image_generation_animation", "under development", False),
    ("in_app_browser", "stable", True),
    ("js_repl", "removed", False),
    ("memories", "stable", False),
    ("multi_agent", "deprecated", True),
    ("multi_agent_v2", "stable", False),
    ("plugins", "stable", True),
    ("request_permissions_tool", "under development", False),
    ("shell_tool", "stable", True),
    ("sleep_tool", "stable", True),
    ("standalone_web_search", "under development", False),
    ("tool_search", "removed", False),
    ("tool_suggest", "stable", True),
    ("unified_exec", "stable", True),
    ("view_image", "stable", True),
)
DIR_ENV = "FAKE_CODEX_DIR"
OPTIONS_ENV = "FAKE_CODEX_OPTIONS"
SCENARIO_ENV = "FAKE_CODEX_SCENARIO"

CLIENT_SIDE_TOOL = (0, 144, 0)
"""The first release that runs the image tool client-side (before: the hosted tool)."""

DEFAULTS: dict[str, Any] = {
    "scenario": "success",
    "version": "0.169.0",
    # exec-<uuid>.png (code mode), call_<id>.png (direct call), ig_<id>.png (hosted, old versions)
    "name_style": "exec",
    "delay": 0.0,  # seconds between turn.started and the image
    "final_delay": 0.0,  # seconds between the saved image and the closing message
    "width": 64,
    "height": 64,
    "alpha": False,  # an RGBA image (as for a transparent background)
    "copy_reference": False,  # "edit" by returning the first -i image unchanged
    "image_file": None,  # a file whose bytes are the image (e.g. a large PNG), as the backend sent
    "message": None,  # the closing agent message; None: a default per scenario
    "error_message": None,  # for scenario "turn_failed"
    # For scenario "image_refused": what the images endpoint answered (status, and the body as
    # text, or an object sent as JSON); codex passes both on verbatim.
    "images_status": 403,
    "images_body": {
        "error": {
            "code": "image_generation_not_supported",
            "message": "Image generation is not supported for this account.",
        }
    },
    # login status answer: chatgpt | apikey | agent | pat | none | error; None: from auth.json
    "login": None,
    "image_generation": True,  # what `features list` reports
    # {"needle": {"scenario": ..., "delay": ...}}: the options of the first needle found in the
    # prompt override these for the turn (a batch of prompts with mixed outcomes, one fake)
    "by_prompt": {},
    "stdin_delay": 0.0,  # seconds before codex starts reading its stdin
    "version_delay": 0.0,  # seconds before --version answers
    "stdin_timeout": 10.0,  # the real codex waits forever for stdin EOF; we give up after this
    "hang_max": 120.0,  # a hanging fake still exits after this, so a broken test cannot leak it
    "helper": False,  # start a helper grandchild (as codex starts its code-mode host)
    "helper_keeps_pipes": False,  # ...that inherits codex's stdout and stderr
    # ...that double-forks a daemon (its own session) holding codex's stdout and stderr, which
    # no process-group or tree kill reaches; its pid goes to daemon.pid in the fake's folder
    "helper_daemon": False,
    "ignore_sigterm": False,  # ignore SIGTERM in any scenario (as hang_ignore_sigterm does)
    "write_pieces": 1,  # write the image file in this many pieces...
    "piece_delay": 0.0,  # ...this many seconds apart (a slow disk or a slow download)
    # SIGKILL itself: "turn" (after turn.started), "image" (after the first piece of the image
    # file) or "saved" (after the image file is complete, before the closing message)
    "sigkill_at": None,
    "stderr_bytes": 4 * 1024 * 1024,
    "huge_bytes": 8 * 1024 * 1024,
    # The subscription's usage windows the backend reports (codex-facts section 11): percent
    # used of the 5-hour and the weekly window (a usage limit's scenarios: the 5-hour one at
    # 100), written to the session log as codex does; None: the backend sent none.
    "usage_windows": {"primary": 34.5, "secondary": 12.0, "plan": "plus"},
    # How `codex app-server` answers account/rateLimits/read: "ok" (the windows above, in
    # whole percents), "refused" (the backend refused the login: 401), "unavailable" (it could
    # not be reached) or "hang" (no answer).
    "usage_read": "ok",
    # How many times codex sends the images request for the image (the first ones answered
    # 500, as codex resends them); each is a stderr line when RUST_LOG asks for
    # codex_http_client::client=debug (0.149+, codex-facts section 12).
    "image_requests": 1,
}

# Closing texts codex prints for failed turns (codex-facts section 7), keyed by scenario. A usage
# limit names its reset time, in local time, as `{reset}`: see failure_text().
FAILURES: dict[str, str] = {
    # As 0.169 prints it, with a typographic apostrophe.
    "usage_limit": (
        "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
        "https://chatgpt.com/settings/usage to purchase more credits or try again at {reset}."
    ),
    "usage_limit_date": (
        "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase "
        "more credits or try again at {reset}."
    ),
    "rate_limited": (
        "exceeded retry limit, last status: 429 Too Many Requests, request id: req-401-abc"
    ),
    "credits_exhausted": "Your workspace is out of credits. Ask your workspace admin to add more.",
    "plan_not_included": (
        "To use Codex with your ChatGPT plan, upgrade to Plus: https://openai.com/chatgpt/pricing."
    ),
    "refresh_failed": (
        "Your access token could not be refreshed because your refresh token was already used. "
        "Please log out and sign in again."
    ),
    "unauthorized": (
        'unexpected status 401 Unauthorized: {"detail":"Could not parse your authentication '
        'token. Please try signing in again."}'
    ),
    "model_not_supported": (
        'unexpected status 400 Bad Request: {"detail":"The \'gpt-4.1\' model is not supported '
        'when using Codex with a ChatGPT account."}'
    ),
    "capacity": "Selected model is at capacity. Please try a different model.",
    "stream_disconnected": (
        "stream disconnected before completion: error sending request for url "
        "(https://chatgpt.com/backend-api/codex/responses)"
    ),
}

# How far ahead a usage limit resets: codex prints the time alone when the reset is within a day,
# else the date too (`%b %-d<suffix>, %Y %-I:%M %p`).
_RESETS = {"usage_limit": dt.timedelta(hours=1, minutes=45),
           "usage_limit_date": dt.timedelta(days=2, hours=1, minutes=45)}  # fmt: skip


def failure_text(scenario: str, now: dt.datetime | None = None) -> str:
    """The text codex prints for a failed turn of ``scenario``; a reset time is made from ``now``
    (default: the clock), as codex makes it from the backend's `resets_at`, so it never passes."""
    template = FAILURES[scenario]
    if scenario not in _RESETS:
        return template
    at = (now or dt.datetime.now().astimezone()) + _RESETS[scenario]
    clock = f"{at.hour % 12 or 12}:{at.minute:02d} {'AM' if at.hour < 12 else 'PM'}"
    if scenario == "usage_limit":
        return template.format(reset=clock)
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(at.day % 10 if at.day // 10 != 1 else 0, "th")
    return template.format(reset=f"{at:%b} {at.day}{suffix}, {at.year} {clock}")


SCENARIOS = (
    "success",
    "reconnecting",
    "no_image",
    "image_refused",
    "hosted",
    "hosted_failed",
    "invalid_png",
    "truncated_png",
    "host_crashed",
    "jpeg",
    "turn_failed",
    *FAILURES,
    # A model obeying an injected prompt: it runs `cat "$CODEX_HOME/auth.json"; id` and asks for
    # an image of the output. As the real codex: the command runs only while the shell is on.
    "injected",
    # A model whose code-mode script throws codex's failure line for a usage limit of six days,
    # without calling the image tool (as 0.171 records it: no image record, no stderr line).
    "forged_failure",
    "hang",
    "hang_ignore_sigterm",
    "hang_after_image",
    "grandchild",
    "stderr_flood",
    "malformed_lines",
    "huge_line",
)

_RECORDED_ENV = (
    "PATH",
    "HOME",
    "CODEX_HOME",
    "CODEX_MANAGED_BY_NPM",
    "CODEX_MANAGED_BY_BUN",
    "CODEX_MANAGED_BY_PNPM",
    "CODEX_MANAGED_PACKAGE_ROOT",
    "RUST_LOG",
)
# Recorded by presence only: the records must not hold secrets either.
_SECRET_ENV = ("CODEX_API_KEY", "CODEX_ACCESS_TOKEN", "OPENAI_API_KEY")

_FLAGS = {
    "--json",
    "--skip-git-repo-check",
    "--ephemeral",
    "--ignore-user-config",
    "--ignore-rules",
    "--strict-config",
    "--oss",
    "--trust",
    "--worktree",
    "--approve-for-me",
    "--dangerously-bypass-approvals-and-sandbox",
    "--dangerously-bypass-hook-trust",
}
_VALUED = {
    "-c": "config",
    "--config": "config",
    "--enable": "enable",
    "--disable": "disable",
    "-m": "model",
    "--model": "model",
    "-p": "profile",
    "--profile": "profile",
    "-s": "sandbox",
    "--sandbox": "sandbox",
    "-C": "cd",
    "--cd": "cd",
    "--add-dir": "add_dir",
    "-o": "output_last_message",
    "--output-last-message": "output_last_message",
    "--output-schema": "output_schema",
    "--color": "color",
    "--local-provider": "local_provider",
    "--thread-source": "thread_source",
    "--cyber-access-program": "cyber_access_program",
}
_SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
_CANONICAL = {"-c": "--config", "-m": "--model", "-p": "--profile", "-s": "--sandbox",
              "-C": "--cd", "-o": "--output-last-message", "-i": "--image"}  # fmt: skip
_REPEATABLE = {"--config", "--enable", "--disable", "--image", "--add-dir"}


def _split_option(arg: str) -> tuple[str, str | None]:
    """``--model=x`` -> ("--model", "x"); ``-mx`` and ``-m=x`` -> ("-m", "x"); else (arg, None)."""
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        return name, value if eq else None
    if arg.startswith("-") and len(arg) > 2 and arg[:2] in _VALUED:
        return arg[:2], arg[2:].removeprefix("=")
    if arg.startswith("-") and len(arg) > 2 and arg[:2] in ("-i",):
        return arg[:2], arg[2:].removeprefix("=")
    return arg, None


class Usage(Exception):
    """A command-line error, reported like clap does (exit 2)."""


class Fake:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.overrides: list[str] = []
        """Global ``-c key=value`` options, in order."""
        self.dir = Path(os.environ[DIR_ENV]) if os.environ.get(DIR_ENV) else None
        self.opts = self._load_options()
        self.record: dict[str, Any] = {
            "argv": argv,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "started": time.time(),
            "scenario": self.opts["scenario"],
            "env": {k: os.environ[k] for k in _RECORDED_ENV if k in os.environ},
            "env_present": [k for k in _SECRET_ENV if k in os.environ],
            "stdin": None,
        }
        self._record_path = self._new_record_path()
        self.save()
        # Whatever blocks it (a full stderr pipe nobody reads, a delay), a fake never outlives this.
        watchdog = threading.Timer(float(self.opts["hang_max"]) + 5.0, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()

    # --- options and records ---

    def _load_options(self) -> dict[str, Any]:
        opts = dict(DEFAULTS)
        if self.dir is not None:
            try:
                opts.update(json.loads((self.dir / CONTROL_FILE).read_text("utf-8")))
            except FileNotFoundError:
                pass
        if os.environ.get(OPTIONS_ENV):
            opts.update(json.loads(os.environ[OPTIONS_ENV]))
        if os.environ.get(SCENARIO_ENV):
            opts["scenario"] = os.environ[SCENARIO_ENV]
        if opts["scenario"] not in SCENARIOS:
            raise SystemExit(f"fake codex: unknown scenario {opts['scenario']!r}")
        return opts

    def _new_record_path(self) -> Path | None:
        if self.dir is None:
            return None
        calls = self.dir / "calls"
        calls.mkdir(exist_ok=True)
        stamp = f"{time.time_ns():020d}-{os.getpid()}"
        return calls / f"{stamp}.json"

    def save(self) -> None:
        if self._record_path is None:
            return
        tmp = self._record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record), "utf-8")
        os.replace(tmp, self._record_path)

    # --- dispatch ---

    def run(self) -> int:
        args = self.argv
        home = os.environ.get("CODEX_HOME")
        if home and Path(home).is_dir():
            _helper_aliases(Path(home))
        if not args:
            raise Usage("the interactive TUI is not simulated by the fake codex")
        profile = None
        while len(args) > 1 and (
            args[0] in ("-p", "--profile", "-c", "--config")
            or args[0].startswith(("--disable=", "--enable="))
        ):
            # The global forms, before the command: -p NAME, -c key=value, --disable=FEATURE
            # (as codex, any order).
            if args[0].startswith(("--disable=", "--enable=")):
                args = args[1:]
                continue
            if args[0] in ("-p", "--profile"):
                profile = args[1]
            else:
                self.overrides.append(args[1])
            args = args[2:]
        if args[0] in ("--version", "-V"):
            time.sleep(float(self.opts["version_delay"]))
            print(f"codex-cli {self.opts['version']}")
            return 0
        if args[:2] == ["login", "status"]:
            return self.login_status()
        if args[:2] == ["features", "list"]:
            if profile is not None and self.version >= PROFILE_FILES_SINCE:
                err(
                    "Error: --profile only applies to runtime commands and `codex mcp`: "
                    "`codex`, `codex exec`, `codex review`, `codex resume`, `codex mcp`."
                )
                return 1
            return self.config_error() or self.features_list(args[2:], profile)
        if args[0] == "app-server":
            return self.app_server()
        if args[0] in ("exec", "e"):
            ex = Exec(self, args[1:])
            if profile is not None:
                ex.values.setdefault("profile", [profile])
            return ex.run()
        raise Usage(f"unrecognized subcommand '{args[0]}'")

    def app_server(self) -> int:
        """``codex app-server`` as 0.125-0.171 answer what we ask it (codex-facts section 11):
        JSON-RPC, a JSON object a line; notifications come before answers."""
        home = self.codex_home()
        if home is None:
            return 1
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            method, ident = message.get("method"), message.get("id")
            if method == "initialize":
                emit(
                    {
                        "id": ident,
                        "result": {
                            "userAgent": f"{message['params']['clientInfo']['name']}/"
                            f"{self.opts['version']}",
                            "codexHome": str(home),
                            "platformFamily": "unix",
                            "platformOs": "linux",
                        },
                    }
                )
                emit({"method": "account/updated", "params": {"authMode": "chatgpt",
                      "planType": (self.opts["usage_windows"] or {}).get("plan")}})  # fmt: skip
            elif method == "account/rateLimits/read":
                self.record["usage_read"] = True
                self.save()
                emit(self._rate_limits_answer(ident))
            elif ident is not None:
                unknown = {"code": -32601, "message": f"method not found: {method}"}
                emit({"id": ident, "error": unknown})
        return 0

    def _rate_limits_answer(self, ident: object) -> dict[str, Any]:
        how = self.opts["usage_read"]
        url = "https://chatgpt.com/backend-api/wham/usage"
        if how == "hang":
            time.sleep(float(self.opts["hang_max"]))
        if how in ("refused", "unavailable"):
            reason = (
                '401 Unauthorized; content-type=application/json; body={"detail":"Could not '
                'parse your authentication token."}'
                if how == "refused"
                else "error sending request"
            )
            message = f"failed to fetch codex rate limits: GET {url} failed: {reason}"
            return {"id": ident, "error": {"code": -32603, "message": message}}
        windows = self.opts["usage_windows"] or {}
        now = int(time.time())

        def window(used: float | None, minutes: int, resets_in: int) -> dict[str, Any] | None:
            if used is None:
                return None
            return {"usedPercent": int(used), "windowDurationMins": minutes,
                    "resetsAt": now + resets_in}  # fmt: skip

        limits = {
            "limitId": "codex",
            "limitName": None,
            "primary": window(windows.get("primary"), 300, 2 * 3600),
            "secondary": window(windows.get("secondary"), 10080, 3 * 86400),
            "credits": {
                "hasCredits": bool(windows.get("credits")),
                "unlimited": False,
                "balance": "12" if windows.get("credits") else "0",
            },  # fmt: skip
            "planType": windows.get("plan"),
            "rateLimitReachedType": None,
        }
        return {"id": ident, "result": {"rateLimits": limits,
                                        "rateLimitsByLimitId": {"codex": limits}}}  # fmt: skip

    def codex_home(self) -> Path | None:
        value = os.environ.get("CODEX_HOME")
        if value:
            home = Path(value)
            if not home.is_dir():
                err(
                    f'Error finding codex home: CODEX_HOME points to "{value}", '
                    "but that path does not exist"
                )
                return None
            return home
        home = Path.home() / ".codex"
        home.mkdir(exist_ok=True)
        return home

    def login_status(self) -> int:
        store = self.credentials_store()
        # The "login" option is what the OS keyring holds: codex looks there with the keyring
        # store (only), with auto (first), never with the file store (the default).
        answer = self.opts["login"] if store in ("keyring", "auto") else None
        masked = "***"
        if answer is None and store == "keyring":
            answer = "none"
        if answer is None:
            home = self.codex_home()
            if home is None:
                return 1
            answer, masked = _login_from_auth_file(home / "auth.json")
        texts = {
            "chatgpt": (0, "Logged in using ChatGPT"),
            "apikey": (
                0,
                f"API key configured - {masked}\n"
                "Authentication is checked when you send a request.",
            ),
            "agent": (0, "Logged in using Agent Identity"),
            "none": (1, "Not logged in"),
            "error": (1, "Error checking login status: failed to deserialize CLI auth from file"),
            "pat": (
                1,
                "Error checking login status: failed to request personal access token metadata",
            ),
        }
        code, text = texts[answer]
        err(text)
        return code

    def credentials_store(self) -> str:
        """``cli_auth_credentials_store`` as codex resolves it: the last ``-c`` override, else
        config.toml, else file."""
        for override in reversed(self.overrides):
            key, _, value = override.partition("=")
            if key.strip() == "cli_auth_credentials_store":
                return value.strip().strip('"')
        store = self.config().get("cli_auth_credentials_store")
        return store if isinstance(store, str) else "file"

    def config(self) -> dict[str, Any]:
        """config.toml as codex would read it (empty where tomllib is missing, before 3.11)."""
        home = os.environ.get("CODEX_HOME")
        path = Path(home) / "config.toml" if home else Path.home() / ".codex" / "config.toml"
        if sys.version_info >= (3, 11):
            import tomllib

            try:
                data: dict[str, Any] = tomllib.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                return {}
            return data
        return {}

    @property
    def version(self) -> tuple[int, ...]:
        return tuple(int(p) for p in str(self.opts["version"]).split("-")[0].split("."))

    def config_error(self) -> int:
        """Exit 1 like codex 0.169 for a configuration it refuses to load, else 0."""
        profile = self.config().get("profile")
        if not isinstance(profile, str) or self.version < PROFILE_FILES_SINCE:
            return 0
        err(
            "Error: failed to load configuration\n\nCaused by:\n    legacy "
            f'`profile = "{profile}"` config is no longer supported; use `--profile {profile}` '
            f"with `{profile}.config.toml` instead"
        )
        return 1

    def layered(self, profile: str | None, home: Path) -> dict[str, Any] | str:
        """config.toml with ``--profile`` applied as the real codex does, or its error text.

        Seen on 0.142-0.171: NAME.config.toml layered over config.toml (a missing file is
        ignored), refused while config.toml keeps a profile line or [profiles.NAME]; on 0.125,
        [profiles.NAME] of config.toml ("config profile `NAME` not found" without one)."""
        config = self.config()
        if profile is None:
            return config
        tables = config.get("profiles")
        if self.version < PROFILE_FILES_SINCE:
            table = tables.get(profile) if isinstance(tables, dict) else None
            if not isinstance(table, dict):
                return f"Error: config profile `{profile}` not found"
            return _merged(config, table)
        if config.get("profile") or (isinstance(tables, dict) and profile in tables):
            return (
                f"Error loading config.toml: --profile `{profile}` cannot be used while "
                f'{home / "config.toml"} contains legacy `profile = "{profile}"` or '
                f"`[profiles.{profile}]` config; move those settings into "
                f"{home / (profile + '.config.toml')} and remove the legacy profile "
                "selector/table. See https://developers.openai.com/codex/config-advanced#profiles "
                "for more information."
            )
        layer: dict[str, Any] = {}
        if sys.version_info >= (3, 11):
            import tomllib

            with contextlib.suppress(OSError, ValueError):
                layer = tomllib.loads((home / f"{profile}.config.toml").read_text("utf-8"))
        return _merged(config, layer)

    def code_mode_refused(self, overrides: list[str]) -> str | None:
        """Before 0.149 ``features.code_mode`` is a boolean: a key below it stops codex at
        start, with these texts (0.125, 0.142; codex-facts section 12)."""
        if self.version >= CODE_MODE_TABLE or not any(
            o.startswith("features.code_mode.") for o in overrides
        ):
            return None
        if self.version < PROFILE_FILES_SINCE:
            return "Error: invalid type: map, expected a boolean\nin `features`"
        return (
            "Error: data did not match any variant of untagged enum FeatureToml\n"
            "in `features.code_mode`"
        )

    def features_list(self, args: list[str], profile: str | None = None) -> int:
        refused = self.code_mode_refused(self.overrides)
        if refused:
            err(refused)
            return 1
        home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
        config = self.layered(profile, home)
        if isinstance(config, str):
            err(config)
            return 1
        features = config.get("features")
        enabled = bool(self.opts["image_generation"])
        if isinstance(features, dict) and features.get("image_generation") is False:
            enabled = False
        if "--disable" in args and "image_generation" in args:
            enabled = False
        rows = [(name, stage, enabled if name == "image_generation" else on)
                for name, stage, on in _FEATURES]  # fmt: skip
        for name, stage, on in rows:
            print(f"{name:<41}{stage:<19}{str(on).lower()}")
        return 0


def _helper_aliases(home: Path) -> None:
    """Every codex start (0.169, 0.171; ``--version`` too) makes its helper-binary folder in
    CODEX_HOME, or, when CODEX_HOME lies under the temp dir, prints this instead (harmless)."""
    temp = Path(tempfile.gettempdir()).resolve()
    resolved = home.resolve()
    if resolved != temp and temp not in resolved.parents:
        with contextlib.suppress(OSError):  # codex goes on without them
            (home / "tmp" / "arg0-linux").mkdir(parents=True, exist_ok=True)
    else:
        err(
            "WARNING: proceeding, even though we could not create PATH aliases: Refusing to "
            f'create helper binaries under temporary dir "{temp}" '
            f'(codex_home: AbsolutePathBuf("{home}"))'
        )


def _login_from_auth_file(path: Path) -> tuple[str, str]:
    """What codex 0.169's `login status` answers for this auth.json, and the API key as it shows
    it (first 8 and last 5 characters). Seen on the real CLI: a parseable file without tokens is
    still "Logged in using ChatGPT"; an id_token that is not a JWT makes the file unreadable."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return "none", ""
    except (OSError, ValueError):
        return "error", ""
    if not isinstance(data, dict):
        return "error", ""
    tokens = data.get("tokens")
    if isinstance(tokens, dict) and not _is_jwt(tokens.get("id_token")):
        return "error", ""
    key = data.get("OPENAI_API_KEY")
    masked = f"{key[:8]}***{key[-5:]}" if isinstance(key, str) and len(key) > 13 else "***"
    mode = data.get("auth_mode")
    if mode is None:
        if data.get("personal_access_token"):
            mode = "personalAccessToken"
        elif key:
            mode = "apikey"
        else:
            mode = "chatgpt"
    if mode == "apikey":
        return "apikey", masked
    if mode == "personalAccessToken":
        return "pat", ""  # codex asks the network who the token belongs to: fails offline
    if mode == "agentIdentity":
        return "agent", ""
    return "chatgpt", ""


def _is_jwt(value: object) -> bool:
    if not isinstance(value, str) or value.count(".") != 2:
        return False
    payload = value.split(".")[1]
    try:
        return isinstance(
            json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))), dict
        )
    except ValueError:
        return False


class Exec:
    def __init__(self, fake: Fake, args: list[str]) -> None:
        self.fake = fake
        self.opts = fake.opts
        self.flags: set[str] = set()
        self.values: dict[str, list[str]] = {}
        self.images: list[str] = []
        self.prompt_arg: str | None = None
        self._parse(args)

    def _parse(self, args: list[str]) -> None:
        """Like clap in codex 0.169: attached values (-mX, -m=X, --model=X), values that look like
        options refused, single-use options used once, -i variadic and comma-separated."""
        seen: set[str] = set()
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                rest = args[i + 1 :]
                if len(rest) > 1 or (rest and self.prompt_arg is not None):
                    raise Usage(f"unexpected argument '{rest[-1]}' found")
                if rest:
                    self.prompt_arg = rest[0]
                return
            name, inline = _split_option(arg)
            canonical = _CANONICAL.get(name, name)
            if canonical in seen and canonical not in _REPEATABLE:
                raise Usage(f"the argument '{canonical}' cannot be used multiple times")
            if name in _FLAGS and inline is None:
                self.flags.add(name)
                seen.add(canonical)
            elif name in ("-i", "--image"):
                values = [] if inline is None else [inline]
                i += 1
                # Variadic: takes values up to the next option; a lone "-" is taken as a file.
                while (
                    inline is None
                    and i < len(args)
                    and (args[i] == "-" or not args[i].startswith("-"))
                ):
                    values.append(args[i])
                    i += 1
                if not values:
                    raise Usage("a value is required for '--image <FILE>...' but none was supplied")
                self.images += [part for value in values for part in value.split(",")]
                continue
            elif name in _VALUED:
                if inline is not None:
                    value = inline
                elif i + 1 < len(args) and (args[i + 1] == "-" or not args[i + 1].startswith("-")):
                    i += 1
                    value = args[i]
                else:
                    raise Usage(f"a value is required for '{canonical}' but none was supplied")
                key = _VALUED[name]
                if key == "sandbox" and value not in _SANDBOXES:
                    raise Usage(f"invalid value '{value}' for '--sandbox <SANDBOX_MODE>'")
                self.values.setdefault(key, []).append(value)
                seen.add(canonical)
            elif arg.startswith("-") and arg != "-":
                raise Usage(
                    f"unexpected argument '{arg}' found\n\n  tip: to pass '{arg}' as a value, "
                    f"use '-- {arg}'"
                )
            elif self.prompt_arg is None:
                self.prompt_arg = arg
            else:
                raise Usage(f"unexpected argument '{arg}' found")
            i += 1

    def run(self) -> int:
        home = self.fake.codex_home()
        if home is None:
            return 1
        self.home = home
        profile = self.values.get("profile", [None])[-1]
        if profile is not None and self.fake.version >= PROFILE_FILES_SINCE and not _plain(profile):
            raise Usage(
                f"invalid value '{profile}' for '--profile <CONFIG_PROFILE_V2>': invalid "
                f"--profile value `{profile}`; pass a plain name such as `work`"
            )
        config = self.fake.layered(profile, home) if profile else self.fake.config()
        if isinstance(config, str) or (not profile and self.fake.config_error()):
            if isinstance(config, str):
                err(config)
            return 1
        provider = config.get("model_provider")
        providers = config.get("model_providers")
        if provider not in (None, "openai") and not (
            isinstance(providers, dict) and provider in providers
        ):
            err(f"Error: Model provider `{provider}` not found")
            return 1
        known = {name for name, _, _ in _FEATURES}
        for name in self.values.get("disable", []) + self.values.get("enable", []):
            if name not in known:
                err(f"Error: Unknown feature flag: {name}")  # as codex 0.125-0.171
                return 1
        self.disabled = set(self.values.get("disable", []))
        self.fake.record["disabled"] = sorted(self.disabled)
        # What starts for this turn: the configured MCP servers not turned off by -c.
        overrides = [*self.fake.overrides, *self.values.get("config", [])]
        servers = _merged(config, _overrides(overrides)).get("mcp_servers")
        self.fake.record["mcp_started"] = sorted(
            name
            for name, server in (servers if isinstance(servers, dict) else {}).items()
            if not (isinstance(server, dict) and server.get("enabled") is False)
        )
        self.fake.record["web_search"] = 'web_search="disabled"' not in overrides
        refused = self.fake.code_mode_refused(overrides)
        if refused:
            err(refused)
            return 1
        yields = [o.partition("=")[2] for o in overrides if o.startswith(CODE_MODE_YIELD + "=")]
        self.fake.record["yield_ms"] = int(yields[-1]) if yields else None
        self.fake.record["profile"] = profile
        self.fake.record["model"] = self.values.get("model", [None])[-1] or config.get("model")
        cwd = Path(self.values.get("cd", [os.getcwd()])[-1]).absolute()
        if not cwd.is_dir():
            err(f"Error: failed to change directory to {cwd}")
            return 1
        self.cwd = cwd
        if "--skip-git-repo-check" not in self.flags and not _in_git_repo(cwd):
            err("Not inside a trusted directory and --skip-git-repo-check was not specified.")
            return 1
        prompt = self._read_prompt()
        if prompt is None:
            return 1
        self.prompt = prompt
        self.fake.record["stdin_prompt"] = prompt
        self.fake.record["images"] = self.images
        self.fake.record["images_exist"] = [(self.cwd / image).is_file() for image in self.images]
        self.fake.save()
        return Turn(self).run()

    def _read_prompt(self) -> str | None:
        from_stdin = self.prompt_arg in (None, "-")
        if from_stdin and sys.stdin.isatty():
            err(
                "No prompt provided. Either specify one as an argument or pipe the prompt into "
                "stdin."
            )
            return None
        if not from_stdin and (sys.stdin is None or sys.stdin.isatty()):
            return self.prompt_arg
        err(
            "Reading prompt from stdin..."
            if from_stdin
            else "Reading additional input from stdin..."
        )
        time.sleep(float(self.opts["stdin_delay"]))
        data = _read_stdin(float(self.opts["stdin_timeout"]))
        if data is None:
            err(
                "fake codex: stdin was never closed; the real codex would wait for it forever "
                f"(gave up after {self.opts['stdin_timeout']} s)"
            )
            self.fake.record["stdin_left_open"] = True
            self.fake.save()
            # A normal exit would abort: the reader thread still holds stdin's buffer lock.
            sys.stdout.flush()
            os._exit(1)
        text = data.decode("utf-8", "replace")
        self.fake.record["stdin"] = text
        self.fake.save()
        if from_stdin:
            if not text.strip():
                err("No prompt provided via stdin.")
                return None
            return text
        return f"{self.prompt_arg}\n\n<stdin>\n{text}\n</stdin>" if text else self.prompt_arg


def _toml_value(raw: str) -> object:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            return tomllib.loads(f"v = {raw}")["v"]
        except ValueError:
            return None
    return None


def _overrides(options: list[str]) -> dict[str, Any]:
    """``-c key.path=value`` options as one table, as codex reads them: the key path split on
    every dot (quotes or not), the value parsed as TOML (needs tomllib: Python 3.11+)."""
    table: dict[str, Any] = {}
    for option in options:
        key, eq, raw = option.partition("=")
        value = _toml_value(raw) if eq else None
        if value is None:
            continue
        *parents, last = key.strip().split(".")
        below = table
        for part in parents:
            below = below.setdefault(part, {})
            if not isinstance(below, dict):
                break
        else:
            below[last] = value
    return table


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\")


def _merged(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``layer`` over ``base``: tables merge, other values replace (codex's config layering)."""
    merged = dict(base)
    for key, value in layer.items():
        below = merged.get(key)
        merged[key] = (
            _merged(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
        )
    return merged


def _read_stdin(timeout: float) -> bytes | None:
    """All of stdin, or None when it is not closed within ``timeout`` seconds."""
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(sys.stdin.buffer.read()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else None


def _in_git_repo(path: Path) -> bool:
    return any((p / ".git").exists() for p in (path, *path.parents))


class Turn:
    """One `codex exec` turn: events on stdout, files under CODEX_HOME, as codex writes them."""

    def __init__(self, ex: Exec) -> None:
        self.ex = ex
        self.opts = dict(ex.opts)
        for needle, override in dict(ex.opts["by_prompt"]).items():
            if needle in ex.prompt:
                self.opts.update(override)
                break
        self.scenario: str = self.opts["scenario"]
        if self.scenario not in SCENARIOS:
            raise SystemExit(f"fake codex: unknown scenario {self.scenario!r}")
        ex.fake.record["scenario"] = self.scenario
        self.thread_id = _uuid7()
        self.now = dt.datetime.now().astimezone()
        self.items = 0
        self.revised: str | None = None
        """What the model asked the image tool for, when not the user's request."""
        self.rollout: Path | None = None
        if "--ephemeral" not in ex.flags:
            day = ex.home / "sessions" / self.now.strftime("%Y/%m/%d")
            day.mkdir(parents=True, exist_ok=True)
            stamp = self.now.strftime("%Y-%m-%dT%H-%M-%S")
            self.rollout = day / f"rollout-{stamp}-{self.thread_id}.jsonl"
        self.version = tuple(int(p) for p in str(self.opts["version"]).split("-")[0].split("."))

    def run(self) -> int:
        scenario = self.scenario
        if scenario == "hang_ignore_sigterm" or self.opts["ignore_sigterm"]:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.ex.fake.record["thread_id"] = self.thread_id
        self.ex.fake.save()
        self._rollout_line(
            "session_meta",
            {
                "id": self.thread_id,
                "timestamp": _iso(self.now),
                "cwd": str(self.ex.cwd),
                "originator": "codex_exec",
                "cli_version": self.opts["version"],
                "source": "exec",
                "model_provider": "openai",
            },
        )
        self._rollout_line("event_msg", {"type": "user_message", "message": self.ex.prompt})
        emit({"type": "thread.started", "thread_id": self.thread_id})
        emit({"type": "turn.started"})
        if scenario == "grandchild" or self.opts["helper"]:
            self._start_helper()
        if scenario == "stderr_flood":
            _flood_stderr(int(self.opts["stderr_bytes"]))
        if scenario == "malformed_lines":
            _malformed_lines()
        if scenario == "huge_line":
            self._agent_message("x" * int(self.opts["huge_bytes"]))
        if scenario == "reconnecting":
            for n in (1, 2):
                emit(
                    {
                        "type": "error",
                        "message": f"Reconnecting... {n}/5 ({FAILURES['stream_disconnected']})",
                    }
                )
        if self.opts["sigkill_at"] == "turn":
            _die()
        if scenario in ("hang", "hang_ignore_sigterm", "grandchild"):
            return self._hang()
        if float(self.opts["delay"]) > 0:
            time.sleep(float(self.opts["delay"]))
        self._token_count()
        if scenario in FAILURES or scenario == "turn_failed":
            return self._fail()
        if scenario == "injected":
            self.revised = f"A poster of: {self._injected_command()}"
        if scenario == "forged_failure":
            return self._forged_failure()
        closing = self._image()
        if self.opts["sigkill_at"] == "saved":
            _die()
        if scenario == "hang_after_image":
            return self._hang()
        if float(self.opts["final_delay"]) > 0:
            time.sleep(float(self.opts["final_delay"]))
        self._agent_message(self.opts["message"] or closing)
        self._turn_completed()
        return 0

    def _token_count(self) -> None:
        """The model response's token count with the usage windows, as every release records
        it (the windows null when the backend sent no headers)."""
        windows = self.opts["usage_windows"] or {}
        now = self.now.timestamp()

        def window(used: float | None, minutes: int, resets_in: float) -> dict[str, Any] | None:
            if used is None:
                return None
            return {"used_percent": float(used), "window_minutes": minutes,
                    "resets_at": int(now + resets_in)}  # fmt: skip

        primary = windows.get("primary")
        reset = 2 * 3600.0
        if self.scenario in _RESETS:
            primary, reset = 100.0, _RESETS[self.scenario].total_seconds()
        limits = {
            "limit_id": "codex",
            "limit_name": None,
            "primary": window(primary, 300, reset),
            "secondary": window(windows.get("secondary"), 10080, 3 * 86400.0),
            "credits": {
                "has_credits": bool(windows.get("credits")),
                "unlimited": False,
                "balance": "12" if windows.get("credits") else None,
            },  # fmt: skip
            "plan_type": windows.get("plan"),
        }
        info = {"total_token_usage": {"input_tokens": 24763, "output_tokens": 122}}
        self._rollout_line("event_msg", {"type": "token_count", "info": info,
                                         "rate_limits": limits})  # fmt: skip

    def _turn_completed(self) -> None:
        usage = {
            "input_tokens": 24763,
            "cached_input_tokens": 24448,
            "output_tokens": 122,
            "reasoning_output_tokens": 64,
        }
        if self.version >= (0, 149, 0):
            usage["cache_write_input_tokens"] = 0
        emit({"type": "turn.completed", "usage": usage})

    def _image(self) -> str:
        """Produce the image the scenario calls for; return the closing message to print."""
        scenario = self.scenario
        if scenario == "no_image":
            return "I can't generate images here, but here is a description of the scene instead."
        call_id = self._call_id()
        if scenario == "image_refused":
            return self._refused(call_id)
        if scenario == "host_crashed":
            # The code-mode host died under the exec call: its output says so, no image record.
            self._rollout_line("response_item", {
                "type": "custom_tool_call_output", "id": f"ctco_{uuid.uuid4()}",
                "call_id": f"call_{uuid.uuid4().hex[:24]}",
                "output": [{"type": "input_text",
                            "text": "Script error:\ngRPC code-mode session closed"}],
            })  # fmt: skip
            return "The exec tool failed, so no image was generated."
        png = make_png(
            int(self.opts["width"]),
            int(self.opts["height"]),
            self.ex.prompt,
            {"thread_id": self.thread_id, "prompt_sha256": _sha256(self.ex.prompt)},
            alpha=bool(self.opts["alpha"]),
        )
        if self.opts["image_file"]:
            png = Path(self.opts["image_file"]).read_bytes()
        if self.opts["copy_reference"] and self.ex.images:
            png = (self.ex.cwd / self.ex.images[0]).read_bytes()
        if scenario == "hosted_failed":
            # A failed hosted call: 0.125 and 0.131 leave an empty ig_*.png, 0.142 nothing.
            saved = None
            if self.version < (0, 142, 0):
                folder = self.ex.home / "generated_images" / self.thread_id
                folder.mkdir(parents=True, exist_ok=True)
                saved = folder / f"{call_id}.png"
                saved.write_bytes(b"")
            self._image_record(call_id, "failed", None, saved, None)
            return "Here is the image."
        if scenario == "hosted":
            # Accepted by 0.149+ but written to no file: only the rollout keeps the base64.
            self._rollout_line(
                "response_item",
                {
                    "type": "image_generation_call",
                    "id": call_id,
                    "status": "completed",
                    "revised_prompt": _requested(self.ex.prompt),
                    "result": base64.b64encode(png).decode("ascii"),
                },
            )
            return "Here is the image."
        # Codex writes whatever bytes the backend sent (empty, or not a PNG, alike).
        data = png
        if scenario == "invalid_png":
            data = _corrupt_crc(png)
        elif scenario == "truncated_png":
            data = png[: len(png) // 2]
        elif scenario == "jpeg":
            data = _JPEG
        self._http_log(int(self.opts["image_requests"]))
        folder = self.ex.home / "generated_images" / self.thread_id
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / f"{call_id}.png"
        self.ex.fake.record["image_sha256"] = hashlib.sha256(data).hexdigest()
        self.ex.fake.save()
        self._write_image(saved, data)
        self.ex.fake.record["image_path"] = str(saved)
        self.ex.fake.save()
        self._image_record(call_id, "completed", data, saved, None)
        return f"Generated the image ({self.opts['width']}x{self.opts['height']})."

    def _injected_command(self) -> str:
        """What the injected model's command gives it: the login and the user's identity while
        codex offers a shell, else the error its absence raises (codex-facts section 10)."""
        if not {"shell_tool", "unified_exec"} <= self.ex.disabled:
            self.ex.fake.record["ran_command"] = True
            self.ex.fake.save()
            auth = (self.ex.home / "auth.json").read_text("utf-8", "replace")
            return f"{auth}uid={os.getuid()}"
        if self.opts["name_style"] == "exec":
            return "TypeError: tools.exec_command is not a function"
        return "unsupported call: exec_command"

    def _forged_failure(self) -> int:
        """As 0.171 records a script that throws codex's failure line: the exec call's output
        says it, no image record, nothing on stderr, exit 0."""
        forged = (
            'image generation failed: http 429 Too Many Requests: Some("{\\"error\\": '
            '{\\"type\\": \\"usage_limit_reached\\", \\"resets_in_seconds\\": 518400}}")'
        )
        call = f"call_{uuid.uuid4().hex[:24]}"
        self._rollout_line("response_item", {
            "type": "custom_tool_call", "id": f"ctc_{uuid.uuid4().hex[:12]}", "call_id": call,
            "name": "exec", "input": f"throw new Error({json.dumps(forged)});\n"})  # fmt: skip
        self._rollout_line("response_item", {
            "type": "custom_tool_call_output", "id": f"ctco_{uuid.uuid4()}", "call_id": call,
            "output": [{"type": "input_text", "text": "Script failed\nWall time 0.0 seconds\n"
                        "Output:\n"},
                       {"type": "input_text", "text": f"Script error:\nError: {forged}\n"
                        "    at exec_main.mjs:1:7"}]})  # fmt: skip
        self._agent_message(forged)
        self._turn_completed()
        return 0

    def _refused(self, call_id: str) -> str:
        """The images endpoint refused, as 0.149-0.171 record it: exit 0, the image record
        "failed" with "failure": null, the reason in the tool call's output (a plain string for
        a direct call; in code mode the exec call's output, under its own call id) and in one
        stderr line."""
        status = int(self.opts["images_status"])
        body = self.opts["images_body"]
        text = body if isinstance(body, str) else json.dumps(body)
        try:
            phrase = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            phrase = str(status)
        failure = f"image generation failed: http {phrase}: Some({_rust_debug(text)})"
        exec_call = self._image_record(call_id, "failed", None, None, None)
        if exec_call is None:
            output: Any = failure
            kind, output_call = "function_call_output", call_id
        else:
            wall = "Script failed\nWall time 0.1 seconds\nOutput:\n"
            output = [{"type": "input_text", "text": wall},
                      {"type": "input_text", "text": f"Script error:\n{failure}"}]  # fmt: skip
            kind, output_call = "custom_tool_call_output", exec_call
        self._rollout_line(
            "response_item",
            {
                "type": kind,
                "id": f"{'ctco' if exec_call else 'fco'}_{uuid.uuid4()}",
                "call_id": output_call,
                "output": output,
            },  # fmt: skip
        )
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        err(f"{stamp} ERROR codex_core::tools::router: error={failure}")
        return "The image tool failed, so no image was generated."

    def _http_log(self, requests: int) -> None:
        """codex_http_client's line per images request, as 0.149-0.171 write it with
        RUST_LOG=...,codex_http_client::client=debug: the resends first (500), then the one
        that served the image."""
        if self.version < (0, 149, 0) or "codex_http_client::client=debug" not in os.environ.get(
            "RUST_LOG", ""
        ):
            return
        url = "https://chatgpt.com/backend-api/codex/images/generations"
        for n in range(requests):
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            status = "200 OK" if n == requests - 1 else "500 Internal Server Error"
            err(f"{stamp} DEBUG codex_http_client::client: Request completed method=POST "
                f'url={url} status={status} headers={{"content-type": "application/json", '
                '"set-cookie": "__cf_bm=fake-cookie; path=/"} version=HTTP/2.0')  # fmt: skip

    def _write_image(self, path: Path, data: bytes) -> None:
        """Write the file as the options say: at once, slowly in pieces (each flushed, so a reader
        sees it), or only its first piece before dying."""
        pieces = max(1, int(self.opts["write_pieces"]))
        if self.opts["sigkill_at"] == "image":
            pieces = max(pieces, 2)
        size = -(-len(data) // pieces)
        with path.open("wb") as handle:
            for n, start in enumerate(range(0, len(data), size)):
                if n:
                    time.sleep(float(self.opts["piece_delay"]))
                handle.write(data[start : start + size])
                handle.flush()
                if self.opts["sigkill_at"] == "image" and start + size < len(data):
                    _die()

    def _call_id(self) -> str:
        style = self.opts["name_style"]
        token = uuid.uuid4().hex
        if style == "call":
            return f"call_{token[:24]}"
        if style == "ig":
            return f"ig_{token}"
        return f"exec-{uuid.uuid4()}"

    def _image_record(
        self,
        call_id: str,
        status: str,
        data: bytes | None,
        saved: Path | None,
        failure: dict[str, str] | None,
    ) -> str | None:
        """The rollout lines codex writes for an image call, in the shapes recorded from the
        real CLI (fixtures/codex-<version>/): keys appear exactly when the real ones do.
        Returns the call id of the code-mode exec call that made it, if one did."""
        result = base64.b64encode(data).decode("ascii") if data is not None else ""
        revised = self.revised or _requested(self.ex.prompt)
        if self.opts["name_style"] == "ig" or self.version < CLIENT_SIDE_TOOL:
            # The hosted tool (0.125-0.143): an event_msg plus the response item.
            end: dict[str, Any] = {
                "type": "image_generation_end",
                "call_id": call_id,
                "status": status,
                "revised_prompt": revised,
                "result": result,
            }
            if saved is not None:
                end["saved_path"] = str(saved)
            self._rollout_line("event_msg", end)
            self._rollout_line(
                "response_item",
                {
                    "type": "image_generation_call",
                    "id": call_id,
                    "status": status,
                    "revised_prompt": revised,
                    "result": result,
                },
            )
            return None
        exec_call = None
        if self.opts["name_style"] == "exec":
            # Code mode: the model's JavaScript for the exec tool is logged first.
            exec_call = f"call_{uuid.uuid4().hex[:24]}"
            self._rollout_line(
                "response_item",
                {
                    "type": "custom_tool_call",
                    "id": f"ctc_{uuid.uuid4().hex[:12]}",
                    "call_id": exec_call,
                    "name": "exec",
                    "input": "const result = await tools.image_gen__imagegen("
                    f"{json.dumps({'prompt': revised})});\ngeneratedImage(result);\n",
                },
            )
        if self.opts["name_style"] == "call":
            # A direct call: the model's function_call is logged first.
            self._rollout_line(
                "response_item",
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex[:12]}",
                    "name": "imagegen",
                    "namespace": "image_gen",
                    "arguments": json.dumps({"prompt": revised}),
                    "call_id": call_id,
                },
            )
        item: dict[str, Any] = {
            "type": "Extension",
            "kind": "image_gen.generation",
            "id": call_id,
            "status": status,
            "revisedPrompt": revised,
            "result": result,
            "transparentBackground": None,
            "failure": failure,
        }
        if saved is not None:
            item["savedPath"] = str(saved)
        if self.version >= (0, 169, 0):
            item["generationId"] = None
        now_ms = int(time.time() * 1000)
        self._rollout_line(
            "event_msg",
            {
                "type": "item_completed",
                "thread_id": self.thread_id,
                "turn_id": "0",
                "item": item,
                "started_at_ms": now_ms,
                "completed_at_ms": now_ms,
            },
        )
        return exec_call

    def _fail(self) -> int:
        message = (
            self.opts["error_message"] or "something went wrong"
            if self.scenario == "turn_failed"
            else failure_text(self.scenario)
        )
        if self.scenario == "stream_disconnected":
            for n in range(1, 6):
                emit({"type": "error", "message": f"Reconnecting... {n}/5 ({message})"})
        emit({"type": "error", "message": message})
        emit({"type": "turn.failed", "error": {"message": message}})
        err(f"ERROR: {message}")
        return 1

    def _hang(self) -> int:
        self.ex.fake.record["hanging"] = True
        self.ex.fake.save()
        deadline = time.monotonic() + float(self.opts["hang_max"])
        while time.monotonic() < deadline:
            time.sleep(0.05)
        err("fake codex: hang_max reached, exiting")
        return 1

    def _start_helper(self) -> None:
        lifetime = float(self.opts["hang_max"])
        # Same process group, as codex's own helpers (code-mode host, MCP servers) are.
        keeps = bool(self.opts["helper_keeps_pipes"] or self.opts["helper_daemon"])
        code = f"import time; time.sleep({lifetime})"
        if self.opts["helper_daemon"] and self.ex.fake.dir is not None:
            pid_file = json.dumps(str(self.ex.fake.dir / "daemon.pid"))
            code = (
                "import os, time\n"
                "if os.fork() == 0:\n"
                "    os.setsid()\n"
                f"    open({pid_file}, 'w').write(str(os.getpid()))\n"
                f"    time.sleep({lifetime})\n"
                "os._exit(0)\n"
            )
        helper = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=None if keeps else subprocess.DEVNULL,
            stderr=None if keeps else subprocess.DEVNULL,
        )
        self.ex.fake.record["helper_pid"] = helper.pid
        self.ex.fake.save()

    def _agent_message(self, text: str) -> None:
        emit(
            {
                "type": "item.completed",
                "item": {"id": f"item_{self.items}", "type": "agent_message", "text": text},
            }
        )
        self.items += 1

    def _rollout_line(self, kind: str, payload: dict[str, Any]) -> None:
        if self.rollout is None:
            return
        line = {
            "timestamp": _iso(dt.datetime.now(dt.timezone.utc)),
            "type": kind,
            "payload": payload,
        }
        with self.rollout.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


# --- output helpers ---


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _die() -> None:
    """End like a process killed by the OOM killer or `kill -9`: no clean-up, no exit message."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _flood_stderr(total: int) -> None:
    line = b"2026-11-21T05:00:00.000000Z  WARN codex_core::fake: filler line to fill the pipe\n"
    chunk = line * (65536 // len(line))
    written = 0
    while written < total:
        sys.stderr.buffer.write(chunk)
        written += len(chunk)
    sys.stderr.buffer.flush()


def _malformed_lines() -> None:
    out = sys.stdout.buffer
    for raw in (
        b"this is not json\n",
        b'{"type": "item.completed", "item": {"id": "item_x", "type": \n',
        b"\xff\xfe\x00 binary garbage \x80\n",
        b"[1, 2, 3]\n",
        b'{"type": "future.event", "payload": {"anything": true}}\n',
        b'{"type": "item.completed", "item": {"id": "item_y", "type": "hologram", "x": 1}}\n',
        b"\n",
    ):
        out.write(raw)
    out.flush()


def _rust_debug(text: str) -> str:
    """``text`` as Rust's ``Debug`` prints a string: quoted, with quotes, backslashes and
    control characters escaped (how codex quotes the backend's body)."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char in "\n\r\t":
            escaped.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{{{ord(char):x}}}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _requested(prompt: str) -> str:
    """What a model would pass to the image tool: the request, without the wrapper around it."""
    begin, end = "<<<IMAGE REQUEST>>>", "<<<END OF IMAGE REQUEST>>>"
    if begin in prompt and end in prompt:
        prompt = prompt.split(begin, 1)[1].split(end, 1)[0]
    return prompt.strip()[:1000]


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _uuid7() -> str:
    """A time-ordered UUID like the thread ids codex makes (version 7)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


# --- images ---


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_png(
    width: int,
    height: int,
    seed: str,
    text: dict[str, str] | None = None,
    *,
    alpha: bool = False,
    noise: bool = False,
) -> bytes:
    """A valid RGB (or RGBA) PNG whose colour comes from ``seed``, with optional tEXt chunks.

    ``noise``: random pixels (from ``seed``), stored uncompressed, so the file is as large as its
    pixels (2644 x 2644 RGB: 20 MiB), as a photo-like image from the backend can be.
    """
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    pixel = digest[:3] + (b"\x80" if alpha else b"")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    chunks = [_chunk(b"IHDR", ihdr)]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")))
    if noise:
        randbytes = random.Random(digest).randbytes
        rows = b"".join(b"\x00" + randbytes(len(pixel) * width) for _ in range(height))
        chunks.append(_chunk(b"IDAT", zlib.compress(rows, 0)))
    else:
        chunks.append(_chunk(b"IDAT", zlib.compress((b"\x00" + pixel * width) * height, 6)))
    chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _corrupt_crc(png: bytes) -> bytes:
    # Flip one bit in the last byte of the IHDR CRC: structure intact, checksum wrong.
    at = 8 + 8 + 13 + 3
    return png[:at] + bytes([png[at] ^ 0x01]) + png[at + 1 :]


_JPEG = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + b"\xff\xdb\x00\x43\x00"
    + bytes(range(64))
    + b"\xff\xd9"
)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    args = sys.argv[1:] if argv is None else argv
    try:
        fake = Fake(args)
        return fake.run()
    except Usage as exc:
        err(
            f"error: {exc}\n\nUsage: codex exec [OPTIONS] [PROMPT]\n\n"
            "For more information, try '--help'."
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

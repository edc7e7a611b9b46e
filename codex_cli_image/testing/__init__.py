"""Test kit: a fake ``codex`` executable and fake logins, for our tests and for our users' CI.

    from codex_cli_image.testing import FakeCodex

    fake = FakeCodex(tmp_path / "fake")          # writes bin/codex and an isolated CODEX_HOME
    fake.configure("usage_limit")                # or any name in SCENARIOS, plus options
    ...run code that calls fake.path with CODEX_HOME=fake.codex_home...
    assert fake.exec_calls[0].stdin == "a red fox"

With pytest, the ``fake_codex`` fixture (installed with this package) does the setup and points
``CODEX_BIN``, ``CODEX_HOME`` and ``HOME`` at it for the test.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fake_codex as _script
from .fake_codex import DEFAULTS, SCENARIOS, make_png

__all__ = [
    "DEFAULTS",
    "SCENARIOS",
    "FakeCodex",
    "Invocation",
    "chatgpt_auth",
    "make_png",
    "unsigned_jwt",
]


@dataclass(frozen=True, slots=True)
class Invocation:
    """What one run of the fake codex saw."""

    argv: list[str]
    cwd: str
    pid: int
    scenario: str
    env: dict[str, str]
    env_present: list[str]
    stdin: str | None
    thread_id: str | None = None
    image_path: str | None = None
    helper_pid: int | None = None
    stdin_left_open: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Invocation:
        return cls(
            argv=list(data["argv"]),
            cwd=data["cwd"],
            pid=data["pid"],
            scenario=data["scenario"],
            env=dict(data["env"]),
            env_present=list(data["env_present"]),
            stdin=data.get("stdin"),
            thread_id=data.get("thread_id"),
            image_path=data.get("image_path"),
            helper_pid=data.get("helper_pid"),
            stdin_left_open=bool(data.get("stdin_left_open", False)),
            raw=data,
        )


class FakeCodex:
    """A fake ``codex`` executable in ``directory/bin``, controlled through ``directory``.

    ``codex_home`` (default ``directory/codex-home``) is created and signed in to a fake ChatGPT
    ``plus`` account unless ``login`` is None.
    """

    def __init__(
        self,
        directory: Path,
        *,
        codex_home: Path | None = None,
        login: str | None = "plus",
        python: str = sys.executable,
    ) -> None:
        if sys.platform == "win32":
            raise RuntimeError(
                "FakeCodex writes a POSIX sh wrapper; on Windows run the tests under WSL for now."
            )
        self.dir = Path(directory).absolute()
        self.bin_dir = self.dir / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.bin_dir / "codex"
        self.codex_home = Path(codex_home).absolute() if codex_home else self.dir / "codex-home"
        self.codex_home.mkdir(parents=True, exist_ok=True)
        # exec keeps the pid, so the pid the caller started is the fake itself.
        # Without CODEX_HOME the fake uses its own home, never the real ~/.codex.
        self.path.write_text(
            "#!/bin/sh\n"
            'if [ -z "${CODEX_HOME:-}" ]; then\n'
            f"  CODEX_HOME={shlex.quote(str(self.codex_home))}; export CODEX_HOME\n"
            "fi\n"
            f"{_script.DIR_ENV}={shlex.quote(str(self.dir))} "
            f'exec {shlex.quote(python)} -I {shlex.quote(_script.__file__)} "$@"\n',
            encoding="utf-8",
        )
        self.path.chmod(0o755)
        self._options: dict[str, Any] = {}
        self.configure()
        if login is not None:
            self.login(plan=login)

    @property
    def control_file(self) -> Path:
        return self.dir / _script.CONTROL_FILE

    def configure(self, scenario: str | None = None, **options: Any) -> None:
        """Set the scenario and options for the following runs; unnamed options are defaults."""
        if scenario is not None:
            options["scenario"] = scenario
        for checked in (options, *dict(options.get("by_prompt") or {}).values()):
            unknown = set(checked) - set(DEFAULTS)
            if unknown:
                raise ValueError(f"unknown fake codex option(s): {', '.join(sorted(unknown))}")
            if checked.get("scenario", "success") not in SCENARIOS:
                raise ValueError(f"unknown scenario {checked['scenario']!r}; one of {SCENARIOS}")
        self._options = dict(options)
        self._write_control()

    def reset(self) -> None:
        """Back to the defaults, and forget recorded calls."""
        self._options = {}
        self._write_control()
        for record in self._calls_dir().glob("*.json"):
            record.unlink()

    def _write_control(self) -> None:
        # Atomic: a fake starting at this moment sees the old options or the new, never half.
        staging = self.control_file.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(json.dumps(self._options), encoding="utf-8")
        os.replace(staging, self.control_file)

    def login(self, plan: str | None = "plus", **kwargs: Any) -> Path:
        """Write ``auth.json`` for a fake ChatGPT login (see :func:`chatgpt_auth`)."""
        target = self.codex_home / "auth.json"
        target.write_text(json.dumps(chatgpt_auth(plan=plan, **kwargs), indent=2), "utf-8")
        target.chmod(0o600)
        return target

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``CODEX_BIN`` naming the fake and
        ``CODEX_HOME`` its home: ``generate(..., env=fake.env())`` runs the fake."""
        result = dict(os.environ if base is None else base)
        result["CODEX_BIN"] = str(self.path)
        result["CODEX_HOME"] = str(self.codex_home)
        return result

    def _calls_dir(self) -> Path:
        return self.dir / "calls"

    @property
    def calls(self) -> list[Invocation]:
        """Every recorded invocation, oldest first."""
        records = sorted(self._calls_dir().glob("*.json"))
        return [Invocation.from_record(json.loads(p.read_text("utf-8"))) for p in records]

    @property
    def exec_calls(self) -> list[Invocation]:
        return [call for call in self.calls if call.argv[:1] in (["exec"], ["e"])]

    @property
    def app_server_calls(self) -> list[Invocation]:
        """``codex app-server`` runs (the usage windows' reads)."""
        return [call for call in self.calls if "app-server" in call.argv]

    def generated_images(self) -> list[Path]:
        return sorted((self.codex_home / "generated_images").glob("*/*.png"))


def unsigned_jwt(payload: Mapping[str, Any]) -> str:
    """A JWT with ``alg: none`` and a dummy signature: codex parses these without verifying."""

    def part(data: Mapping[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode("utf-8")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}.c2ln"


def chatgpt_auth(
    plan: str | None = "plus",
    *,
    email: str = "user@example.com",
    account_id: str = "acc-0f3c2b7e-fake",
    auth_mode: str | None = "chatgpt",
    api_key: str | None = None,
    expires_in_s: float = 3600.0,
    last_refresh: str | None = None,
) -> dict[str, Any]:
    """An ``auth.json`` document shaped like a real ChatGPT login, with fake unsigned tokens."""
    now = time.time()
    claims: dict[str, Any] = {
        "chatgpt_account_id": account_id,
        "chatgpt_user_id": "user-fake0000000000",
    }
    if plan is not None:
        claims["chatgpt_plan_type"] = plan
    id_token = unsigned_jwt(
        {
            "email": email,
            "https://api.openai.com/auth": claims,
            "iat": int(now),
            "exp": int(now + expires_in_s),
        }
    )
    access_token = unsigned_jwt(
        {
            "exp": int(now + expires_in_s),
            "https://api.openai.com/auth": claims,
            "nonce": os.urandom(6).hex(),
        }
    )
    document: dict[str, Any] = {
        "OPENAI_API_KEY": api_key,
        "tokens": {
            "id_token": id_token,
            "access_token": access_token,
            "refresh_token": f"rt_fake_{os.urandom(12).hex()}",
            "account_id": account_id,
        },
        "last_refresh": last_refresh
        or time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now)),
    }
    if auth_mode is not None:
        document = {"auth_mode": auth_mode, **document}
    return document

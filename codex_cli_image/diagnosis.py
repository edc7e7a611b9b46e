"""Everything a user or daemon needs to know before the first image, without spending quota."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from ._sync import run_blocking
from .app_server import read_usage_limits
from .errors import CodexImageError, InputError, Kind
from .launcher import (
    TESTED_VERSIONS,
    Codex,
    Source,
    locate,
    parse_features,
    probe_version,
    run_features_list,
)
from .lockdown import features_to_disable
from .preflight import (
    PROFILE_FILES_SINCE,
    Notice,
    Verdict,
    check_login,
    codex_home_path,
    profile_problem,
    read_toml,
)
from .settings import check_profile_name
from .usage import UsageLimits

__all__ = ["CodexInfo", "DoctorReport", "Problem", "doctor", "parse_features"]

FEATURES_TIMEOUT_S = 10.0
USAGE_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class CodexInfo:
    path: str
    source: Source
    via_shim: bool
    shim: str | None
    version: str | None
    removed_env: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    reason: str
    message: str
    hint: str

    @classmethod
    def from_error(cls, error: CodexImageError) -> Problem:
        return cls(error.kind, error.reason, error.message, error.hint)


@dataclass(frozen=True, slots=True)
class DoctorReport:
    codex: CodexInfo | None
    codex_home: str
    login: Verdict | None
    image_generation: bool | None
    """What ``codex features list`` says (None when it could not be asked)."""
    problems: tuple[Problem, ...]
    warnings: tuple[Notice, ...] = ()
    """Worth knowing, not a reason to refuse (a codex newer than any tested)."""
    usage_limits: UsageLimits | None = None
    """The subscription's usage windows, read when everything else is ready."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        codex = None
        if self.codex is not None:
            codex = {
                "path": self.codex.path,
                "source": self.codex.source,
                "via_shim": self.codex.via_shim,
                "shim": self.codex.shim,
                "version": self.codex.version,
                "removed_env": list(self.codex.removed_env),
            }
        return {
            "ok": self.ok,
            "codex": codex,
            "codex_home": self.codex_home,
            "login": self.login.to_dict() if self.login else None,
            "image_generation": self.image_generation,
            "problems": [
                {"kind": p.kind, "reason": p.reason, "message": p.message, "hint": p.hint}
                for p in self.problems
            ],
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
            "usage_limits": self.usage_limits.to_dict() if self.usage_limits else None,
        }


def doctor(
    *,
    codex: str | os.PathLike[str] | None = None,
    codex_home: str | os.PathLike[str] | None = None,
    allow_relay: bool = False,
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
    usage: bool = True,
) -> DoctorReport:
    """Check the executable, the login and the image feature; report problems instead of raising.

    Spends no quota: it runs ``codex --version``, ``codex features list`` and (only for
    credentials in the OS keyring) ``codex login status``, all of which stay on this machine;
    when all is ready and ``usage`` is set, ``codex app-server`` reads the usage windows (a
    request to the backend that makes no image; codex runs in the codex home then, as for an
    image, and keeps its own ``tmp/arg0`` folder there).
    ``profile``: check as codex runs with ``--profile`` (its file layered, its features).
    """
    env = dict(os.environ if env is None else env)
    try:
        home = codex_home_path(env, codex_home)
    except CodexImageError as exc:
        return DoctorReport(None, "", None, None, (Problem.from_error(exc),), ())
    problems: list[Problem] = []
    info: CodexInfo | None = None
    runnable: Codex | None = None  # located and answering --version
    release: tuple[int, int, int] | None = None
    try:
        located = locate(codex, env=env)
    except CodexImageError as exc:
        problems.append(Problem.from_error(exc))
    else:
        version: str | None = None
        try:
            probed = probe_version(located)
            version, release, runnable = str(probed), probed.release, located
        except CodexImageError as exc:
            problems.append(Problem.from_error(exc))
        info = CodexInfo(
            path=str(located.path),
            source=located.source,
            via_shim=located.via_shim,
            shim=str(located.shim) if located.shim else None,
            version=version,
            removed_env=located.removed_env,
        )
    verdict: Verdict | None = None
    try:
        if profile is not None:
            check_profile_name(profile)
            missing = None if release is None else profile_problem(home, profile, release)
            if missing is not None:
                raise missing
        verdict = check_login(  # the home as given: the default one may simply not exist yet
            codex_home, env=env, allow_relay=allow_relay, codex=runnable, codex_version=release,
            profile=profile,
        )  # fmt: skip
    except InputError as exc:
        problems.append(Problem.from_error(exc))
    except CodexImageError:
        pass  # credentials in the keyring and no codex to ask: reported above
    if verdict is not None and not verdict.ok:
        reason, message, hint = verdict.reason, verdict.message, verdict.hint
        problems.append(Problem("auth", reason or "login_problem", message or "", hint or ""))
    # Before 0.142 features list takes --profile (seen on 0.125); later versions refuse it there.
    old = release is not None and release < PROFILE_FILES_SINCE
    selected = ("--profile", profile) if profile is not None and old else ()
    features = _features(runnable, home, selected) if runnable and home.is_dir() else None
    image_generation = features.get("image_generation") if isinstance(features, dict) else None
    if profile is not None and release is not None and release >= PROFILE_FILES_SINCE:
        # features list takes no --profile there: the profile's own [features] decide.
        image_generation = _profile_feature(home, profile, image_generation)
    login_ok = verdict is not None and verdict.ok
    if features == "config_error" and login_ok:
        problems.append(
            Problem(
                "auth",
                "config_unreadable",
                "codex cannot load its configuration (`codex features list` failed).",
                f"Run `codex features list` to see why, then fix {home / 'config.toml'}.",
            )
        )
    if image_generation is False and login_ok:
        problems.append(
            Problem(
                "auth",
                "image_generation_disabled",
                "`codex features list` reports image_generation as off.",
                "Check managed configuration (for example /etc/codex) and [features] in "
                f"{home / 'config.toml'}.",
            )
        )
    warnings = () if release is None else version_warnings(release)
    limits = None
    if usage and not problems and runnable is not None and isinstance(features, dict):
        try:  # ready: how much of the subscription is left (nothing spent)
            limits = run_blocking(partial(read_usage_limits, runnable, home,
                                         disable=features_to_disable(features),
                                         timeout_s=USAGE_TIMEOUT_S))  # fmt: skip
        except CodexImageError as exc:
            notice = Notice("usage_unavailable", f"{exc.message} ({exc.hint})")
            warnings = (*warnings, notice)
    return DoctorReport(
        info, str(home), verdict, image_generation, tuple(problems), warnings, limits
    )


def version_warnings(release: tuple[int, int, int]) -> tuple[Notice, ...]:
    """A notice when ``release`` is newer than the newest version this release was tested with:
    the CLI changes often, and a change in what it writes is what breaks image delivery first."""
    newest = max(TESTED_VERSIONS, key=lambda v: tuple(int(p) for p in v.split(".")))
    if release <= tuple(int(p) for p in newest.split(".")):
        return ()
    shown = ".".join(map(str, release))
    return (
        Notice(
            "codex_newer_than_tested",
            f"codex {shown} is newer than {newest}, the newest version this release of "
            "codex-cli-image was tested with; if images fail, update codex-cli-image or "
            f"install @openai/codex@{newest}.",
        ),
    )


def _profile_feature(home: Path, profile: str, base: bool | None) -> bool | None:
    layer, _ = read_toml(home / f"{profile}.config.toml")
    features = layer.get("features")
    value = features.get("image_generation") if isinstance(features, dict) else None
    return value if isinstance(value, bool) else base


def _features(
    codex: Codex, home: Path, selected: tuple[str, ...] = ()
) -> dict[str, bool] | Literal["config_error"] | None:
    """What ``codex features list`` says; "config_error" when codex cannot load its config.
    ``selected``: the profile option, for versions that take it there."""
    try:
        # The user's home seen through links: its configuration is read, nothing is written.
        returncode, out, err = run_features_list(
            codex, mirror=home, options=selected, timeout_s=FEATURES_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired, CodexImageError):  # doctor never raises
        return None
    if returncode != 0:
        # Only a verdict leaves here: codex's text may quote the configuration file.
        return "config_error" if b"failed to load configuration" in err else None
    return parse_features(out.decode("utf-8", "replace"))

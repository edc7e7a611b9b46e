"""Decide, before any quota is spent, whether this login and configuration can make images.

:func:`assess` is pure: it takes the parsed ``auth.json`` (or why it could not be read), the parsed
``config.toml``, the environment and, for credentials in the OS keyring, the answer of
``codex login status``, and returns a :class:`Verdict`. It never writes auth.json, never refreshes
a token, never calls the network. The rules follow codex's own (codex-facts sections 2-4).

No token, key or JWT segment ever enters a verdict: only the mode, the plan, the account's email.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from . import _proc
from .errors import AuthError, InputError

if TYPE_CHECKING:
    from .launcher import Codex

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "LoginStatus",
    "Mode",
    "Notice",
    "Verdict",
    "assess",
    "check_login",
    "codex_home_path",
    "parse_login_status",
]

LOGIN_STATUS_TIMEOUT_S = 10.0

Mode = Literal["chatgpt", "apikey", "chatgptAuthTokens", "agentIdentity", "personalAccessToken"]
LoginStatus = Literal["chatgpt", "apikey", "agent", "none", "error"]

PAID_PLANS = frozenset(
    {
        "go",
        "plus",
        "pro",
        "prolite",
        "team",
        "business",
        "self_serve_business_usage_based",
        "enterprise",
        "enterprise_cbp_usage_based",
        "edu",
    }
)
_PROGRAMMATIC = frozenset({"chatgptAuthTokens", "agentIdentity", "personalAccessToken"})
CREDENTIAL_ENV = ("CODEX_API_KEY", "CODEX_ACCESS_TOKEN", "OPENAI_API_KEY")
# Providers built into codex that never carry a ChatGPT login (so never the image tool).
_LOCAL_PROVIDERS = frozenset({"ollama", "lmstudio", "amazon-bedrock", "oss"})
_OPENAI_HOSTS = ("openai.com", "chatgpt.com")
# Seen on 0.142, 0.149, 0.169, 0.171: `--profile x` layers $CODEX_HOME/x.config.toml over
# config.toml (a missing file is ignored), and refuses to start while config.toml still has
# `profile = "x"` or a [profiles.x] table; `profile = "x"` alone is an error too. 0.125 applied
# [profiles.x] ("config profile `x` not found" without one). The first version between is not
# known: older than 0.142 is taken for the tables.
PROFILE_FILES_SINCE = (0, 142, 0)
# codex refreshes a token whose last refresh is older than this (and on 401).
_REFRESH_AGE = dt.timedelta(days=8)

_SIGN_IN = (
    'Run `codex login` and choose "Sign in with ChatGPT" '
    "(on a machine without a browser: `codex login --device-auth`)."
)
_SWITCH = (
    "Image generation needs a ChatGPT sign-in: run `codex logout`, then `codex login` and "
    'choose "Sign in with ChatGPT".'
)


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning: worth telling the user, not a reason to refuse."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether codex, as configured, will offer its image tool to this login."""

    ok: bool
    mode: Mode | None
    plan: str | None
    reason: str | None = None
    message: str | None = None
    hint: str | None = None
    warnings: tuple[Notice, ...] = ()
    account: str | None = None
    """The signed-in account's email, for display (never a token)."""
    store: str = "file"
    provider: str = "openai"
    profile: str | None = None
    mcp_servers: tuple[str, ...] = ()
    """The MCP servers the configuration names (each is turned off for image turns)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "plan": self.plan,
            "reason": self.reason,
            "message": self.message,
            "hint": self.hint,
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
            "account": self.account,
            "store": self.store,
            "provider": self.provider,
            "profile": self.profile,
            "mcp_servers": list(self.mcp_servers),
        }

    def raise_for_problem(self) -> None:
        """Raise the :class:`AuthError` this verdict stands for, if it is not ok."""
        if not self.ok:
            raise AuthError(
                self.message or "This Codex login cannot make images.",
                reason=self.reason or "login_problem",
                hint=self.hint or _SIGN_IN,
            )


def parse_login_status(exit_code: int, stderr: str) -> LoginStatus:
    """What ``codex login status`` said (all of it goes to stderr; exit 0 signed in, 1 not)."""
    if exit_code == 0 and "Logged in using ChatGPT" in stderr:
        return "chatgpt"
    if exit_code == 0 and "API key" in stderr:
        return "apikey"
    if exit_code == 0 and "Agent Identity" in stderr:
        return "agent"
    if exit_code == 1 and "Not logged in" in stderr:
        return "none"
    return "error"


@dataclass(frozen=True, slots=True)
class LoginInputs:
    """What the login is judged from: ``auth.json`` (parsed, or why it could not be read) and,
    for credentials in the OS keyring, the answer of ``codex login status``."""

    auth: Mapping[str, Any] | None
    auth_error: str | None = None
    login_status: LoginStatus | None = None
    auth_file: str = "auth.json"


@dataclass(frozen=True, slots=True)
class ConfigLayer:
    """The configuration codex runs with: the selected profile's own settings (``layer``,
    named ``layer_name`` in messages) over ``config.toml``, merged as codex merges them."""

    config: Mapping[str, Any]
    layer: Mapping[str, Any]
    layer_name: str
    selected: str | None
    config_file: str

    @property
    def provider(self) -> str:
        return (
            _str(self.layer.get("model_provider"))
            or _str(self.config.get("model_provider"))
            or "openai"
        )

    @property
    def store(self) -> str:
        return _str(self.config.get("cli_auth_credentials_store")) or "file"

    @property
    def mcp_servers(self) -> tuple[str, ...]:
        """Every MCP server named by ``config.toml`` or the selected profile, sorted."""
        names: set[str] = set()
        for table in (self.config, self.layer):
            servers = table.get("mcp_servers")
            if isinstance(servers, Mapping):
                names.update(name for name in servers if isinstance(name, str))
        return tuple(sorted(names))


class _Judge:
    """Refusals carry the warnings gathered so far, and what is known of the login."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.warnings = [
            Notice(
                "api_key_env_ignored",
                f"{name} is set in the environment; it is removed from codex's environment so "
                "that the ChatGPT login is used.",
            )
            for name in CREDENTIAL_ENV
            if env.get(name)
        ]
        self.known: dict[str, Any] = {}

    def refuse(self, reason: str, message: str, hint: str, **known: Any) -> Verdict:
        known = {**self.known, **known}
        return Verdict(
            ok=False,
            mode=known.get("mode"),
            plan=known.get("plan"),
            reason=reason,
            message=message,
            hint=hint,
            warnings=tuple(self.warnings),
            account=known.get("account"),
            store=known.get("store", "file"),
            provider=known.get("provider", "openai"),
            profile=known.get("profile"),
        )

    def allow(self) -> Verdict:
        known = self.known
        return Verdict(ok=True, mode=known.get("mode"), plan=known.get("plan"),
                       warnings=tuple(self.warnings), account=known.get("account"),
                       store=known["store"], provider=known["provider"],
                       profile=known.get("profile"),
                       mcp_servers=known.get("mcp_servers", ()))  # fmt: skip

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(Notice(code, message))


def assess(
    *,
    auth: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    env: Mapping[str, str],
    now: dt.datetime,
    auth_error: str | None = None,
    config_error: str | None = None,
    codex_home_error: str | None = None,
    codex_home_unreadable: str | None = None,
    profile: str | None = None,
    login_status: LoginStatus | None = None,
    allow_relay: bool = False,
    auth_file: str = "auth.json",
    config_file: str = "config.toml",
    codex_version: tuple[int, int, int] | None = None,
    profile_config: Mapping[str, Any] | None = None,
    profile_file: str | None = None,
) -> Verdict:
    """Judge a login and configuration. Pure: every input is passed in, nothing is read.

    ``auth``: the parsed auth.json, or None when there is none. ``*_error``: why a file could not
    be read (a short description with its position, never its contents); ``codex_home_error``:
    the codex home does not exist; ``codex_home_unreadable``: it exists but cannot be read.
    ``login_status``: the parsed answer of ``codex login status``, needed when the credentials
    live in the OS keyring. ``codex_version``: when known, rules that changed between versions
    follow it. ``profile``: the profile selected with ``--profile``; on codex 0.142+ its file
    is ``profile_config`` (parsed, ``{}`` when absent) named ``profile_file``, layered over
    ``config`` as codex does; before, ``[profiles.<profile>]`` of ``config``.
    """
    judge = _Judge(env)
    if codex_home_error is not None:
        hint = "Create that directory, or unset CODEX_HOME to use ~/.codex."
        return judge.refuse("codex_home_missing", codex_home_error, hint)
    if codex_home_unreadable is not None:
        return judge.refuse(
            "codex_home_unreadable",
            codex_home_unreadable,
            "Give your user read and write access to it (codex keeps its login, sessions and "
            "images there), or point CODEX_HOME at a directory you own.",
        )
    if config_error is not None:
        return judge.refuse("config_unreadable", f"{config_file} cannot be read: {config_error}.",
                            f"Fix {config_file} (or move it aside) and try again.")  # fmt: skip
    layer = _select_layer(judge, config, config_file, profile, codex_version,
                          profile_config, profile_file)  # fmt: skip
    if isinstance(layer, Verdict):
        return layer
    judge.known = {"store": layer.store, "provider": layer.provider, "profile": layer.selected,
                   "mcp_servers": layer.mcp_servers}  # fmt: skip
    login = LoginInputs(auth, auth_error, login_status, auth_file)
    refused = _judge_login(judge, login, layer, now)
    if refused is not None:
        return refused
    return _judge_config(judge, layer, allow_relay) or judge.allow()


def _select_layer(
    judge: _Judge,
    config: Mapping[str, Any],
    config_file: str,
    profile: str | None,
    codex_version: tuple[int, int, int] | None,
    profile_config: Mapping[str, Any] | None,
    profile_file: str | None,
) -> ConfigLayer | Verdict:
    """The profile's layer as this codex version selects it, or the refusal codex would give."""
    legacy = _str(config.get("profile"))
    # Unknown version: the older rules, which refuse less.
    files = codex_version is not None and codex_version >= PROFILE_FILES_SINCE
    if profile is not None and files:
        tables = config.get("profiles")
        if legacy or (isinstance(tables, Mapping) and profile in tables):
            return judge.refuse(
                "config_unreadable",
                f"codex refuses --profile {profile} while {config_file} still has a legacy "
                f'profile = "..." line or a [profiles.{profile}] table.',
                f"Move those settings into {profile_file or profile + '.config.toml'} and remove "
                f"the profile line and [profiles.{profile}] from {config_file}.",
                profile=profile,
            )
        own = profile_config or {}
        name = profile_file or f"{profile}.config.toml"
        return ConfigLayer(_merged(config, own), own, name, profile, config_file)
    if legacy and codex_version is not None and files:
        shown = ".".join(map(str, codex_version))
        return judge.refuse(
            "config_unreadable",
            f'codex {shown} refuses to start: {config_file} selects profile = "{legacy}", '
            "which it no longer supports.",
            f"Move the settings of [profiles.{legacy}] into {legacy}.config.toml beside it "
            "and remove the profile line and table.",
        )
    selected = profile or legacy
    layer: Mapping[str, Any] = {}
    if selected is not None:
        profiles = config.get("profiles")
        found = profiles.get(selected) if isinstance(profiles, Mapping) else None
        if not isinstance(found, Mapping):
            return judge.refuse(
                "config_unreadable",
                f"The profile {selected!r} is selected but {config_file} does not define it.",
                f"Add [profiles.{selected}] to {config_file}, or select another profile.",
                profile=selected,
            )
        layer = found
    return ConfigLayer(config, layer, f"[profiles.{selected}] of {config_file}", selected,
                       config_file)  # fmt: skip


def _judge_login(
    judge: _Judge, login: LoginInputs, layer: ConfigLayer, now: dt.datetime
) -> Verdict | None:
    """A refusal of the login, or None (``judge.known`` then says who is signed in)."""
    store = layer.store
    if store == "ephemeral":
        return judge.refuse(
            "not_signed_in",
            'Codex keeps credentials only in memory (cli_auth_credentials_store = "ephemeral"), '
            "so a new codex process is not signed in.",
            f'Set cli_auth_credentials_store = "file" in {layer.config_file}, then '
            f"{_lower(_SIGN_IN)}",
        )
    if store == "keyring" or (store == "auto" and login.auth is None and login.auth_error is None):
        return _judge_keyring(judge, login.login_status)
    return _judge_auth_file(judge, login, now)


def _judge_keyring(judge: _Judge, status: LoginStatus | None) -> Verdict | None:
    if status is None or status == "error":
        return judge.refuse(
            "auth_unreadable",
            "The credentials are in the OS keyring and `codex login status` could not read them.",
            f"Unlock the keyring, or sign in again. {_SIGN_IN}",
        )
    if status == "none":
        return judge.refuse("not_signed_in", "Codex is not signed in.", _SIGN_IN)
    if status == "apikey":
        return judge.refuse("api_key_login", "Codex is signed in with an API key.", _SWITCH,
                            mode="apikey")  # fmt: skip
    if status == "agent":
        return judge.refuse(
            "programmatic_login",
            "Codex is signed in with an agent identity, not a ChatGPT account.",
            _SWITCH,
            mode="agentIdentity",
        )
    judge.known["mode"] = "chatgpt"
    judge.warn("plan_unknown", "The ChatGPT plan cannot be read from the OS keyring; the free "
               "plan has no image tool.")  # fmt: skip
    return None


def _judge_auth_file(judge: _Judge, login: LoginInputs, now: dt.datetime) -> Verdict | None:
    auth, auth_file = login.auth, login.auth_file
    if login.auth_error is not None:
        return judge.refuse(
            "auth_unreadable",
            f"{auth_file} cannot be read: {login.auth_error}.",
            f"Check its permissions, or sign in again to rewrite it. {_SIGN_IN}",
        )
    if not auth:
        return judge.refuse("not_signed_in", "Codex is not signed in.", _SIGN_IN)
    mode = _effective_mode(auth)
    if mode == "apikey":
        return judge.refuse("api_key_login", "Codex is signed in with an API key.", _SWITCH,
                            mode="apikey")  # fmt: skip
    if mode != "chatgpt":
        return judge.refuse(
            "programmatic_login",
            f"Codex is signed in with {_describe_mode(mode)}, not a ChatGPT account.",
            _SWITCH,
            mode=mode if mode in _PROGRAMMATIC else None,
        )
    judge.known["mode"] = "chatgpt"
    tokens = auth.get("tokens")
    if not isinstance(tokens, Mapping) or not tokens.get("access_token"):
        return judge.refuse("not_signed_in", f"{auth_file} holds no ChatGPT tokens.", _SIGN_IN)
    claims = _jwt_claims(tokens.get("id_token"))
    if claims is None:
        # Codex itself cannot load such a file ("failed to deserialize CLI auth").
        return judge.refuse("auth_unreadable", f"The ID token in {auth_file} is not a readable "
                            "JWT.", f"Sign in again to rewrite it. {_SIGN_IN}")  # fmt: skip
    openai_claims = claims.get("https://api.openai.com/auth")
    plan = (
        _str(openai_claims.get("chatgpt_plan_type")) if isinstance(openai_claims, Mapping) else None
    )
    judge.known.update(plan=plan, account=_str(claims.get("email")))
    if plan == "free":
        return judge.refuse(
            "free_plan",
            "This ChatGPT account is on the free plan, where Codex offers no image tool.",
            "Upgrade the ChatGPT plan (Plus or higher), or sign in with a paid account.",
        )
    if plan is None or plan not in PAID_PLANS:
        shown = "unknown" if plan is None else repr(plan)
        judge.warn("plan_unknown", f"The ChatGPT plan is {shown}; the free plan has no image tool.")
    stale = _stale(tokens.get("access_token"), auth.get("last_refresh"), now)
    if stale:
        judge.warn("token_stale", f"The access token {stale}; codex will refresh it.")
    return None


def _judge_config(judge: _Judge, layer: ConfigLayer, allow_relay: bool) -> Verdict | None:
    """A refusal of the configuration (a relay, the image tool turned off), or None."""
    relay = _relay_problem(layer)
    if relay is not None:
        message, forwards_login = relay
        if allow_relay and forwards_login:
            judge.warn("relay_provider", message + " Allowed by allow_relay.")
        else:
            hint = (
                "Use the built-in openai provider for images, or pass --allow-relay "
                "(allow_relay=True) if this relay is meant to receive your ChatGPT login."
                if forwards_login
                else "Use the built-in openai provider for images: this provider does not receive "
                "the ChatGPT login, so codex offers no image tool."
            )
            return judge.refuse("relay_provider", message, hint)
    own, base = layer.layer, layer.config
    if _feature_off(own) or (_feature_off(base) and _feature(own) is None):
        where = (
            f"the [features] of {layer.layer_name}"
            if _feature_off(own)
            else f"[features] of {layer.config_file}"
        )
        return judge.refuse(
            "image_generation_disabled",
            f"image_generation = false in {where} turns the image tool off.",
            f"Remove image_generation = false from {where}.",
        )
    return None


def _merged(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """``layer`` over ``base`` as codex layers config files: tables merge, values replace."""
    merged = dict(base)
    for key, value in layer.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


def _effective_mode(auth: Mapping[str, Any]) -> str:
    """Codex's precedence: auth_mode, else a personal access token, else a key, else ChatGPT."""
    mode = auth.get("auth_mode")
    if isinstance(mode, str) and mode:
        return mode
    if auth.get("personal_access_token"):
        return "personalAccessToken"
    if auth.get("OPENAI_API_KEY") is not None:
        return "apikey"
    return "chatgpt"


def _describe_mode(mode: str) -> str:
    return {
        "chatgptAuthTokens": "host-supplied ChatGPT tokens (chatgptAuthTokens), which codex exec "
        "cannot refresh",
        "agentIdentity": "an agent identity",
        "personalAccessToken": "a personal access token",
    }.get(mode, f"the login mode {mode!r}")


def _jwt_claims(token: object) -> dict[str, Any] | None:
    """The payload of a JWT, unverified (as codex reads it); None when it is not one."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _stale(access_token: object, last_refresh: object, now: dt.datetime) -> str | None:
    claims = _jwt_claims(access_token)
    exp = claims.get("exp") if claims else None
    if isinstance(exp, (int, float)) and exp <= now.timestamp():
        return "has expired"
    if isinstance(last_refresh, str):
        try:
            refreshed = dt.datetime.fromisoformat(last_refresh.replace("Z", "+00:00"))
        except ValueError:
            return None
        if refreshed.tzinfo is not None and now - refreshed > _REFRESH_AGE:
            return f"was last refreshed {(now - refreshed).days} days ago"
    return None


def _relay_problem(layer: ConfigLayer) -> tuple[str, bool] | None:
    """Why requests would not go to OpenAI, and whether codex would still send the ChatGPT login."""
    own, config, provider = layer.layer, layer.config, layer.provider
    where = (
        f"the profile {layer.selected!r}" if _str(own.get("model_provider")) else layer.config_file
    )
    if provider != "openai":
        providers = config.get("model_providers")
        table = providers.get(provider) if isinstance(providers, Mapping) else None
        forwards = (
            isinstance(table, Mapping)
            and table.get("requires_openai_auth") is True
            and provider not in _LOCAL_PROVIDERS
        )
        return f"{where} selects the model provider {provider!r} instead of openai.", forwards
    for key in ("openai_base_url", "chatgpt_base_url"):
        url = _str(own.get(key)) or _str(config.get(key))
        if url and not _is_openai(url):
            host = urlsplit(url).hostname or url
            where = layer.layer_name if _str(own.get(key)) else layer.config_file
            return f"{key} in {where} sends requests to {host}, not to OpenAI.", True
    return None


def _is_openai(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in _OPENAI_HOSTS)


def _feature(table: Mapping[str, Any]) -> object:
    features = table.get("features")
    return features.get("image_generation") if isinstance(features, Mapping) else None


def _feature_off(table: Mapping[str, Any]) -> bool:
    return _feature(table) is False


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


# --- the reader: the only part that touches files and processes --------------------------------


def codex_home_path(
    env: Mapping[str, str] | None = None, explicit: str | os.PathLike[str] | None = None
) -> Path:
    """Where codex keeps its state: ``explicit``, a non-empty ``$CODEX_HOME``, or ~/.codex."""
    env = os.environ if env is None else env
    try:
        if explicit is not None and os.fspath(explicit):
            return Path(explicit).expanduser().absolute()
        if env.get("CODEX_HOME"):
            # Taken literally, as codex does: "~/x" is not expanded (codex then fails to start).
            return Path(env["CODEX_HOME"]).absolute()
        home = env.get("USERPROFILE" if sys.platform == "win32" else "HOME")
        return (Path(home) if home else Path.home()) / ".codex"
    except RuntimeError:  # no HOME and no passwd entry (a container under an arbitrary uid)
        raise AuthError(
            "No home folder is known (HOME is unset and the user has no passwd entry), so the "
            "codex home cannot be found.",
            reason="codex_home_missing",
            hint="Set CODEX_HOME to the folder codex keeps its login in (or pass the codex "
            "home), or set HOME.",
        ) from None
    except OSError as exc:  # a relative path, and the current folder was deleted
        raise AuthError(
            f"The codex home {os.fspath(explicit or env.get('CODEX_HOME', ''))!r} cannot be "
            f"made absolute: {exc.strerror or exc}.",
            reason="codex_home_missing",
            hint="Give the codex home as an absolute path.",
        ) from None


def check_login(
    codex_home: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    allow_relay: bool = False,
    codex: Codex | None = None,
    codex_version: tuple[int, int, int] | None = None,
    now: dt.datetime | None = None,
    timeout_s: float = LOGIN_STATUS_TIMEOUT_S,
    stop: threading.Event | None = None,
    profile: str | None = None,
) -> Verdict:
    """Read ``auth.json`` and ``config.toml`` under the codex home and :func:`assess` them.

    ``profile``: the profile codex is started with (``--profile``): on codex 0.142+ its
    ``<profile>.config.toml`` is read and layered too.

    Spawns nothing, except ``codex login status`` when the credentials live in the OS keyring
    (``codex``: the executable to ask; found with :func:`~codex_cli_image.launcher.locate` when
    None; ``stop`` ends that run at once, as for
    :func:`~codex_cli_image.launcher.probe_version`). Never writes, never refreshes a token, never
    calls the network itself.
    """
    env = dict(os.environ if env is None else env)
    home = codex_home_path(env, codex_home)
    source = home_source(env, codex_home)
    try:
        verdict = _check_home(home, source, env, allow_relay, codex, codex_version, now,
                              timeout_s, stop, profile)  # fmt: skip
    except OSError as exc:  # e.g. a folder above the home that we may not search
        where = exc.filename or home
        verdict = assess(
            auth=None, config={}, env=env, now=now or dt.datetime.now(dt.timezone.utc),
            codex_home_unreadable=f"The codex home {home} cannot be read ({where}: "
            f"{_os_reason(exc)}).",
        )  # fmt: skip
    return verdict if verdict.ok else _name_home(verdict, home, source)


HomeSource = Literal["given", "CODEX_HOME", "default"]


def home_source(
    env: Mapping[str, str], explicit: str | os.PathLike[str] | None = None
) -> HomeSource:
    """How :func:`codex_home_path` chose the codex home."""
    if explicit is not None and os.fspath(explicit):
        return "given"
    return "CODEX_HOME" if env.get("CODEX_HOME") else "default"


def _name_home(verdict: Verdict, home: Path, source: HomeSource) -> Verdict:
    """A refusal that says which codex home was checked and how it was chosen: a daemon or an
    MCP client started with a minimal environment may not use the home the user signed in to.
    For a home that was given, the sign-in command carries it."""
    message, hint = verdict.message or "", verdict.hint or ""
    if str(home) not in message:
        how = {"given": "as given", "CODEX_HOME": "from CODEX_HOME", "default": "the default"}
        message = f"{message.rstrip('.')} (codex home {home}, {how[source]})."
    if source == "given":
        hint = hint.replace("Create that directory, or unset CODEX_HOME to use ~/.codex.",
                            "Check the path, or leave the codex home out to use $CODEX_HOME or "
                            "~/.codex.")  # fmt: skip
        hint = hint.replace("`codex login", f"`{_with_home(home)}codex login")
        hint = hint.replace("`codex logout`", f"`{_with_home(home)}codex logout`")
    elif source == "default" and verdict.reason == "not_signed_in":
        # Often not a missing login but a host (an MCP client, a service) that did not pass
        # the CODEX_HOME the user signed in with.
        hint += (" If you signed in with another codex home (CODEX_HOME), point at it: "
                 "--codex-home DIR (codex_home=).")  # fmt: skip
    return replace(verdict, message=message, hint=hint)


def _with_home(home: Path) -> str:
    if sys.platform == "win32":  # PowerShell
        quoted = str(home).replace("'", "''")
        return f"$env:CODEX_HOME='{quoted}'; "
    return f"CODEX_HOME={shlex.quote(str(home))} "


def _check_home(
    home: Path,
    source: HomeSource,
    env: dict[str, str],
    allow_relay: bool,
    codex: Codex | None,
    codex_version: tuple[int, int, int] | None,
    now: dt.datetime | None,
    timeout_s: float,
    stop: threading.Event | None,
    profile: str | None,
) -> Verdict:
    now = now or dt.datetime.now(dt.timezone.utc)
    auth_file, config_file = home / "auth.json", home / "config.toml"
    if source != "default" and not home.is_dir():
        what = "is not a directory" if home.exists() else "does not exist"
        problem = (
            f"CODEX_HOME points to {home}, which {what}."
            if source == "CODEX_HOME"
            else f"The codex home {home} {what}."
        )
        return assess(
            auth=None, config={}, env=env, now=now, allow_relay=allow_relay,
            codex_home_error=problem,
        )  # fmt: skip
    unreadable = _unreadable_dir(home)
    if unreadable is not None:
        return assess(
            auth=None, config={}, env=env, now=now, allow_relay=allow_relay,
            codex_home_unreadable=f"The codex home {home} cannot be read: {unreadable}.",
        )  # fmt: skip
    config, config_error = read_toml(config_file)
    profile_config: dict[str, Any] | None = None
    profile_file = home / f"{profile}.config.toml"
    if profile is not None and codex_version is not None and codex_version >= PROFILE_FILES_SINCE:
        profile_config, profile_error = read_toml(profile_file)
        if profile_error is not None and config_error is None:
            config_error, config_file = profile_error, profile_file
    auth, auth_error = _read_auth(auth_file)
    effective = _merged(config, profile_config or {})
    store = effective.get("cli_auth_credentials_store") if config_error is None else None
    status: LoginStatus | None = None
    if store == "keyring" or (store == "auto" and auth is None and auth_error is None):
        status = _login_status(home, env, codex, timeout_s, stop, store)
    return assess(
        auth=auth,
        config=config,
        env=env,
        now=now,
        auth_error=auth_error,
        config_error=config_error,
        login_status=status,
        allow_relay=allow_relay,
        auth_file=str(auth_file),
        config_file=str(config_file),
        codex_version=codex_version,
        profile=profile,
        profile_config=profile_config,
        profile_file=str(profile_file),
    )


def profile_problem(
    home: Path, profile: str, codex_version: tuple[int, int, int]
) -> InputError | None:
    """Why codex ``codex_version`` would not find ``profile`` in ``home``; None when it would.

    Codex 0.142+ silently runs without a missing profile file: asked for a profile, we refuse
    rather than make the image with settings the caller did not choose.
    """
    if codex_version >= PROFILE_FILES_SINCE:
        path = home / f"{profile}.config.toml"
        if path.is_file():
            return None
        problem, fix = f"there is no {path}", f"Create {path} with the profile's settings"
    else:
        config, _ = read_toml(home / "config.toml")
        tables = config.get("profiles")
        if isinstance(tables, Mapping) and isinstance(tables.get(profile), Mapping):
            return None
        shown = ".".join(map(str, codex_version))
        where = home / "config.toml"
        problem = f"{where} has no [profiles.{profile}] (where codex {shown} reads it)"
        fix = f"Add [profiles.{profile}] to {home / 'config.toml'}"
    return InputError(
        f"The profile {profile!r} was asked for, but {problem}.",
        reason="profile_not_found",
        hint=f"{fix}, or leave out the profile.",
    )


def _unreadable_dir(home: Path) -> str | None:
    """Why an existing codex home cannot be listed or entered; None when it can (or is absent)."""
    try:
        with os.scandir(home) as entries:  # listing needs read permission
            next(entries, None)
        (home / "auth.json").lstat()  # looking inside needs search (execute) permission
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _os_reason(exc)
    return None


def _read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None), (None, why it cannot be read), or (None, None) when there is no file.

    Only a regular file is opened: a FIFO or a device in its place would block the read forever,
    beyond any deadline (a worker thread cannot be cancelled).
    """
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            return None, "it is a directory"
        if not stat.S_ISREG(mode):
            return None, "it is not a regular file"
        return path.read_bytes().decode("utf-8"), None
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    except OSError as exc:
        return None, _os_reason(exc)


def read_toml(path: Path) -> tuple[dict[str, Any], str | None]:
    text, problem = _read_text(path)
    if text is None:
        return {}, problem
    try:
        return tomllib.loads(text.removeprefix("\ufeff")), None  # codex takes a BOM here
    except RecursionError:
        return {}, "its tables or arrays are nested too deeply"
    except tomllib.TOMLDecodeError as exc:
        # Only the position: a message could quote the file, and the file may hold secrets.
        where = re.search(r"at line (\d+), column (\d+)", str(exc))
        return (
            {},
            f"invalid TOML at line {where[1]}, column {where[2]}" if where else "invalid TOML",
        )


def read_auth_file(codex_home: Path) -> dict[str, Any] | None:
    """The parsed ``auth.json`` of ``codex_home``, read as the preflight reads it (a regular
    file only: a FIFO in its place would block forever); None when missing or unreadable."""
    return _read_auth(codex_home / "auth.json")[0]


def _read_auth(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    text, problem = _read_text(path)
    if text is None:
        return None, problem
    if text.startswith("\ufeff"):  # seen: codex cannot load such a login
        return None, "it starts with a byte-order mark (BOM), which codex cannot read"
    if not text.strip():
        return {}, None  # an empty file is a signed-out login, not a broken one
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON at line {exc.lineno}, column {exc.colno}"
    except RecursionError:
        return None, "its objects or arrays are nested too deeply"
    if not isinstance(data, dict):
        return None, "it is not a JSON object"
    return data, None


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    return exc.strerror or type(exc).__name__


def _login_status(
    home: Path,
    env: Mapping[str, str],
    codex: Codex | None,
    timeout_s: float,
    stop: threading.Event | None,
    store: str,
) -> LoginStatus:
    """Ask codex; its answer (stderr) can show part of an API key, so only the parse leaves here.

    The credential store is passed as an override: ``login status`` takes no ``--profile``, so
    a store set only in the profile would otherwise not be the one codex looks in.
    """
    from .launcher import locate

    codex = codex or locate(env=env)
    try:
        returncode, _, err = _proc.run_bounded(
            codex.command("-c", f'cli_auth_credentials_store="{store}"', "login", "status"),
            env={**codex.env, "CODEX_HOME": str(home)},
            timeout_s=timeout_s,
            stop=stop,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "error"
    return parse_login_status(returncode, err.decode("utf-8", "replace"))

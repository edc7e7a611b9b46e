"""The preflight rules, table-driven over fixture logins and configs (pure: no files, no processes)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from codex_cli_image import AuthError
from codex_cli_image.preflight import Verdict, assess, check_login, parse_login_status

from helpers import FIXTURES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)


def auth(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "auth" / name).read_text())
    return data


def config(name: str) -> dict[str, Any]:
    return tomllib.loads((FIXTURES / "config" / name).read_text())


def judge(
    auth_doc: dict[str, Any] | None = None,
    cfg: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Verdict:
    kwargs.setdefault("env", {})
    kwargs.setdefault("now", NOW)
    return assess(auth=auth_doc, config=cfg or {}, **kwargs)


# (id, auth fixture or None, config fixture or None, extra kwargs, expected reason, mode, plan)
CASES: list[tuple[str, str | None, str | None, dict[str, Any], str | None, str | None, str | None]] = [
    ("plus", "chatgpt-plus.json", None, {}, None, "chatgpt", "plus"),
    ("pro", "chatgpt-pro.json", "default.toml", {}, None, "chatgpt", "pro"),
    ("chatgpt mode wins over a stored key", "chatgpt-with-key.json", None, {}, None, "chatgpt", "plus"),
    ("legacy file without auth_mode", "legacy-chatgpt.json", None, {}, None, "chatgpt", "plus"),
    ("no auth_mode, key and tokens: api key", "legacy-key-and-tokens.json", None, {}, "api_key_login", "apikey", None),
    ("api key", "apikey.json", None, {}, "api_key_login", "apikey", None),
    ("host tokens", "chatgpt-auth-tokens.json", None, {}, "programmatic_login", "chatgptAuthTokens", None),
    ("agent identity", "agent-identity.json", None, {}, "programmatic_login", "agentIdentity", None),
    ("personal access token", "personal-access-token.json", None, {}, "programmatic_login", "personalAccessToken", None),
    ("no auth.json", None, None, {}, "not_signed_in", None, None),
    ("no tokens", "signed-out.json", None, {}, "not_signed_in", "chatgpt", None),
    ("free plan", "chatgpt-free.json", None, {}, "free_plan", "chatgpt", "free"),
    ("malformed jwt", "bad-jwt.json", None, {}, "auth_unreadable", "chatgpt", None),
    ("relay provider", "chatgpt-plus.json", "relay.toml", {}, "relay_provider", "chatgpt", "plus"),
    ("relay without openai auth, allowed", "chatgpt-plus.json", "relay.toml", {"allow_relay": True}, "relay_provider", "chatgpt", "plus"),
    ("relay with openai auth", "chatgpt-plus.json", "relay-openai-auth.toml", {}, "relay_provider", "chatgpt", "plus"),
    ("relay with openai auth, allowed", "chatgpt-plus.json", "relay-openai-auth.toml", {"allow_relay": True}, None, "chatgpt", "plus"),
    ("profile selects a relay", "chatgpt-plus.json", "profile-relay.toml", {}, "relay_provider", "chatgpt", "plus"),
    ("base url override", "chatgpt-plus.json", "base-url-override.toml", {}, "relay_provider", "chatgpt", "plus"),
    ("base url override, allowed", "chatgpt-plus.json", "base-url-override.toml", {"allow_relay": True}, None, "chatgpt", "plus"),
    ("feature off", "chatgpt-plus.json", "image-disabled.toml", {}, "image_generation_disabled", "chatgpt", "plus"),
    ("feature off in profile", "chatgpt-plus.json", "profile-image-disabled.toml", {}, "image_generation_disabled", "chatgpt", "plus"),
    ("codex home missing", "chatgpt-plus.json", None, {"codex_home_error": 'CODEX_HOME points to "/x", which does not exist.'}, "codex_home_missing", None, None),
    ("codex home unreadable", "chatgpt-plus.json", None, {"codex_home_unreadable": "The codex home /x cannot be read: permission denied."}, "codex_home_unreadable", None, None),
    ("auth unreadable", None, None, {"auth_error": "invalid JSON at line 1, column 64"}, "auth_unreadable", None, None),
    ("config unreadable", "chatgpt-plus.json", None, {"config_error": "invalid TOML at line 1, column 9"}, "config_unreadable", None, None),
    ("undefined profile", "chatgpt-plus.json", None, {"profile": "nope"}, "config_unreadable", None, None),
    ("keyring, signed in", None, "keyring.toml", {"login_status": "chatgpt"}, None, "chatgpt", None),
    ("keyring, signed out", None, "keyring.toml", {"login_status": "none"}, "not_signed_in", None, None),
    ("keyring, api key", None, "keyring.toml", {"login_status": "apikey"}, "api_key_login", "apikey", None),
    ("keyring, agent", None, "keyring.toml", {"login_status": "agent"}, "programmatic_login", "agentIdentity", None),
    ("keyring, unreadable", None, "keyring.toml", {"login_status": "error"}, "auth_unreadable", None, None),
    ("legacy profile on 0.169", "chatgpt-plus.json", "profile-relay.toml", {"codex_version": (0, 169, 0)}, "config_unreadable", None, None),
    ("legacy profile on 0.142", "chatgpt-plus.json", "profile-relay.toml", {"codex_version": (0, 142, 0)}, "config_unreadable", None, None),
    ("legacy profile on 0.125", "chatgpt-plus.json", "profile-relay.toml", {"codex_version": (0, 125, 0)}, "relay_provider", "chatgpt", "plus"),
    ("file store: login status is no proof", None, None, {"login_status": "chatgpt"}, "not_signed_in", None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("auth_name", "config_name", "kwargs", "reason", "mode", "plan"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules(
    auth_name: str | None,
    config_name: str | None,
    kwargs: dict[str, Any],
    reason: str | None,
    mode: str | None,
    plan: str | None,
) -> None:
    verdict = judge(
        auth(auth_name) if auth_name else None,
        config(config_name) if config_name else None,
        **kwargs,
    )
    assert (verdict.reason, verdict.mode, verdict.plan) == (reason, mode, plan)
    assert verdict.ok is (reason is None)
    if reason is None:
        assert verdict.hint is None and verdict.message is None
    else:
        assert verdict.message and verdict.hint  # every refusal says what happened and what to do


def test_auto_store_without_file_asks_codex() -> None:
    verdict = judge(None, {"cli_auth_credentials_store": "auto"}, login_status="chatgpt")
    assert verdict.ok and verdict.store == "auto"
    assert [w.code for w in verdict.warnings] == ["plan_unknown"]


def test_ephemeral_store_is_not_signed_in_for_a_new_process() -> None:
    verdict = judge(auth("chatgpt-plus.json"), {"cli_auth_credentials_store": "ephemeral"})
    assert verdict.reason == "not_signed_in" and "ephemeral" in (verdict.message or "")


def test_local_provider_is_never_allowed_as_a_relay() -> None:
    cfg = {
        "model_provider": "ollama",
        "model_providers": {"ollama": {"requires_openai_auth": True}},
    }
    verdict = judge(auth("chatgpt-plus.json"), cfg, allow_relay=True)
    assert verdict.reason == "relay_provider"


def test_allowed_relay_is_a_warning() -> None:
    verdict = judge(auth("chatgpt-plus.json"), config("relay-openai-auth.toml"), allow_relay=True)
    assert verdict.ok and verdict.provider == "relay"
    assert [w.code for w in verdict.warnings] == ["relay_provider"]


def test_openai_hosts_are_not_relays() -> None:
    cfg = {"chatgpt_base_url": "https://chatgpt.com/backend-api/"}
    assert judge(auth("chatgpt-plus.json"), cfg).ok


def test_profile_can_turn_the_feature_back_on() -> None:
    cfg = {
        "profile": "images",
        "features": {"image_generation": False},
        "profiles": {"images": {"features": {"image_generation": True}}},
    }
    assert judge(auth("chatgpt-plus.json"), cfg).ok


def test_profile_argument_overrides_the_config_profile() -> None:
    cfg = config("profile-relay.toml")
    cfg["profiles"]["plain"] = {}
    assert judge(auth("chatgpt-plus.json"), cfg, profile="plain").ok
    assert judge(auth("chatgpt-plus.json"), cfg).reason == "relay_provider"


@pytest.mark.parametrize("name", ["CODEX_API_KEY", "CODEX_ACCESS_TOKEN", "OPENAI_API_KEY"])
def test_credential_env_is_a_warning(name: str) -> None:
    verdict = judge(auth("chatgpt-plus.json"), env={name: "sk-FIXTURE_SECRET-env"})
    assert verdict.ok
    assert [w.code for w in verdict.warnings] == ["api_key_env_ignored"]
    assert name in verdict.warnings[0].message


def test_expired_token_is_a_warning() -> None:
    verdict = judge(auth("chatgpt-expired.json"))
    assert verdict.ok and [w.code for w in verdict.warnings] == ["token_stale"]


def test_unknown_and_missing_plans_are_warnings() -> None:
    assert [w.code for w in judge(auth("chatgpt-no-plan.json")).warnings] == ["plan_unknown"]
    doc = auth("chatgpt-plus.json")
    assert judge(doc).warnings == ()


def test_account_is_the_email_only() -> None:
    verdict = judge(auth("chatgpt-plus.json"))
    assert verdict.account == "fixture.user@example.com"


def test_raise_for_problem() -> None:
    judge(auth("chatgpt-plus.json")).raise_for_problem()  # ok: nothing raised
    with pytest.raises(AuthError) as info:
        judge(auth("apikey.json")).raise_for_problem()
    assert info.value.reason == "api_key_login" and "codex login" in info.value.hint


@pytest.mark.parametrize(
    ("code", "stderr", "expected"),
    [
        (0, "Logged in using ChatGPT\n", "chatgpt"),
        (0, "API key configured - sk-proj-***ABCDE\n", "apikey"),
        (0, "Logged in using Agent Identity\n", "agent"),
        (1, "Not logged in\n", "none"),
        (1, "Error checking login status: failed to deserialize CLI auth from file\n", "error"),
        (0, "WARNING: proceeding...\nLogged in using ChatGPT\n", "chatgpt"),
    ],
)
def test_parse_login_status(code: int, stderr: str, expected: str) -> None:
    assert parse_login_status(code, stderr) == expected


def test_every_verdict_is_free_of_secrets() -> None:
    """Regression guard: no fixture token or key may reach a verdict, its repr or its JSON."""
    rendered = []
    for path in sorted((FIXTURES / "auth").glob("*.json")):
        text = path.read_text()
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError:
            doc = None
        for cfg in (None, config("relay.toml"), config("image-disabled.toml")):
            verdict = judge(doc, cfg, env={"CODEX_API_KEY": "sk-FIXTURE_SECRET-env"})
            rendered += [repr(verdict), json.dumps(verdict.to_dict())]
    assert rendered and not [r for r in rendered if "FIXTURE_SECRET" in r]


def test_file_based_check_spawns_nothing(fp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """pytest-subprocess refuses any process that is not registered: none may start here."""
    fp.allow_unregistered(False)
    home = tmp_path / "ch"
    home.mkdir()
    (home / "auth.json").write_bytes((FIXTURES / "auth" / "chatgpt-plus.json").read_bytes())
    (home / "config.toml").write_bytes((FIXTURES / "config" / "relay.toml").read_bytes())
    verdict = check_login(home, env={})
    assert verdict.reason == "relay_provider" and verdict.account == "fixture.user@example.com"


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("content", "reason", "detail"),
    [
        (b"", "not_signed_in", None),
        (b"   \n", "not_signed_in", None),
        (b'{"tokens": {"id_token": "FIXTURE_SECRET", ', "auth_unreadable", "line 1, column"),
        (b"[1, 2]", "auth_unreadable", "not a JSON object"),
        (b"\xff\xfe{}", "auth_unreadable", "not UTF-8"),
    ],
)
def test_reader_describes_broken_files_without_contents(
    tmp_path: Path, content: bytes, reason: str, detail: str | None
) -> None:
    home = tmp_path / "ch"
    home.mkdir()
    (home / "auth.json").write_bytes(content)
    verdict = check_login(home, env={})
    assert verdict.reason == reason
    if detail:
        assert detail in (verdict.message or "") and str(home / "auth.json") in (
            verdict.message or ""
        )
    assert "FIXTURE_SECRET" not in repr(verdict)


@pytest.mark.bad_input
def test_reader_reports_toml_position_only(tmp_path: Path) -> None:
    home = tmp_path / "ch"
    home.mkdir()
    (home / "config.toml").write_text('api_key = "FIXTURE_SECRET\n[x')
    verdict = check_login(home, env={})
    assert verdict.reason == "config_unreadable"
    assert "line 1" in (verdict.message or "") and "FIXTURE_SECRET" not in repr(verdict)


@pytest.mark.bad_input
def test_reader_unreadable_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "ch"
    home.mkdir()
    (home / "auth.json").write_bytes((FIXTURES / "auth" / "chatgpt-plus.json").read_bytes())
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "auth.json":  # a chmod 000 file, as root cannot make one
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    verdict = check_login(home, env={})
    assert verdict.reason == "auth_unreadable" and "permission denied" in (verdict.message or "")


@pytest.mark.bad_input
@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("name", "reason"), [("auth.json", "auth_unreadable"), ("config.toml", "config_unreadable")]
)
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_reader_opens_only_regular_files(tmp_path: Path, name: str, reason: str, kind: str) -> None:
    """Regression guard: a FIFO in place of auth.json blocked the read, and the call, forever."""
    home = tmp_path / "ch"
    home.mkdir()
    (home / "auth.json").write_bytes((FIXTURES / "auth" / "chatgpt-plus.json").read_bytes())
    (home / name).unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(home / name)
    else:
        (home / name).mkdir()
    verdict = check_login(home, env={})
    expected = "not a regular file" if kind == "fifo" else "it is a directory"
    assert verdict.reason == reason and expected in (verdict.message or "")


@pytest.mark.bad_input
def test_reader_unreadable_codex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression guard: an unreadable home was reported as a broken config.toml, which the
    user may not even have."""
    home = tmp_path / "ch"
    home.mkdir()
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path) == home:  # a chmod 000 directory, as root cannot make one
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    verdict = check_login(home, env={})
    assert verdict.reason == "codex_home_unreadable"
    assert verdict.message == f"The codex home {home} cannot be read: permission denied."
    assert verdict.hint and "CODEX_HOME" in verdict.hint


@pytest.mark.bad_input
def test_reader_codex_home_resolution(tmp_path: Path) -> None:
    assert check_login(env={"CODEX_HOME": str(tmp_path / "nope")}).reason == "codex_home_missing"
    plain = tmp_path / "file"
    plain.write_text("")
    assert "not a directory" in (check_login(plain, env={}).message or "")
    # No CODEX_HOME and no ~/.codex yet: simply not signed in.
    assert check_login(env={"HOME": str(tmp_path)}).reason == "not_signed_in"


@pytest.mark.bad_input
def test_codex_home_from_the_environment_is_taken_literally(tmp_path: Path) -> None:
    """Regression guard: codex does not expand "~" in CODEX_HOME, so neither may we."""
    (tmp_path / "ch").mkdir()
    verdict = check_login(env={"HOME": str(tmp_path), "CODEX_HOME": "~/ch"})
    assert verdict.reason == "codex_home_missing"


@pytest.mark.bad_input
@pytest.mark.parametrize("source", ["given", "CODEX_HOME", "default"])
def test_a_refusal_names_the_codex_home_and_how_it_was_chosen(tmp_path: Path, source: str) -> None:
    """Regression guard: an MCP client or daemon started with a minimal environment checked
    another home than the user signed in to, and the error did not say which."""
    home = tmp_path / ".codex" if source == "default" else tmp_path / "work-home"
    home.mkdir()
    env = {"HOME": str(tmp_path)}
    if source == "CODEX_HOME":
        env["CODEX_HOME"] = str(home)
    verdict = check_login(home if source == "given" else None, env=env)
    how = {"given": "as given", "CODEX_HOME": "from CODEX_HOME", "default": "the default"}
    assert verdict.reason == "not_signed_in"
    assert verdict.message == f"Codex is not signed in (codex home {home}, {how[source]})."
    login = f"`CODEX_HOME={home} codex login`" if source == "given" else "`codex login`"
    assert verdict.hint is not None and login in verdict.hint


@pytest.mark.bad_input
def test_a_missing_default_home_is_not_signed_in_not_a_bad_codex_home(tmp_path: Path) -> None:
    """Regression guard: with no ~/.codex and CODEX_HOME unset, the error told the user to
    "create that directory, or unset CODEX_HOME", which they never set."""
    from codex_cli_image import doctor

    verdict = check_login(env={"HOME": str(tmp_path)})
    assert verdict.reason == "not_signed_in" and "unset CODEX_HOME" not in (verdict.hint or "")
    report = doctor(codex="/nonexistent/codex", env={"HOME": str(tmp_path), "PATH": "/nowhere"})
    assert [p.reason for p in report.problems if p.kind == "auth"] == ["not_signed_in"]
    given = check_login(tmp_path / "nope", env={})
    assert given.reason == "codex_home_missing"
    assert given.message == f"The codex home {tmp_path / 'nope'} does not exist."
    assert given.hint is not None and "unset CODEX_HOME" not in given.hint


def test_an_empty_default_home_also_suggests_pointing_at_another(tmp_path: Path) -> None:
    """An MCP client or a service may not pass the user's CODEX_HOME: when the default home holds
    no login, the hint says to sign in or to name the home the user signed in with."""
    (tmp_path / ".codex").mkdir()
    default = check_login(env={"HOME": str(tmp_path)})
    assert default.reason == "not_signed_in"
    assert "codex login" in (default.hint or "") and "--codex-home" in (default.hint or "")
    given = check_login(tmp_path / ".codex", env={"HOME": str(tmp_path)})
    assert given.reason == "not_signed_in" and "--codex-home" not in (given.hint or "")

"""Against the real @openai/codex from npm: the launcher and the fake's fidelity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_cli_image import InputError, locate, probe_version
from codex_cli_image.launcher import (
    YIELD_SETTING,
    known_features,
    manifest_version,
    parse_features,
    probe_features,
)
from codex_cli_image.lockdown import features_to_disable
from codex_cli_image.preflight import check_login, profile_problem
from codex_cli_image.settings import check_profile_name
from codex_cli_image.testing import FakeCodex, chatgpt_auth, realcodex

from helpers import FIXTURES, offline

pytestmark = pytest.mark.real_codex


def test_npm_shim_resolves_to_native_and_runs_with_empty_path(
    real_codex_shim: Path, isolated_home: Path
) -> None:
    env = {"PATH": "/nonexistent", "HOME": str(isolated_home)}
    codex = locate(real_codex_shim, env=env)
    assert not codex.via_shim
    assert codex.shim is not None and codex.shim.name == "codex.js"
    assert codex.path.name == "codex" and "vendor" in codex.path.parts
    assert codex.env["CODEX_MANAGED_BY_NPM"] == "1"
    assert str(probe_version(codex)) == realcodex.VERSIONS[0]


def test_doctor_cli_with_the_npm_shim_and_a_gui_path(real_codex_shim: Path, tmp_path: Path) -> None:
    """Also a regression guard: doctor's probes made tmp/arg0-* in the user's codex home (the
    real codex does so wherever the home is outside the temp dir, as here)."""
    home = Path(os.environ["CODEX_HOME"])
    (home / "auth.json").write_bytes((FIXTURES / "auth" / "chatgpt-plus.json").read_bytes())
    (home / "config.toml").write_text('model_instructions_file = "instructions.md"\n', "utf-8")
    (home / "instructions.md").write_text("Be brief.\n", "utf-8")  # read through the mirror
    before = sorted(p.name for p in home.rglob("*"))
    scratch = tmp_path / "elsewhere-tmp"
    scratch.mkdir()
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TMPDIR": str(scratch)}
    argv = [sys.executable, "-m", "codex_cli_image", "doctor", "--json", "--no-usage", "--codex"]
    result = subprocess.run(
        offline([*argv, str(real_codex_shim)]), capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["codex"]["version"] == realcodex.VERSIONS[0]
    assert report["codex"]["via_shim"] is False
    assert report["login"]["plan"] == "plus"
    assert report["image_generation"] is True  # as the real `codex features list` reports it
    assert sorted(p.name for p in home.rglob("*")) == before
    assert list(scratch.iterdir()) == []
    # #32: without --no-usage it asks codex app-server for the usage windows; offline here, so
    # that is a warning, not a failure (and its workspace is gone).
    argv.remove("--no-usage")
    result = subprocess.run(
        offline([*argv, str(real_codex_shim)]), capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["usage_limits"] is None
    assert [w["code"] for w in report["warnings"]] == ["usage_unavailable"]
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    "auth",
    [None, chatgpt_auth(), chatgpt_auth(auth_mode=None, api_key="sk-test-not-real")],
    ids=["signed-out", "chatgpt", "api-key"],
)
@pytest.mark.parametrize("store", [None, "file"], ids=["as-configured", "store-override"])
def test_fake_login_status_matches_the_real_one(
    real_codex_shim: Path, tmp_path: Path, auth: dict[str, object] | None, store: str | None
) -> None:
    """Keeps the fake honest: same exit code, same first line, same stream as the real CLI;
    also with the store given as ``-c`` before the command, as our preflight asks."""
    codex = locate(real_codex_shim)
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "fake-home", login=None)
    real_home = tmp_path / "real-home"
    real_home.mkdir()
    for home in (real_home, fake.codex_home):
        if auth is not None:
            (home / "auth.json").write_text(json.dumps(auth))
    options = [] if store is None else ["-c", f'cli_auth_credentials_store="{store}"']
    answers = []
    for argv, home in ((codex.command(), real_home), ([str(fake.path)], fake.codex_home)):
        env = {**codex.env, "CODEX_HOME": str(home)}
        proc = subprocess.run(
            offline([*argv, *options, "login", "status"]), capture_output=True, text=True,
            env=env, timeout=60,
        )  # fmt: skip
        answers.append((proc.returncode, proc.stdout, proc.stderr.replace(str(home), "<home>")))
    assert answers[0] == answers[1]


def test_fake_usage_errors_match_the_real_one(real_codex_shim: Path, tmp_path: Path) -> None:
    codex = locate(real_codex_shim)
    fake = FakeCodex(tmp_path / "fake", login=None)
    results = []
    for argv in (codex.command(), [str(fake.path)]):
        proc = subprocess.run(
            offline([*argv, "exec", "--full-auto", "-"]),
            capture_output=True,
            text=True,
            env={**codex.env, "CODEX_HOME": str(fake.codex_home)},
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        results.append((proc.returncode, errors))
    assert results[0] == results[1] == (2, ["error: unexpected argument '--full-auto' found"])


def test_fake_version_line_matches_the_real_one(real_codex_shim: Path, tmp_path: Path) -> None:
    codex = locate(real_codex_shim)
    fake = FakeCodex(tmp_path / "fake", login=None)
    fake.configure(version=realcodex.VERSIONS[0])
    lines = [
        subprocess.run(
            offline([*argv, "--version"]), capture_output=True, text=True, env=dict(codex.env)
        ).stdout
        for argv in (codex.command(), [str(fake.path)])
    ]
    assert lines[0] == lines[1]


def _login_answer(argv: list[str], home: Path, env: dict[str, str]) -> tuple[int, str, list[str]]:
    proc = subprocess.run(
        offline([*argv, "login", "status"]),
        capture_output=True,
        text=True,
        env={**env, "CODEX_HOME": str(home)},
        timeout=60,
    )
    # Error details name byte positions the fake cannot know; the kind of answer must match.
    lines = [
        line.split(":")[0] if line.startswith("Error checking login status") else line
        for line in proc.stderr.replace(str(home), "<home>").splitlines()
    ]
    return proc.returncode, proc.stdout, lines


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (FIXTURES / "auth").glob("*.json") if p.name != "agent-identity.json"),
)
def test_fake_reads_every_fixture_login_like_the_real_one(
    real_codex_shim: Path, tmp_path: Path, name: str
) -> None:
    """Regression guard for the fake: real 0.169 says "Logged in using ChatGPT" even for a file
    without tokens, and cannot parse an id_token that is not a JWT."""
    codex = locate(real_codex_shim)
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "fake-home", login=None)
    real_home = tmp_path / "real-home"
    real_home.mkdir()
    for home in (real_home, fake.codex_home):
        (home / "auth.json").write_bytes((FIXTURES / "auth" / name).read_bytes())
    real = _login_answer(codex.command(), real_home, dict(codex.env))
    assert real == _login_answer([str(fake.path)], fake.codex_home, dict(codex.env))


def _features(argv: list[str], home: Path, env: dict[str, str]) -> tuple[int, bool | None]:
    proc = subprocess.run(
        offline([*argv, "features", "list"]),
        capture_output=True,
        text=True,
        env={**env, "CODEX_HOME": str(home)},
        timeout=60,
    )
    return proc.returncode, parse_features(proc.stdout).get("image_generation")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("default.toml", (0, True)),
        ("image-disabled.toml", (0, False)),
        ("relay.toml", (0, True)),
        ("profile-relay.toml", (1, None)),  # 0.169 refuses the legacy profile selector
        ("profile-image-disabled.toml", (1, None)),
    ],
)
def test_config_rules_agree_with_the_real_cli(
    real_codex_shim: Path, tmp_path: Path, name: str, expected: tuple[int, bool | None]
) -> None:
    """The real CLI, the fake and the preflight read each config fixture the same way."""
    codex = locate(real_codex_shim)
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "fake-home")
    fake.configure(version=realcodex.VERSIONS[0])
    real_home = tmp_path / "real-home"
    real_home.mkdir()
    for home in (real_home, fake.codex_home):
        (home / "config.toml").write_bytes((FIXTURES / "config" / name).read_bytes())
        (home / "auth.json").write_bytes((FIXTURES / "auth" / "chatgpt-plus.json").read_bytes())
    assert _features(codex.command(), real_home, dict(codex.env)) == expected
    assert _features([str(fake.path)], fake.codex_home, dict(codex.env)) == expected
    verdict = check_login(real_home, env={}, codex_version=probe_version(codex).release)
    if expected[0] == 1:
        assert verdict.reason == "config_unreadable"
    elif expected[1] is False:
        assert verdict.reason == "image_generation_disabled"
    else:
        assert verdict.reason in (None, "relay_provider")


@pytest.mark.parametrize(
    "argv",
    [
        ["exec", "--json", "--json", "-"],
        ["exec", "-m", "--json", "-"],
        ["exec", "--skip-git-repo-check", "--", "a", "b"],
    ],
    ids=["repeated flag", "value looks like a flag", "two prompts"],
)
def test_fake_rejects_what_the_real_cli_rejects(
    real_codex_shim: Path, tmp_path: Path, argv: list[str]
) -> None:
    codex = locate(real_codex_shim)
    fake = FakeCodex(tmp_path / "fake", login=None)
    codes = [
        subprocess.run(
            offline([*prefix, *argv]),
            capture_output=True,
            env={**codex.env, "CODEX_HOME": str(fake.codex_home)},
            stdin=subprocess.DEVNULL,
            timeout=60,
        ).returncode
        for prefix in (codex.command(), [str(fake.path)])
    ]
    assert codes == [2, 2]


_PROFILE_CASES = {
    "table": ('[profiles.work]\nmodel_provider = "nope_table"\n', None),
    "file": ("", 'model_provider = "nope_file"\n'),
    "both": ('[profiles.work]\nmodel_provider = "nope_table"\n', 'model_provider = "nope_file"\n'),
    "line": ('profile = "work"\n', 'model = "m1"\n'),
}


def _profile_run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    result = subprocess.run(
        offline(argv), input=b"hi", capture_output=True, env=env, cwd=cwd, timeout=60
    )
    text = result.stderr.decode("utf-8", "replace")
    for phrase in ("nope_table", "nope_file", "cannot be used while", "not found",
                   "no longer supported", "pass a plain name"):  # fmt: skip
        if phrase in text:
            return result.returncode, phrase
    return result.returncode, text[-300:]


@pytest.mark.parametrize("version", ["0.171.0", "0.142.0", "0.125.0"])
@pytest.mark.parametrize("case", [*_PROFILE_CASES, "bad name"])
def test_profiles_agree_with_the_real_cli(tmp_path: Path, version: str, case: str) -> None:
    """How each codex applies `exec --profile work` (tables before 0.142, files since, refused
    while config.toml keeps the old form): the fake does the same, and the preflight refuses
    every case the real CLI cannot run, before any quota is spent."""
    try:
        shim = realcodex.install(version, root=realcodex.cache_root())
    except (realcodex.NpmUnavailable, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"real codex {version} is not installable here: {exc}")
    codex = locate(shim)
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "fake-home")
    fake.configure(version=version)
    real_home = tmp_path / "real-home"
    real_home.mkdir()
    base, layer = _PROFILE_CASES.get(case, ("", 'model = "m1"\n'))
    name = "../x" if case == "bad name" else "work"
    for home in (real_home, fake.codex_home):
        (home / "config.toml").write_text('model = "m0"\n' + base, "utf-8")
        if layer is not None:
            (home / "work.config.toml").write_text(layer, "utf-8")
    argv = ["exec", f"--profile={name}", "--json", "--skip-git-repo-check", "-"]
    real_env = {**codex.env, "CODEX_HOME": str(real_home)}
    fake_env = {**codex.env, "CODEX_HOME": str(fake.codex_home)}
    real = _profile_run([*codex.command(), *argv], real_env, tmp_path)
    imitated = _profile_run([str(fake.path), *argv], fake_env, tmp_path)
    assert imitated == real and real[0] != 0
    # The preflight: each of these is refused before codex would run.
    release = probe_version(codex).release
    if case == "bad name":
        with pytest.raises(InputError):
            check_profile_name(name)
        return
    problem = profile_problem(real_home, name, release)
    verdict = check_login(real_home, env={}, codex_version=release, profile=name)
    assert problem is not None or not verdict.ok


@pytest.mark.parametrize("version", realcodex.VERSIONS)
def test_the_package_manifest_says_what_the_binary_says(version: str) -> None:
    """The version read from codex-package.json (no process) is what --version answers; before
    0.142 there is no manifest."""
    try:
        shim = realcodex.install(version, root=realcodex.cache_root())
    except (realcodex.NpmUnavailable, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"real codex {version} is not installable here: {exc}")
    codex = locate(shim)
    expected = None if version == "0.125.0" else probe_version(codex)
    assert manifest_version(codex) == expected
    assert str(probe_version(codex)) == version


@pytest.mark.parametrize("version", realcodex.VERSIONS)
def test_the_features_we_disable_are_known_to_every_release(version: str, tmp_path: Path) -> None:
    """codex refuses --disable of a feature it does not know; each release is asked (and the
    fake refuses an unknown one as they do). The shell is taken away on every release."""
    try:
        shim = realcodex.install(version, root=realcodex.cache_root())
    except (realcodex.NpmUnavailable, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"real codex {version} is not installable here: {exc}")
    codex = locate(shim)
    disabled = features_to_disable(known_features(codex) or ())
    assert disabled[:2] == ("plugins", "apps")
    assert {"shell_tool", "unified_exec", "multi_agent", "tool_suggest"} <= set(disabled)
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "home")
    argv = ["exec", "--disable", "no_such_feature", "--skip-git-repo-check", "-"]
    runs = [
        subprocess.run(offline([*prefix, *argv]), input=b"hi", capture_output=True,
                       env={**codex.env, "CODEX_HOME": str(fake.codex_home)}, timeout=60)
        for prefix in (codex.command(), [str(fake.path)])
    ]  # fmt: skip
    assert [r.returncode for r in runs] == [1, 1]
    assert all(b"Unknown feature flag: no_such_feature" in r.stderr for r in runs)


@pytest.mark.parametrize("backtrace", ["0", "1"])
def test_a_full_codex_home_is_named_with_codex_own_words(
    real_codex_shim: Path, tmp_path: Path, backtrace: str
) -> None:
    """Regression guard: with RUST_BACKTRACE=1 the message quoted the last stderr line, a
    backtrace frame ("13: <unknown>"), not codex's "No space left on device"."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a full tmpfs needs root on Linux")
    home = tmp_path / "full-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(home)], check=True)
    try:
        (home / "auth.json").write_bytes((FIXTURES / "auth" / "chatgpt-plus.json").read_bytes())
        fill = os.open(home / "fill", os.O_WRONLY | os.O_CREAT)
        try:  # every byte left
            while os.write(fill, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fill)
        env = {**os.environ, "CODEX_HOME": str(home), "RUST_BACKTRACE": backtrace}
        argv = [sys.executable, "-m", "codex_cli_image", "generate", "a fox", "-o", str(tmp_path),
                "--json", "--retries", "0", "--codex", str(real_codex_shim)]  # fmt: skip
        result = subprocess.run(offline(argv), capture_output=True, text=True, env=env,
                                timeout=120)  # fmt: skip
    finally:
        subprocess.run(["umount", str(home)], check=False)
    assert result.returncode == 5, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["reason"] == "disk_full" and "No space left on device" in error["message"]
    assert "<unknown>" not in error["message"] and "Traceback" not in result.stderr


@pytest.mark.parametrize("version", realcodex.VERSIONS)
def test_the_yield_setting_is_taken_where_the_fake_takes_it(version: str, tmp_path: Path) -> None:
    """#31: code mode's cell yield time (-c features.code_mode.default_exec_yield_time_ms) is
    taken from 0.149 on; before, codex refuses to start with it. The probe tells them apart
    from features list, and the fake refuses it as each release does, in its words."""
    try:
        shim = realcodex.install(version, root=realcodex.cache_root())
    except (realcodex.NpmUnavailable, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"real codex {version} is not installable here: {exc}")
    codex = locate(shim)
    probed = probe_features(codex)
    assert probed is not None and probed[1] == (version not in ("0.125.0", "0.142.0"))
    fake = FakeCodex(tmp_path / "fake", codex_home=tmp_path / "home")
    fake.configure("success", version=version)
    argv = ["--config", f"{YIELD_SETTING}=1000", "features", "list"]
    runs = [
        subprocess.run(offline([*prefix, *argv]), capture_output=True, timeout=60,
                       env={**codex.env, "CODEX_HOME": str(fake.codex_home)})
        for prefix in (codex.command(), [str(fake.path)])
    ]  # fmt: skip
    real, ours = runs
    assert real.returncode == ours.returncode
    if real.returncode:
        error = [
            line for line in real.stderr.decode().splitlines() if line.startswith(("Error", "in "))
        ]
        assert "\n".join(error) in ours.stderr.decode()

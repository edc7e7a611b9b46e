from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import codex_cli_image
from codex_cli_image.cli import EXIT_CODES, main
from codex_cli_image.launcher import TESTED_VERSIONS
from codex_cli_image.testing import FakeCodex

from helpers import FIXTURES


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codex_cli_image", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_exit_codes_are_the_documented_ones() -> None:
    assert EXIT_CODES == {"input": 2, "auth": 3, "quota": 4, "transient": 5, "launch": 6}


def test_version_via_module_and_console_script() -> None:
    assert cli("--version").stdout == f"codex-image {codex_cli_image.__version__}\n"
    script = Path(sys.executable).with_name("codex-image")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"codex-image {codex_cli_image.__version__}"


@pytest.mark.bad_input
def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_doctor_json_ready(fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]) -> None:
    fake_codex.configure(version="0.169.0")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert report["image_generation"] is True
    assert report["codex_home"] == str(fake_codex.codex_home)
    login = report["login"]
    assert (login["ok"], login["mode"], login["plan"]) == (True, "chatgpt", "plus")
    assert report["codex"] == {
        "path": str(fake_codex.path),
        "source": "CODEX_BIN",
        "via_shim": False,
        "shim": None,
        "version": "0.169.0",
        "removed_env": [],
    }


def test_doctor_warns_about_a_codex_newer_than_tested(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newer codex is worth a warning, not a failure: it usually works, but the CLI changes
    often and what it writes is what breaks first."""
    newest = TESTED_VERSIONS[0]
    major, minor, patch = (int(p) for p in newest.split("."))
    fake_codex.configure(version=f"{major}.{minor + 1}.0")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and [w["code"] for w in report["warnings"]] == [
        "codex_newer_than_tested"
    ]
    assert newest in report["warnings"][0]["message"]
    assert main(["doctor"]) == 0
    assert "warning: codex" in capsys.readouterr().err
    fake_codex.configure(version=newest)
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_doctor_json_reports_removed_credentials(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_API_KEY", "sk-must-not-appear")
    assert main(["doctor", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["codex"]["removed_env"] == ["CODEX_API_KEY"]
    assert "sk-must-not-appear" not in out


def test_doctor_human_table(fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["codex", str(fake_codex.path)]
    assert out[1].split()[:3] == ["found", "via", "CODEX_BIN"]
    assert out[-2].split() == ["status", "ready"]
    assert "login       ChatGPT (plus), user@example.com" in out
    assert "image tool  on" in out
    # #32: how much of the subscription is used, read without an image (codex app-server)
    assert re.fullmatch(r"usage +5 h window 34 % used \(resets \d\d:\d\d\) · weekly 12 % "
                        r"used \(resets \w{3} \d\d:\d\d\)", out[-1]), out[-1]  # fmt: skip
    assert len(fake_codex.app_server_calls) == 1 and fake_codex.exec_calls == []


def test_doctor_says_when_the_usage_windows_cannot_be_read(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_codex.configure("success", usage_read="unavailable")
    assert main(["doctor", "--json"]) == 0  # ready all the same: images may well work
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["usage_limits"] is None
    (warning,) = [w for w in report["warnings"] if w["code"] == "usage_unavailable"]
    assert "could not read the usage windows" in warning["message"]


def test_limits_reads_the_windows_without_an_image(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["limits"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("5 h window 34 % used (resets ") and line.endswith(" · plan plus")
    assert main(["limits", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True and document["plan"] == "plus"
    assert document["primary"]["used_percent"] == 34.0
    assert document["secondary"]["window_minutes"] == 10080
    assert fake_codex.exec_calls == [] and len(fake_codex.app_server_calls) == 2


@pytest.mark.parametrize(
    ("how", "code", "reason"),
    [("refused", 3, "login_refused"), ("unavailable", 5, "usage_unavailable"),
     ("hang", 5, "timeout")],
)  # fmt: skip
def test_limits_errors_exit_as_doctor_does(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str], how: str, code: int, reason: str
) -> None:
    fake_codex.configure("success", usage_read=how, hang_max=20)
    assert main(["limits", "--json", "--timeout", "2"]) == code
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["reason"] == reason and error["hint"]


@pytest.mark.parametrize(("login", "code"), [("apikey", 3), ("none", 3)])
def test_limits_refuses_logins_that_cannot_make_images(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str], login: str, code: int
) -> None:
    if login == "apikey":
        shutil.copy(FIXTURES / "auth" / "apikey.json", fake_codex.codex_home / "auth.json")
    else:
        (fake_codex.codex_home / "auth.json").unlink()
    assert main(["limits"]) == code
    assert "hint:" in capsys.readouterr().err and fake_codex.app_server_calls == []


def test_doctor_not_found_exits_6(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    result = cli("doctor", "--json", env=env)
    assert result.returncode == 6
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["codex"] is None
    launch, login = report["problems"]  # the launch problem decides the exit code
    assert launch["kind"] == "launch" and launch["reason"] == "codex_not_found"
    assert "npm install -g @openai/codex" in launch["hint"]
    assert login["kind"] == "auth" and login["reason"] == "not_signed_in"
    assert report["image_generation"] is None


@pytest.mark.bad_input
def test_doctor_explicit_missing_path_human(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    result = cli("doctor", "--codex", str(tmp_path / "nope"), env=env)
    assert result.returncode == 6
    assert f"error: --codex points to {tmp_path / 'nope'}, which does not exist." in result.stderr
    assert "hint: " in result.stderr


def test_doctor_version_probe_failure_keeps_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "codex"
    broken.write_text("#!/bin/sh\necho 'segfault' >&2\nexit 139\n")
    broken.chmod(0o755)
    assert main(["doctor", "--json", "--codex", str(broken)]) == 6
    report = json.loads(capsys.readouterr().out)
    assert report["codex"]["path"] == str(broken) and report["codex"]["version"] is None
    assert report["problems"][0]["reason"] == "version_probe_failed"
    assert "139" in report["problems"][0]["message"]


def test_doctor_api_key_login_exits_3(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(FIXTURES / "auth" / "apikey.json", fake_codex.codex_home / "auth.json")
    assert main(["doctor", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["login"]["mode"] == "apikey"
    assert [p["reason"] for p in report["problems"]] == ["api_key_login"]
    assert fake_codex.exec_calls == []


def test_doctor_keyring_login_asks_codex(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    (fake_codex.codex_home / "auth.json").unlink()
    shutil.copy(FIXTURES / "config" / "keyring.toml", fake_codex.codex_home / "config.toml")
    fake_codex.configure(login="chatgpt")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["login"]["store"] == "keyring" and report["login"]["plan"] is None
    assert [w["code"] for w in report["login"]["warnings"]] == ["plan_unknown"]
    assert ["login", "status"] in [call.argv[-2:] for call in fake_codex.calls]
    fake_codex.configure(login="none")
    assert main(["doctor", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["problems"][0]["reason"] == "not_signed_in"


def test_doctor_file_login_spawns_no_login_status(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--json"]) == 0
    assert ["login", "status"] not in [call.argv[-2:] for call in fake_codex.calls]


def test_doctor_reports_the_feature_flag_codex_sees(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_codex.configure(image_generation=False)
    assert main(["doctor", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["image_generation"] is False
    assert [p["reason"] for p in report["problems"]] == ["image_generation_disabled"]


@pytest.mark.bad_input
def test_doctor_missing_codex_home(
    fake_codex: FakeCodex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--json", "--codex-home", str(tmp_path / "nope")]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0]["reason"] == "codex_home_missing"
    assert report["image_generation"] is None


def test_doctor_allow_relay(fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(
        FIXTURES / "config" / "relay-openai-auth.toml", fake_codex.codex_home / "config.toml"
    )
    assert main(["doctor", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["problems"][0]["reason"] == "relay_provider"
    assert main(["doctor", "--json", "--allow-relay"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w["code"] for w in report["login"]["warnings"]] == ["relay_provider"]


def test_doctor_never_prints_a_secret(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: no token or key from the fixtures in any doctor output, JSON or text."""
    monkeypatch.setenv("CODEX_API_KEY", "sk-FIXTURE_SECRET-from-env")
    outputs = []
    for fixture in sorted((FIXTURES / "auth").glob("*.json")):
        shutil.copy(fixture, fake_codex.codex_home / "auth.json")
        for args in (["doctor", "--json"], ["doctor"]):
            main(args)
            captured = capsys.readouterr()
            outputs.append(captured.out + captured.err)
    assert len(outputs) == 2 * len(list((FIXTURES / "auth").glob("*.json")))
    assert [o for o in outputs if "FIXTURE_SECRET" in o] == []


def test_doctor_reports_a_config_codex_refuses(
    fake_codex: FakeCodex, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(FIXTURES / "config" / "profile-relay.toml", fake_codex.codex_home / "config.toml")
    fake_codex.configure(version="0.169.0")
    assert main(["doctor", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert [p["reason"] for p in report["problems"]] == ["config_unreadable"]
    assert "no longer supports" in report["problems"][0]["message"]


def test_non_utf8_path_in_a_report(tmp_path: Path) -> None:
    """Regression guard: a codex path that is not UTF-8 crashed the human report."""
    odd = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(odd)
    codex = odd + b"/codex"
    with open(codex, "w") as handle:
        handle.write("#!/bin/sh\necho codex-cli 0.169.0\n")
    os.chmod(codex, 0o755)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "doctor", "--codex", os.fsdecode(codex)],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert b"Traceback" not in result.stderr
    assert b"caf\\udce9" in result.stdout

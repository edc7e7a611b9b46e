"""`--profile NAME`: passed to codex as the installed version expects, and checked first as codex
will read it (0.142+: NAME.config.toml layered over config.toml; before: [profiles.NAME])."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codex_cli_image import AuthError, Client, ImageRequest, InputError, doctor, generate
from codex_cli_image.testing import FakeCodex

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("private_tmp")]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def write(fake: FakeCodex, name: str, text: str) -> Path:
    path = fake.codex_home / name
    path.write_text(text, "utf-8")
    return path


def test_the_profile_reaches_codex_and_its_model_is_used(fake_codex: FakeCodex, out: Path) -> None:
    write(fake_codex, "config.toml", 'model = "m-base"\n')
    write(fake_codex, "work.config.toml", 'model = "m-work"\n')
    result = generate("a fox", output=out, profile="work")
    assert result.path.is_file()
    (call,) = fake_codex.exec_calls
    assert "--profile=work" in call.argv and call.raw["model"] == "m-work"


def test_older_codex_reads_the_profile_table(fake_codex: FakeCodex, out: Path) -> None:
    fake_codex.configure(version="0.125.0")
    write(fake_codex, "config.toml", 'model = "m-base"\n[profiles.work]\nmodel = "m-table"\n')
    generate("a fox", output=out, profile="work")
    assert fake_codex.exec_calls[0].raw["model"] == "m-table"
    write(fake_codex, "config.toml", 'model = "m-base"\n')
    write(fake_codex, "work.config.toml", 'model = "m-work"\n')  # 0.125 does not read it
    with pytest.raises(InputError) as info:
        generate("a fox", output=out, profile="work")
    assert info.value.reason == "profile_not_found" and "[profiles.work]" in info.value.message


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("files", "kind", "reason", "words"),
    [
        ({}, "input", "profile_not_found", "work.config.toml"),
        ({"work.config.toml": 'model_provider = "relay"\n[model_providers.relay]\n'
          'name = "r"\nbase_url = "https://relay.example/v1"\nrequires_openai_auth = true\n'},
         "auth", "relay_provider", "the profile 'work'"),
        ({"work.config.toml": 'openai_base_url = "https://relay.example/v1"\n'},
         "auth", "relay_provider", "work.config.toml sends requests to relay.example"),
        ({"work.config.toml": "[features]\nimage_generation = false\n"},
         "auth", "image_generation_disabled", "work.config.toml"),
        ({"work.config.toml": 'cli_auth_credentials_store = "ephemeral"\n'},
         "auth", "not_signed_in", "ephemeral"),
        ({"config.toml": "[profiles.work]\n", "work.config.toml": ""},
         "auth", "config_unreadable", "[profiles.work]"),
        ({"work.config.toml": "model = \n"}, "auth", "config_unreadable", "invalid TOML"),
    ],
    ids=["missing", "relay", "base url", "tool off", "ephemeral", "old table too", "bad toml"],
)  # fmt: skip
def test_what_the_profile_says_is_checked_before_any_quota_is_spent(
    fake_codex: FakeCodex, out: Path, files: dict[str, str], kind: str, reason: str, words: str
) -> None:
    for name, text in files.items():
        write(fake_codex, name, text)
    with pytest.raises((InputError, AuthError)) as info:
        generate("a fox", output=out, profile="work")
    error = info.value
    assert (error.kind, error.reason) == (kind, reason) and words in error.message, error
    assert fake_codex.exec_calls == []


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["../x", "a/b", "", "..", " work", "x" * 65])
def test_a_profile_name_must_be_plain(fake_codex: FakeCodex, name: str) -> None:
    with pytest.raises(InputError) as info:
        Client(profile=name)
    assert info.value.reason == "invalid_profile" and fake_codex.calls == []


def test_a_changed_profile_file_is_read_again(fake_codex: FakeCodex, out: Path) -> None:
    profile = write(fake_codex, "work.config.toml", 'model = "m-work"\n')
    with Client(profile="work", timeout=30) as client:
        client.generate(ImageRequest("a fox", output=out))
        profile.write_text("[features]\nimage_generation = false\n", "utf-8")
        with pytest.raises(AuthError) as info:
            client.generate(ImageRequest("a hen", output=out))
    assert info.value.reason == "image_generation_disabled"
    assert len(fake_codex.exec_calls) == 1


def test_a_keyring_store_set_only_by_the_profile_is_where_codex_is_asked(
    fake_codex: FakeCodex, out: Path
) -> None:
    """Regression guard (review): `login status` takes no --profile, so it looked in the file
    store that config.toml implies and a keyring login of the profile read as signed out."""
    (fake_codex.codex_home / "auth.json").unlink()
    write(fake_codex, "config.toml", "")
    write(fake_codex, "work.config.toml", 'cli_auth_credentials_store = "keyring"\n')
    fake_codex.configure("success", login="chatgpt")  # what the keyring holds
    assert generate("a fox", output=out, profile="work").path.is_file()
    (status,) = [c.argv for c in fake_codex.calls if c.argv[-2:] == ["login", "status"]]
    assert status == ["-c", 'cli_auth_credentials_store="keyring"', "login", "status"]
    with pytest.raises(AuthError) as info:
        generate("a fox", output=out)  # without the profile: the file store, no auth.json
    assert info.value.reason == "not_signed_in"


def test_doctor_checks_the_profile(fake_codex: FakeCodex) -> None:
    assert not doctor(profile="work").ok  # no work.config.toml
    write(fake_codex, "work.config.toml", "[features]\nimage_generation = false\n")
    report = doctor(profile="work")
    assert [p.reason for p in report.problems] == ["image_generation_disabled"]
    assert report.image_generation is False and report.login is not None
    assert report.login.profile == "work"
    write(fake_codex, "work.config.toml", 'model = "m-work"\n')
    assert doctor(profile="work").ok


@pytest.mark.parametrize("command", ["generate", "batch", "doctor"])
def test_the_cli_takes_profile_on_every_command(
    fake_codex: FakeCodex, out: Path, tmp_path: Path, command: str
) -> None:
    requests = tmp_path / "requests.txt"
    requests.write_text("a fox\n", "utf-8")
    argv = {
        "generate": ["generate", "a fox", "-o", str(out), "--json"],
        "batch": ["batch", str(requests), "--out-dir", str(out), "--json"],
        "doctor": ["doctor", "--json"],
    }[command]
    run = [sys.executable, "-m", "codex_cli_image", *argv, "--profile", "work"]
    missing = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "profile_not_found" in missing.stdout + missing.stderr
    write(fake_codex, "work.config.toml", 'model = "m-work"\n')
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    if command != "doctor":
        assert fake_codex.exec_calls[-1].raw["model"] == "m-work"
    else:
        assert json.loads(done.stdout)["login"]["profile"] == "work"

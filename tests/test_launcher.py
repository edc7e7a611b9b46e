from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from codex_cli_image import LaunchError, _facts, _proc, launcher, locate, probe_version
from codex_cli_image.launcher import CodexVersion, _Platform, manifest_version, parse_version
from codex_cli_image.testing import FakeCodex

import npm_layouts as npm


@pytest.fixture
def native(tmp_path: Path) -> FakeCodex:
    """A fake codex standing in for the native binary inside npm layouts."""
    return FakeCodex(tmp_path / "fake", codex_home=tmp_path / "codex-home")


def env_for(home: Path, path: str = "/nonexistent", **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": path, **extra}


# --- npm shim -> native binary ---------------------------------------------------------------


def test_local_hoisted_layout_swaps_shim_for_native(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    link = npm.local_hoisted(tmp_path / "proj", native.path)
    codex = locate(env=env_for(isolated_home, path=str(link.parent)))
    assert codex.source == "PATH"
    assert codex.found == link
    assert not codex.via_shim
    assert codex.path.name == "codex"
    assert npm.PLATFORM_PKG in codex.path.parts and "vendor" in codex.path.parts
    assert codex.shim == (tmp_path / "proj/node_modules/@openai/codex/bin/codex.js").resolve()
    assert codex.env["CODEX_MANAGED_BY_NPM"] == "1"
    assert codex.env["CODEX_MANAGED_PACKAGE_ROOT"] == str(codex.package_root)
    assert codex.package_root == (tmp_path / "proj/node_modules/@openai/codex").resolve()


def test_global_nested_layout_found_in_well_known_prefix_with_empty_path(
    native: FakeCodex, isolated_home: Path
) -> None:
    npm.global_nested(isolated_home / ".npm-global", native.path)
    codex = locate(env=env_for(isolated_home))
    assert codex.source == "well-known"
    assert codex.found == isolated_home / ".npm-global/bin/codex"
    assert not codex.via_shim
    assert "node_modules/@openai/codex/node_modules/@openai" in codex.path.as_posix()
    # It really starts with PATH=/nonexistent: the native binary needs no node.
    assert probe_version(codex) == CodexVersion(0, 169, 0)


def test_old_vendor_layout(tmp_path: Path, native: FakeCodex, isolated_home: Path) -> None:
    link = npm.old_layout(tmp_path / "proj", native.path)
    codex = locate(link, env=env_for(isolated_home))
    assert codex.source == "explicit"
    assert codex.path.as_posix().endswith(f"vendor/{npm.TRIPLE}/codex/codex")
    assert probe_version(codex).release == (0, 169, 0)


def test_manifest_entrypoint_is_honoured(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    link = npm.local_hoisted(tmp_path / "proj", native.path, manifest_entry="bin/codex-v2")
    codex = locate(link, env=env_for(isolated_home))
    assert codex.path.name == "codex-v2"


def test_manifest_escaping_its_folder_is_ignored(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    link = npm.local_hoisted(tmp_path / "proj", native.path)
    vendor = tmp_path / "proj/node_modules/@openai" / npm.PLATFORM_PKG / "vendor" / npm.TRIPLE
    (vendor / "codex-package.json").write_text('{"entrypoint": "../../../../../../bin/sh"}')
    codex = locate(link, env=env_for(isolated_home))
    assert codex.path == vendor / "bin" / "codex"


def test_pnpm_wrapper_script_is_resolved(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    wrapper = npm.pnpm_layout(tmp_path / "proj", native.path)
    codex = locate(wrapper, env=env_for(isolated_home))
    assert not codex.via_shim
    assert codex.shim is not None and codex.shim.name == "codex.js"
    assert codex.env["CODEX_MANAGED_BY_PNPM"] == "1"
    assert probe_version(codex).release == (0, 169, 0)


def test_native_binary_gets_the_managed_env(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    link = npm.local_hoisted(tmp_path / "proj", native.path)
    env = env_for(isolated_home, CODEX_HOME=str(native.codex_home), CODEX_MANAGED_BY_BUN="1")
    codex = locate(link, env=env)
    subprocess.run(
        codex.command("exec", "--skip-git-repo-check", "-"),
        input=b"hi",
        env=dict(codex.env),
        check=True,
        capture_output=True,
    )
    seen = native.exec_calls[0].env
    assert seen["CODEX_MANAGED_BY_NPM"] == "1"
    assert "CODEX_MANAGED_BY_BUN" not in seen
    assert seen["CODEX_MANAGED_PACKAGE_ROOT"] == str(codex.package_root)
    assert seen["PATH"].split(":")[0] == "/nonexistent"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_shim_without_native_binary_runs_through_absolute_node(
    tmp_path: Path, isolated_home: Path
) -> None:
    link = npm.local_hoisted(tmp_path / "proj", native=None)
    codex = locate(link, env=env_for(isolated_home))
    assert codex.via_shim
    assert Path(codex.argv[0]).is_absolute() and Path(codex.argv[0]).name == "node"
    assert codex.argv[1] == str(codex.shim)


@pytest.mark.bad_input
def test_shim_without_native_binary_or_node_is_refused(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_search = launcher._executable_in
    monkeypatch.setattr(
        launcher,
        "_executable_in",
        lambda directory, plat, stem="codex": (
            None if stem == "node" else real_search(directory, plat, stem)
        ),
    )
    link = npm.local_hoisted(tmp_path / "proj", native=None)
    with pytest.raises(LaunchError) as info:
        locate(link, env=env_for(isolated_home))
    assert info.value.reason == "shim_unresolved"
    assert "npm install -g @openai/codex" in info.value.hint


# --- search order ----------------------------------------------------------------------------


def test_explicit_beats_codex_bin_beats_path(tmp_path: Path, isolated_home: Path) -> None:
    fakes = [FakeCodex(tmp_path / name, login=None) for name in ("a", "b", "c")]
    env = env_for(isolated_home, path=str(fakes[2].bin_dir), CODEX_BIN=str(fakes[1].path))
    assert locate(fakes[0].path, env=env).found == fakes[0].path
    assert locate(env=env).found == fakes[1].path
    assert locate(env=env).source == "CODEX_BIN"
    del env["CODEX_BIN"]
    assert locate(env=env).found == fakes[2].path


def test_explicit_command_name_is_looked_up_on_path(tmp_path: Path, isolated_home: Path) -> None:
    fake = FakeCodex(tmp_path / "f", login=None)
    codex = locate("codex", env=env_for(isolated_home, path=str(fake.bin_dir)))
    assert codex.found == fake.path and codex.source == "explicit"


def test_nvm_versions_newest_first(tmp_path: Path, isolated_home: Path) -> None:
    fake = FakeCodex(tmp_path / "f", login=None)
    for version in ("v18.20.1", "v22.11.0", "v20.9.0"):
        bin_dir = isolated_home / ".nvm/versions/node" / version / "bin"
        bin_dir.mkdir(parents=True)
        shutil.copy(fake.path, bin_dir / "codex")
    codex = locate(env=env_for(isolated_home))
    assert "v22.11.0" in codex.found.parts
    assert codex.source == "well-known"


def test_well_known_dirs_cover_the_usual_installs(isolated_home: Path) -> None:
    plat = _Platform("darwin", "arm64")
    dirs = [d.as_posix() for d in launcher._well_known_dirs({}, isolated_home, plat)]
    home = isolated_home.as_posix()
    for expected in (
        "/opt/homebrew/bin",
        "/usr/local/bin",
        f"{home}/.local/bin",
        f"{home}/.npm-global/bin",
        f"{home}/.volta/bin",
        f"{home}/.bun/bin",
        f"{home}/.asdf/shims",
        f"{home}/.local/share/mise/shims",
    ):
        assert expected in dirs
    bundles = launcher._app_bundles(isolated_home, plat)
    assert Path("/Applications/Codex.app/Contents/Resources/codex") in bundles


def test_not_found_lists_where_it_looked(isolated_home: Path) -> None:
    with pytest.raises(LaunchError) as info:
        locate(env=env_for(isolated_home))
    error = info.value
    assert error.kind == "launch" and error.reason == "codex_not_found"
    assert "~/.npm-global/bin" in error.message and "~/.local/bin" in error.message
    assert "npm install -g @openai/codex" in error.hint and "CODEX_BIN" in error.hint


@pytest.mark.bad_input
@pytest.mark.parametrize("label", ["explicit", "CODEX_BIN"])
def test_given_path_missing_is_named(tmp_path: Path, isolated_home: Path, label: str) -> None:
    missing = tmp_path / "nope" / "codex"
    env = env_for(isolated_home)
    with pytest.raises(LaunchError) as info:
        if label == "explicit":
            locate(missing, env=env)
        else:
            locate(env={**env, "CODEX_BIN": str(missing)})
    assert info.value.reason == "codex_path_missing"
    assert str(missing) in info.value.message
    assert ("--codex" if label == "explicit" else "CODEX_BIN") in info.value.message


@pytest.mark.bad_input
def test_given_path_not_executable(tmp_path: Path, isolated_home: Path) -> None:
    plain = tmp_path / "codex"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    for target in (plain, tmp_path):
        with pytest.raises(LaunchError) as info:
            locate(target, env=env_for(isolated_home))
        assert info.value.reason == "codex_not_executable"
        assert str(target) in info.value.message


# --- environment -----------------------------------------------------------------------------


def test_credentials_are_removed_and_reported(tmp_path: Path, isolated_home: Path) -> None:
    fake = FakeCodex(tmp_path / "f", login=None)
    env = env_for(
        isolated_home,
        CODEX_API_KEY="sk-should-not-pass",
        OPENAI_API_KEY="sk-nor-this",
        CODEX_ACCESS_TOKEN="tok",
        KEEP_ME="1",
    )
    codex = locate(fake.path, env=env)
    assert set(codex.removed_env) == {"CODEX_API_KEY", "OPENAI_API_KEY", "CODEX_ACCESS_TOKEN"}
    assert not {"CODEX_API_KEY", "OPENAI_API_KEY", "CODEX_ACCESS_TOKEN"} & set(codex.env)
    assert codex.env["KEEP_ME"] == "1"
    assert "sk-should-not-pass" not in repr(codex)
    assert env["CODEX_API_KEY"] == "sk-should-not-pass"  # the caller's mapping is untouched


def test_path_is_repaired_caller_first_deduplicated(tmp_path: Path, isolated_home: Path) -> None:
    fake = FakeCodex(tmp_path / "f", login=None)
    local_bin = isolated_home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    caller = f"/first::/usr/bin:{local_bin}:/first"
    codex = locate(fake.path, env=env_for(isolated_home, path=caller))
    entries = codex.env["PATH"].split(":")
    assert entries[:3] == ["/first", "/usr/bin", str(local_bin)]
    assert "" not in entries  # an empty entry would mean "the current directory"
    assert len(entries) == len(set(entries))
    assert "/bin" in entries and str(fake.bin_dir) in entries


def test_windows_path_key_and_shims(tmp_path: Path, isolated_home: Path) -> None:
    win = _Platform("win32", "x64")
    env = {"Path": "C:\\a", "PATH": "C:\\b", "codex_api_key": "x", "USERPROFILE": str(tmp_path)}
    child, removed = launcher._child_env(env, isolated_home, win, [])
    assert [k for k in child if k.upper() == "PATH"] == ["Path"]
    assert child["Path"].split(";")[0] == "C:\\a"
    assert removed == ("CODEX_API_KEY",) and "codex_api_key" not in child
    assert win.triple == "x86_64-pc-windows-msvc" and win.exe == "codex.exe"


def test_windows_cmd_shim_resolves_to_native_or_is_refused(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    prefix = tmp_path / "npm"
    npm.global_nested(prefix, native.path)
    (prefix / "bin" / "codex").unlink()
    shutil.move(prefix / "lib" / "node_modules", prefix / "node_modules")
    cmd = prefix / "codex.cmd"
    cmd.write_text(
        '@ECHO off\r\nSET "_prog=node"\r\n'
        '"%_prog%"  "%dp0%\\node_modules\\@openai\\codex\\bin\\codex.js" %*\r\n'
    )
    assert (
        launcher._npm_shim_of(cmd, cmd)
        == (prefix / "node_modules/@openai/codex/bin/codex.js").resolve()
    )
    other = tmp_path / "other.cmd"
    other.write_text("@ECHO off\r\nsomething-else.exe %*\r\n")
    with pytest.raises(LaunchError) as info:
        launcher._resolve(other, "PATH", {}, isolated_home, _Platform("win32", "x64"))
    assert info.value.reason == "shim_unresolved"


@pytest.mark.parametrize(
    ("system", "machine", "triple", "package"),
    [
        ("linux", "x64", "x86_64-unknown-linux-musl", "codex-linux-x64"),
        ("linux", "arm64", "aarch64-unknown-linux-musl", "codex-linux-arm64"),
        ("darwin", "x64", "x86_64-apple-darwin", "codex-darwin-x64"),
        ("darwin", "arm64", "aarch64-apple-darwin", "codex-darwin-arm64"),
        ("win32", "x64", "x86_64-pc-windows-msvc", "codex-win32-x64"),
        ("win32", "arm64", "aarch64-pc-windows-msvc", "codex-win32-arm64"),
    ],
)
def test_platform_targets(system: str, machine: str, triple: str, package: str) -> None:
    plat = _Platform(system, machine)  # type: ignore[arg-type]
    assert (plat.triple, plat.platform_package) == (triple, package)


# --- version ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("codex-cli 0.169.0\n", CodexVersion(0, 169, 0)),
        ("codex-cli 0.125.0", CodexVersion(0, 125, 0)),
        ("codex-cli 1.2.3-alpha.4", CodexVersion(1, 2, 3, "alpha.4")),
        ("no version here", None),
    ],
)
def test_parse_version(text: str, expected: CodexVersion | None) -> None:
    assert parse_version(text) == expected


def test_version_compares_by_release() -> None:
    version = CodexVersion(0, 149, 0)
    assert version.release >= (0, 149, 0) and str(version) == "0.149.0"
    assert str(CodexVersion(1, 0, 0, "beta")) == "1.0.0-beta"


def test_probe_runs_version_with_the_child_env(fp, tmp_path: Path, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeCodex(tmp_path / "f", login=None)
    codex = locate(fake.path, env=env_for(isolated_home))
    fp.register([str(fake.path), "--version"], stdout="codex-cli 0.170.2\n")
    assert probe_version(codex) == CodexVersion(0, 170, 2)
    assert fp.call_count([str(fake.path), "--version"]) == 1


def test_probe_failure_shows_exit_code_and_stderr(fp, tmp_path: Path, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeCodex(tmp_path / "f", login=None)
    codex = locate(fake.path, env=env_for(isolated_home))
    fp.register([str(fake.path), "--version"], stderr="boom: libc too old\n", returncode=3)
    with pytest.raises(LaunchError) as info:
        probe_version(codex)
    assert info.value.reason == "version_probe_failed"
    assert info.value.codex_exit_code == 3 and info.value.exit_code == 6  # codex's, ours
    assert "boom: libc too old" in info.value.message
    assert info.value.stderr_tail == "boom: libc too old"


def test_probe_unparsable(fp, tmp_path: Path, isolated_home: Path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeCodex(tmp_path / "f", login=None)
    codex = locate(fake.path, env=env_for(isolated_home))
    fp.register([str(fake.path), "--version"], stdout="hello\n")
    with pytest.raises(LaunchError) as info:
        probe_version(codex)
    assert info.value.reason == "version_unparsable"


def test_probe_timeout_kills_the_whole_tree(tmp_path: Path, isolated_home: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = tmp_path / "codex"
    # A "codex" that starts a grandchild and never answers.
    script.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {pid_file}\nwait\n")
    script.chmod(0o755)
    codex = locate(script, env=env_for(isolated_home, path="/usr/bin:/bin"))
    started = time.monotonic()
    with pytest.raises(LaunchError) as info:
        probe_version(codex, timeout_s=0.5)
    assert info.value.reason == "version_probe_timeout"
    assert time.monotonic() - started < 10  # not the 30 s the script would take
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"


def test_probe_of_a_non_executable_format(tmp_path: Path, isolated_home: Path) -> None:
    bogus = tmp_path / "codex"
    bogus.write_bytes(b"\x00\x01\x02 not a program")
    bogus.chmod(0o755)
    codex = locate(bogus, env=env_for(isolated_home))
    with pytest.raises(LaunchError) as info:
        probe_version(codex)
    assert info.value.reason == "codex_not_executable"
    assert os.fspath(bogus) in info.value.message


# --- regression guards from review ---------------------------------------------------------


def test_relative_path_entries_are_never_searched_or_passed_on(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: PATH=tools:... gave a relative argv that broke under another cwd."""
    fake = FakeCodex(tmp_path / "f", login=None)
    monkeypatch.chdir(fake.dir)
    with pytest.raises(LaunchError):
        locate(env=env_for(isolated_home, path="bin:.:./bin"))
    codex = locate(env=env_for(isolated_home, path=f"bin:{fake.bin_dir}"))
    assert codex.argv == (str(fake.path),)
    assert "bin" not in codex.env["PATH"].split(":")


def test_unreadable_places_do_not_raise_foreign_errors(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: PermissionError from a mode-000 directory escaped locate()."""
    real_is_file, real_is_dir = Path.is_file, Path.is_dir
    local = str(isolated_home / ".local")

    def denied(real):  # type: ignore[no-untyped-def]
        def check(self: Path) -> bool:
            if str(self).startswith(local):
                raise PermissionError(13, "Permission denied", str(self))
            return bool(real(self))

        return check

    monkeypatch.setattr(Path, "is_file", denied(real_is_file))
    monkeypatch.setattr(Path, "is_dir", denied(real_is_dir))
    fake = FakeCodex(tmp_path / "f", login=None)
    with pytest.raises(LaunchError) as info:
        locate(env=env_for(isolated_home))
    assert info.value.reason == "codex_not_found"
    assert locate(fake.path, env=env_for(isolated_home)).found == fake.path
    with pytest.raises(LaunchError) as info:
        locate(env=env_for(isolated_home, CODEX_BIN=f"{local}/bin/codex"))
    assert info.value.reason == "codex_path_missing"


@pytest.mark.bad_input
def test_unknown_user_in_codex_bin(isolated_home: Path) -> None:
    with pytest.raises(LaunchError) as info:
        locate(env=env_for(isolated_home, CODEX_BIN="~nosuchuser0xyz/codex"))
    assert info.value.reason == "codex_path_missing"


def test_windows_variable_names_are_case_insensitive(isolated_home: Path) -> None:
    win = _Platform("win32", "x64")
    env = {"PROGRAMFILES": "D:\\PF", "appdata": "D:\\Roaming", "localappdata": "D:\\Local"}
    dirs = [str(d) for d in launcher._well_known_dirs(env, isolated_home, win)]
    assert str(Path("D:\\PF") / "nodejs") in dirs
    assert str(Path("D:\\Roaming") / "npm") in dirs
    assert launcher._split_path("C:\\a;relative;;D:\\b", win) == ["C:\\a", "D:\\b"]


def test_probe_interrupted_kills_the_child(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression guard: Ctrl-C during the version probe left codex running."""
    pid_file = tmp_path / "pid"
    script = tmp_path / "codex"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    script.chmod(0o755)
    codex = locate(script, env=env_for(isolated_home, path="/usr/bin:/bin"))
    real = subprocess.Popen.communicate

    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("timeout") == 5:
            while not pid_file.exists() or not pid_file.read_text().strip():
                time.sleep(0.01)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        probe_version(codex, timeout_s=5)
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_probe_told_to_stop_ends_the_child_at_once(tmp_path: Path, isolated_home: Path) -> None:
    """Regression guard: Ctrl-C during a slow version probe waited out the probe's own limit."""
    pid_file = tmp_path / "pid"
    script = tmp_path / "codex"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    script.chmod(0o755)
    codex = locate(script, env=env_for(isolated_home, path="/usr/bin:/bin"))
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(_proc.Stopped):
        probe_version(codex, timeout_s=20, stop=stop)
    assert time.monotonic() - started < 10  # stopped at 0.5 s, not at the 20 s deadline
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


@pytest.mark.skipif(shutil.which("setsid") is None, reason="setsid is not installed")
def test_probe_deadline_holds_when_an_escaped_process_keeps_the_pipe(
    tmp_path: Path, isolated_home: Path
) -> None:
    """Regression guard: reaping after the kill waited 25 s for a detached grandchild."""
    pid_file = tmp_path / "escaped.pid"
    script = tmp_path / "codex"
    script.write_text(f"#!/bin/sh\nsetsid sh -c 'echo $$ > {pid_file}; exec sleep 20' &\nwait\n")
    script.chmod(0o755)
    codex = locate(script, env=env_for(isolated_home, path="/usr/bin:/bin"))
    started = time.monotonic()
    try:
        with pytest.raises(LaunchError):
            probe_version(codex, timeout_s=0.5)
        assert time.monotonic() - started < 10  # not the 20 s the escaped process lives
    finally:
        while not pid_file.exists():
            time.sleep(0.01)
        os.kill(int(pid_file.read_text()), 9)


def test_codex_is_hashable(tmp_path: Path, isolated_home: Path) -> None:
    fake = FakeCodex(tmp_path / "f", login=None)
    codex = locate(fake.path, env=env_for(isolated_home))
    assert codex in {codex}


def test_the_version_is_read_from_the_package_manifest(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    """No process for the version when the npm package says it (layout 1, since 0.142): the
    manifest's 0.169.0, not what the binary would answer."""
    native.configure(version="0.170.0")
    hoisted = locate(npm.local_hoisted(tmp_path / "a", native.path), env=env_for(isolated_home))
    assert manifest_version(hoisted) == CodexVersion(0, 169, 0)
    renamed = npm.local_hoisted(tmp_path / "b", native.path, manifest_entry="bin/codex-v2")
    assert manifest_version(locate(renamed, env=env_for(isolated_home))) == CodexVersion(0, 169, 0)
    old = locate(npm.old_layout(tmp_path / "c", native.path), env=env_for(isolated_home))
    assert manifest_version(old) is None  # before 0.142: no manifest, so codex is asked
    plain = locate(native.path, env=env_for(isolated_home))
    assert manifest_version(plain) is None
    assert native.calls == []


def test_a_client_on_an_npm_install_spawns_no_version_probe(
    tmp_path: Path, native: FakeCodex, isolated_home: Path
) -> None:
    from codex_cli_image import Client, ImageRequest

    link = npm.local_hoisted(tmp_path / "proj", native.path)
    out = tmp_path / "out"
    out.mkdir()
    env = {**env_for(isolated_home), "CODEX_HOME": str(native.codex_home)}
    with Client(codex=link, env=env, timeout=30) as client:
        result = client.generate(ImageRequest("a fox", output=out))
    assert result.codex_version == "0.169.0"
    assert ["--version"] not in [call.argv for call in native.calls]
    assert [call.argv for call in native.calls][0][-2:] == ["features", "list"]  # what to skip


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/home/u"}, "/home/u/.cache/codex-cli-image"),
        ("linux", {"HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"}, "/xdg/codex-cli-image"),
        ("linux", {"HOME": "/home/u", "XDG_CACHE_HOME": "rel"}, "/home/u/.cache/codex-cli-image"),
        ("darwin", {"HOME": "/Users/u"}, "/Users/u/Library/Caches/codex-cli-image"),
        (
            "win32",
            {"LOCALAPPDATA": "C:/Users/u/AppData/Local"},
            "C:/Users/u/AppData/Local/codex-cli-image/Cache",
        ),  # fmt: skip
        ("linux", {"HOME": "/home/u", "CODEX_IMAGE_CACHE_DIR": "/mine"}, "/mine"),
        ("linux", {"CODEX_IMAGE_CACHE_DIR": "rel"}, f"{Path.cwd().as_posix()}/rel"),
        ("linux", {}, None),
        ("win32", {}, None),
    ],
)
def test_where_facts_about_codex_binaries_are_kept(
    platform: str, env: dict[str, str], expected: str | None
) -> None:
    found = _facts.cache_dir(env, platform)
    assert (None if found is None else found.as_posix()) == expected


def test_kept_facts_belong_to_one_binary(tmp_path: Path) -> None:
    binary = tmp_path / "codex"
    binary.write_bytes(b"one")
    stamps = (_facts.stamp(binary),)
    _facts.save(tmp_path / "cache", stamps, _facts.Facts("0.169.0", ("plugins", "apps")))
    assert _facts.load(tmp_path / "cache", stamps) == _facts.Facts("0.169.0", ("plugins", "apps"))
    binary.write_bytes(b"two, a reinstall")  # new size and times: another binary
    assert _facts.load(tmp_path / "cache", (_facts.stamp(binary),)) == _facts.Facts()
    assert _facts.load(tmp_path / "cache", (None,)) == _facts.Facts()  # an unreadable file
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # written whole, no temporary left

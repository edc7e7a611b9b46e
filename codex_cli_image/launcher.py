"""Find the codex executable to run, and the environment to run it with.

Search order: an explicit path, ``CODEX_BIN``, the caller's ``PATH``, well-known install dirs
(Homebrew, npm prefixes, Volta, Bun, pnpm, asdf, mise, nvm and fnm node versions newest first,
``~/.local/bin``), then the macOS app bundle.

An npm shim (``bin/codex.js``, run by ``#!/usr/bin/env node``) is swapped for the native binary of
its platform package, so codex starts without node, in a few milliseconds, with no node parent
process. Only when no native binary can be found is the shim run, as ``<absolute node> codex.js``.

The child's environment keeps everything the caller had except the variables that would switch
codex away from the ChatGPT login (``CODEX_API_KEY``, ``CODEX_ACCESS_TOKEN``, ``OPENAI_API_KEY``),
and gets a repaired ``PATH``: a daemon started by launchd or a desktop app often has only
``/usr/bin:/bin``.
"""

from __future__ import annotations

import json
import logging
import ntpath
import os
import platform
import posixpath
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import _proc
from .errors import LaunchError

__all__ = [
    "SCRUBBED_ENV",
    "Codex",
    "CodexVersion",
    "Source",
    "locate",
    "parse_version",
    "probe_version",
]

log = logging.getLogger(__name__)

Source = Literal["explicit", "CODEX_BIN", "PATH", "well-known", "app-bundle"]

# Each of these makes codex bill an API account or bypass the ChatGPT login, where no image tool
# is offered: codex must never see them.
SCRUBBED_ENV = ("CODEX_API_KEY", "CODEX_ACCESS_TOKEN", "OPENAI_API_KEY")

VERSION_PROBE_TIMEOUT_S = 10.0

_INSTALL_HINT = "Install it with `npm install -g @openai/codex`, or set CODEX_BIN to its path."
_REINSTALL_HINT = "Reinstall it with `npm install -g @openai/codex@latest`, or set CODEX_BIN."
_MANAGED_BY = (
    "CODEX_MANAGED_BY_NPM",
    "CODEX_MANAGED_BY_BUN",
    "CODEX_MANAGED_BY_PNPM",
    "CODEX_MANAGED_BY_VITE_PLUS",
)
# A wrapper script (npm's cmd/sh shims, pnpm's shims) names the JS entry point relative to itself.
_SHIM_TARGET = re.compile(r"""["']?([^"'\s]*@openai[\\/]codex[\\/]bin[\\/]codex\.js)""")
_SHIM_DIR_VARS = re.compile(r"^(\$\{?basedir\}?|%~?dp0%?)[\\/]*")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")
_BINARY_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


# The Codex CLI releases this release of codex-cli-image is tested with end to end (newest
# first; codex_cli_image.testing.realcodex installs exactly these). doctor warns about a newer one.
TESTED_VERSIONS: tuple[str, ...] = ("0.171.0", "0.169.0", "0.149.0", "0.142.0", "0.125.0")


@dataclass(frozen=True, slots=True)
class CodexVersion:
    """A parsed ``codex --version``; compare with :attr:`release`, e.g. ``>= (0, 149, 0)``."""

    major: int
    minor: int
    patch: int
    prerelease: str | None = None

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core


@dataclass(frozen=True, slots=True)
class Codex:
    """A launchable codex: the argv prefix, the environment, and how it was found."""

    argv: tuple[str, ...]
    """What to execute before codex's own arguments: the native binary, or node and codex.js."""
    found: Path
    """The file the search found (an npm shim when it was swapped)."""
    source: Source
    shim: Path | None
    """The npm shim (``codex.js``) that was resolved, if one was found."""
    package_root: Path | None
    """The ``@openai/codex`` package directory, for npm installs."""
    env: Mapping[str, str] = field(repr=False, compare=False)
    """The complete environment for the child (kept out of repr: it may hold other secrets)."""
    removed_env: tuple[str, ...] = ()
    """Which of :data:`SCRUBBED_ENV` the caller had set (names only)."""

    @property
    def path(self) -> Path:
        """The program that is executed."""
        return Path(self.argv[0])

    @property
    def via_shim(self) -> bool:
        """True when codex runs through node and the JS shim (no native binary was found)."""
        return len(self.argv) > 1

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]


@dataclass(frozen=True, slots=True)
class _Platform:
    system: Literal["linux", "darwin", "win32"]
    machine: Literal["x64", "arm64"] | None

    @property
    def windows(self) -> bool:
        return self.system == "win32"

    @property
    def triple(self) -> str | None:
        arch = {"x64": "x86_64", "arm64": "aarch64"}.get(self.machine or "")
        if arch is None:
            return None
        suffix = {
            "linux": "unknown-linux-musl",
            "darwin": "apple-darwin",
            "win32": "pc-windows-msvc",
        }[self.system]
        return f"{arch}-{suffix}"

    @property
    def platform_package(self) -> str | None:
        return f"codex-{self.system}-{self.machine}" if self.machine else None

    @property
    def exe(self) -> str:
        return "codex.exe" if self.windows else "codex"


def _current_platform() -> _Platform:
    system: Literal["linux", "darwin", "win32"]
    if sys.platform == "win32":
        system = "win32"
    elif sys.platform == "darwin":
        system = "darwin"
    else:
        system = "linux"
    machine = platform.machine().lower()
    arch: Literal["x64", "arm64"] | None
    if machine in ("x86_64", "amd64"):
        arch = "x64"
    elif machine in ("arm64", "aarch64"):
        arch = "arm64"
    else:
        arch = None
    return _Platform(system, arch)


class _FoldedEnv(Mapping[str, str]):
    """Environment lookups as Windows does them: names are case-insensitive."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = {key.upper(): value for key, value in env.items()}

    def __getitem__(self, key: str) -> str:
        return self._env[key.upper()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _lookup(env: Mapping[str, str], plat: _Platform) -> Mapping[str, str]:
    if plat.windows and not isinstance(env, _FoldedEnv):
        return _FoldedEnv(env)
    return env


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. EACCES on a parent directory
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


# --- search ---------------------------------------------------------------------------------


def locate(
    codex: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Codex:
    """Find codex and build the environment to run it with.

    ``codex``: an explicit path (or a command name looked up on ``PATH``); otherwise ``CODEX_BIN``,
    ``PATH`` and the well-known install places are searched. ``env``: the caller's environment
    (default ``os.environ``); it is not modified. Raises :class:`LaunchError`.
    """
    plat = _current_platform()
    base = dict(os.environ if env is None else env)
    try:
        lookup = _lookup(base, plat)
        home = _home(lookup, plat)
        found, source = _find(codex, lookup, home, plat)
        return _resolve(found, source, base, home, plat)
    except (OSError, RuntimeError) as exc:
        # The one boundary for surprises from the file system (permissions, odd paths).
        raise LaunchError(
            f"Searching for codex failed: {exc}.",
            reason="codex_not_found",
            hint=_INSTALL_HINT,
        ) from exc


def _find(
    codex: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    home: Path,
    plat: _Platform,
) -> tuple[Path, Source]:
    if codex is not None and os.fspath(codex) != "":
        return _check_given(os.fspath(codex), "--codex", env, plat), "explicit"
    codex_bin = env.get("CODEX_BIN", "")
    if codex_bin:
        return _check_given(codex_bin, "CODEX_BIN", env, plat), "CODEX_BIN"
    for entry in _split_path(_get_path(env, plat), plat):
        hit = _executable_in(Path(entry), plat)
        if hit is not None:
            return hit, "PATH"
    searched = _well_known_dirs(env, home, plat)
    for directory in searched:
        hit = _executable_in(directory, plat)
        if hit is not None:
            return hit, "well-known"
    bundles = _app_bundles(home, plat)
    for bundle in bundles:
        if _is_executable(bundle, plat):
            return bundle, "app-bundle"
    places = ", ".join(_tilde(p, home) for p in [*searched, *bundles]) or "nowhere else"
    raise LaunchError(
        f"The codex executable was not found on PATH or in: {places}.",
        reason="codex_not_found",
        hint=_INSTALL_HINT,
    )


def _check_given(value: str, label: str, env: Mapping[str, str], plat: _Platform) -> Path:
    separators = ("/", "\\") if plat.windows else ("/",)
    if not any(sep in value for sep in separators):
        for entry in _split_path(_get_path(env, plat), plat):
            hit = _executable_in(Path(entry), plat, value)
            if hit is not None:
                return hit
    try:
        path = Path(value).expanduser().absolute()
    except RuntimeError:  # "~nosuchuser/..."
        path = Path(value).absolute()
    if not _exists(path):
        raise LaunchError(
            f"{label} points to {path}, which does not exist.",
            reason="codex_path_missing",
            hint=f"Fix {label} to name the codex executable, or unset it to search PATH.",
        )
    if not _is_executable(path, plat):
        what = "a directory" if _is_dir(path) else "not an executable file"
        raise LaunchError(
            f"{label} points to {path}, which is {what}.",
            reason="codex_not_executable",
            hint=f"Point {label} at the codex executable itself (check its permissions).",
        )
    return path


def _executable_in(directory: Path, plat: _Platform, stem: str = "codex") -> Path | None:
    """``stem`` in ``directory``; on Windows the native .exe before npm's .cmd and sh shims."""
    if plat.windows and not Path(stem).suffix:
        names: tuple[str, ...] = (f"{stem}.exe", f"{stem}.cmd", f"{stem}.bat", stem)
    else:
        names = (stem,)
    for name in names:
        candidate = directory / name
        if _is_executable(candidate, plat):
            return candidate
    return None


def _is_executable(path: Path, plat: _Platform) -> bool:
    return _is_file(path) and (plat.windows or os.access(path, os.X_OK))


def _well_known_dirs(env: Mapping[str, str], home: Path, plat: _Platform) -> list[Path]:
    """Install dirs where codex (or node) commonly lives, most specific first."""
    env = _lookup(env, plat)
    dirs: list[Path] = []
    local = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    prefix = env.get("NPM_CONFIG_PREFIX") or env.get("npm_config_prefix")
    if plat.windows:
        appdata = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
        if prefix:
            dirs.append(Path(prefix))
        dirs += [
            appdata / "npm",
            Path(env.get("VOLTA_HOME") or local / "Volta") / "bin",
            Path(env.get("BUN_INSTALL") or home / ".bun") / "bin",
            Path(env.get("PNPM_HOME") or local / "pnpm"),
            home / "scoop" / "shims",
        ]
        if env.get("NVM_SYMLINK"):
            dirs.append(Path(env["NVM_SYMLINK"]))
        dirs += _node_version_dirs(env, home, plat)
        dirs.append(Path(env.get("ProgramFiles") or "C:\\Program Files") / "nodejs")
        return _dedupe(dirs, plat)
    xdg_data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    if prefix:
        dirs.append(Path(prefix) / "bin")
    dirs += [
        home / ".local" / "bin",
        home / ".npm-global" / "bin",
        Path(env.get("VOLTA_HOME") or home / ".volta") / "bin",
        Path(env.get("BUN_INSTALL") or home / ".bun") / "bin",
        Path(
            env.get("PNPM_HOME")
            or (home / "Library" / "pnpm" if plat.system == "darwin" else xdg_data / "pnpm")
        ),
        Path(env.get("ASDF_DATA_DIR") or home / ".asdf") / "shims",
        Path(env.get("MISE_DATA_DIR") or xdg_data / "mise") / "shims",
        *_node_version_dirs(env, home, plat),
        Path("/opt/homebrew/bin"),
        Path("/usr/local/bin"),
        Path("/home/linuxbrew/.linuxbrew/bin"),
        home / ".linuxbrew" / "bin",
        Path("/usr/bin"),
        Path("/bin"),
    ]
    return _dedupe(dirs, plat)


def _node_version_dirs(env: Mapping[str, str], home: Path, plat: _Platform) -> list[Path]:
    """bin dirs of nvm- and fnm-managed node versions, newest version first."""
    env = _lookup(env, plat)
    found: list[tuple[tuple[int, ...], Path]] = []
    nvm = Path(env.get("NVM_DIR") or home / ".nvm") / "versions" / "node"
    fnm_roots = [Path(env["FNM_DIR"])] if env.get("FNM_DIR") else []
    if plat.windows:
        fnm_roots.append(Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "fnm")
    else:
        xdg_data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
        fnm_roots += [
            xdg_data / "fnm",
            home / "Library" / "Application Support" / "fnm",
            home / ".fnm",
        ]
    sub = "" if plat.windows else "bin"
    for version_dir in _children(nvm):
        found.append((_version_key(version_dir.name), version_dir / sub if sub else version_dir))
    for root in fnm_roots:
        for version_dir in _children(root / "node-versions"):
            install = version_dir / "installation"
            found.append((_version_key(version_dir.name), install / sub if sub else install))
    found.sort(key=lambda item: item[0], reverse=True)
    return [path for _, path in found]


def _children(directory: Path) -> Iterator[Path]:
    try:
        yield from (p for p in directory.iterdir() if _is_dir(p))
    except OSError:
        return


def _version_key(name: str) -> tuple[int, ...]:
    match = _VERSION.search(name)
    return tuple(int(part) for part in match.groups()[:3]) if match else (-1,)


def _app_bundles(home: Path, plat: _Platform) -> list[Path]:
    if plat.system != "darwin":
        return []
    tail = Path("Codex.app") / "Contents" / "Resources" / "codex"
    return [Path("/Applications") / tail, home / "Applications" / tail]


# --- resolution -----------------------------------------------------------------------------


def _resolve(
    found: Path, source: Source, env: dict[str, str], home: Path, plat: _Platform
) -> Codex:
    real = Path(os.path.realpath(found))
    shim = _npm_shim_of(found, real)
    extra_dirs = [found.parent]
    if shim is None:
        if plat.windows and real.suffix.lower() in (".cmd", ".bat", ".ps1"):
            # Running a .cmd with user text goes through cmd.exe's parser (CVE-2024-27980 class).
            raise LaunchError(
                f"{found} is a script shim that does not lead to @openai/codex; "
                "refusing to run it through a shell.",
                reason="shim_unresolved",
                hint="Set CODEX_BIN to the native codex.exe.",
            )
        child_env, removed = _child_env(env, home, plat, extra_dirs)
        return Codex((str(found),), found, source, None, None, child_env, removed)

    package_root = Path(os.path.realpath(shim.parent.parent))
    child_env, removed = _child_env(env, home, plat, extra_dirs)
    _mark_managed(child_env, package_root)
    native = _native_binary(package_root, plat)
    if native is not None:
        return Codex((str(native),), found, source, shim, package_root, child_env, removed)
    # Found on the repaired PATH, so node's own directory is already on the child's PATH.
    node = next(
        (
            str(hit)
            for entry in _split_path(_get_path(child_env, plat), plat)
            if (hit := _executable_in(Path(entry), plat, "node")) is not None
        ),
        None,
    )
    if node is None:
        raise LaunchError(
            f"Found the npm shim {shim}, but neither its native binary "
            f"(@openai/{plat.platform_package}) nor node.",
            reason="shim_unresolved",
            hint=_REINSTALL_HINT,
        )
    log.info("no native codex binary next to %s; running it through %s", shim, node)
    return Codex((node, str(shim)), found, source, shim, package_root, child_env, removed)


def _npm_shim_of(found: Path, real: Path) -> Path | None:
    """The ``@openai/codex/bin/codex.js`` that ``found`` leads to, if it is an npm-style shim."""
    if real.name == "codex.js" and real.parent.name == "bin":
        return real
    try:
        with real.open("rb") as handle:
            head = handle.read(16 * 1024 + 1)
    except OSError:
        return None
    if len(head) > 16 * 1024 or head.startswith(_BINARY_MAGIC):
        return None
    match = _SHIM_TARGET.search(head.decode("utf-8", "replace"))
    if match is None:
        return None
    target = _SHIM_DIR_VARS.sub("", match.group(1)).replace("\\", "/")
    candidate = Path(target) if Path(target).is_absolute() else found.parent / target
    return Path(os.path.realpath(candidate)) if _is_file(candidate) else None


def _native_binary(package_root: Path, plat: _Platform) -> Path | None:
    """The native executable of an ``@openai/codex`` npm package, as its own shim would find it."""
    triple, pkg = plat.triple, plat.platform_package
    if triple is None or pkg is None:
        return None
    vendors: list[Path] = []
    # Like node's require.resolve: the platform package nested in the package's own node_modules,
    # or hoisted into any ancestor node_modules (npm/bun siblings, pnpm's virtual store).
    for directory in (package_root, *package_root.parents):
        vendors.append(directory / "node_modules" / "@openai" / pkg / "vendor")
    vendors.append(package_root.parent / pkg / "vendor")
    vendors.append(package_root / "vendor")
    for vendor in _dedupe(vendors, plat):
        target_dir = vendor / triple
        for candidate in (
            _manifest_entrypoint(target_dir),
            target_dir / "bin" / plat.exe,
            target_dir / "codex" / plat.exe,
        ):
            if candidate is not None and _is_executable(candidate, plat):
                return candidate
    return None


def _manifest_entrypoint(target_dir: Path) -> Path | None:
    """The entry point named by ``codex-package.json`` (layout 1, since 0.142)."""
    try:
        manifest = json.loads((target_dir / "codex-package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    entry = manifest.get("entrypoint") if isinstance(manifest, dict) else None
    if not isinstance(entry, str) or not entry or ".." in Path(entry).parts:
        return None
    path = Path(entry)
    return None if path.is_absolute() else target_dir / path


def _mark_managed(env: dict[str, str], package_root: Path) -> None:
    """Tell the native binary about its installation, as the npm shim would have."""
    text = str(package_root).replace("\\", "/")
    if ".bun/install/global" in text:
        manager = "CODEX_MANAGED_BY_BUN"
    elif "/.pnpm/" in text or "/pnpm/global/" in text:
        manager = "CODEX_MANAGED_BY_PNPM"
    else:
        manager = "CODEX_MANAGED_BY_NPM"
    for name in _MANAGED_BY:
        # Stale markers from an outer codex would point its update hints at the wrong tool.
        env.pop(name, None)
    env[manager] = "1"
    env["CODEX_MANAGED_PACKAGE_ROOT"] = str(package_root)


# --- environment ----------------------------------------------------------------------------


def _child_env(
    env: Mapping[str, str], home: Path, plat: _Platform, extra_dirs: Sequence[Path]
) -> tuple[dict[str, str], tuple[str, ...]]:
    child = dict(env)
    removed: list[str] = []
    for key in list(child):
        name = key.upper() if plat.windows else key
        if name in SCRUBBED_ENV:
            del child[key]
            if name not in removed:
                removed.append(name)
    path_key = _path_key(child, plat)
    for key in [k for k in child if plat.windows and k.upper() == "PATH" and k != path_key]:
        del child[key]
    child[path_key] = _repair_path(_get_path(env, plat), env, home, plat, extra_dirs)
    return child, tuple(removed)


def _repair_path(
    caller_path: str,
    env: Mapping[str, str],
    home: Path,
    plat: _Platform,
    extra_dirs: Sequence[Path] = (),
) -> str:
    """The caller's PATH entries, then the existing well-known and system dirs it lacks."""
    entries = [*_split_path(caller_path, plat)]
    env = _lookup(env, plat)
    candidates = [*extra_dirs, *_well_known_dirs(env, home, plat), *_system_dirs(env, plat)]
    entries += [str(d) for d in candidates if _is_dir(d)]
    seen: set[str] = set()
    result: list[str] = []
    for entry in entries:
        key = os.path.normcase(entry).rstrip("/\\") if plat.windows else entry.rstrip("/")
        if key not in seen:
            seen.add(key)
            result.append(entry)
    return (";" if plat.windows else ":").join(result)


def _system_dirs(env: Mapping[str, str], plat: _Platform) -> list[Path]:
    if plat.windows:
        root = Path(_lookup(env, plat).get("SystemRoot") or "C:\\Windows")
        system32 = root / "System32"
        return [system32, root, system32 / "Wbem", system32 / "WindowsPowerShell" / "v1.0"]
    return [Path(p) for p in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")]


def _path_key(env: Mapping[str, str], plat: _Platform) -> str:
    """The name under which the environment holds the search path (``Path`` on Windows, often)."""
    if plat.windows:
        for key in env:
            if key.upper() == "PATH":
                return key
        return "Path"
    return "PATH"


def _get_path(env: Mapping[str, str], plat: _Platform) -> str:
    return env.get(_path_key(env, plat), "")


def _split_path(value: str, plat: _Platform) -> list[str]:
    # Empty and relative entries mean "relative to the current directory": a different program
    # depending on where we run. Never search or pass those on.
    # Windows entries may be quoted ("C:\Program Files\nodejs"): the quotes are not the path.
    isabs = ntpath.isabs if plat.windows else posixpath.isabs
    entries = value.split(";" if plat.windows else ":")
    if plat.windows:
        entries = [entry.strip().strip('"') for entry in entries]
    return [entry for entry in entries if isabs(entry.strip())]


def _dedupe(paths: Sequence[Path], plat: _Platform) -> list[Path]:
    seen: set[str] = set()
    result: list[Path] = []
    for path in paths:
        key = os.path.normcase(str(path)) if plat.windows else str(path)
        if key not in seen:
            seen.add(key)
            result.append(path)
    return result


def _home(env: Mapping[str, str], plat: _Platform) -> Path:
    value = env.get("USERPROFILE") if plat.windows else env.get("HOME")
    if value:
        return Path(value)
    try:
        return Path.home()
    except RuntimeError:  # no HOME and no passwd entry: no home-based places to search
        return Path(os.sep)


def _tilde(path: Path, home: Path) -> str:
    try:
        return "~/" + path.relative_to(home).as_posix()
    except ValueError:
        return str(path)


# --- version --------------------------------------------------------------------------------


def parse_version(text: str) -> CodexVersion | None:
    """``"codex-cli 0.169.0"`` -> ``CodexVersion(0, 169, 0)``; None when there is no version."""
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    return CodexVersion(int(major), int(minor), int(patch), pre)


def parse_features(text: str) -> dict[str, bool]:
    """``codex features list`` rows (``name  stage  true|false``) as a mapping."""
    result: dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in ("true", "false"):
            result[parts[0]] = parts[-1] == "true"
    return result


def run_features_list(
    codex: Codex,
    *,
    mirror: Path | None = None,
    options: Sequence[str] = (),
    timeout_s: float = VERSION_PROBE_TIMEOUT_S,
    stop: threading.Event | None = None,
) -> tuple[int, bytes, bytes]:
    """``codex [options] features list`` in a throwaway home (``mirror``: one that sees that
    home through links), so that nothing lands in the user's codex home. Raises OSError,
    ``subprocess.TimeoutExpired`` or (no temporary folder) :class:`TransientError`."""
    with _proc.scratch_home(mirror=mirror) as home:
        return _proc.run_bounded(
            codex.command(*options, "features", "list"),
            env={**codex.env, "CODEX_HOME": str(home)},
            timeout_s=timeout_s,
            stop=stop,
            scratch=None if home == mirror else str(home),
        )


YIELD_SETTING = "features.code_mode.default_exec_yield_time_ms"
"""How long code mode's ``exec`` cell runs before it hands back to the model (30 s by default;
codex-facts section 12): 0.149+ take it, 0.125 and 0.142 refuse to start with it."""


def known_features(
    codex: Codex, *, timeout_s: float = VERSION_PROBE_TIMEOUT_S, stop: threading.Event | None = None
) -> tuple[str, ...] | None:
    """Every feature name this codex lists, asked in an empty throwaway home (the names do not
    depend on the configuration); None when it cannot be asked."""
    probed = probe_features(codex, timeout_s=timeout_s, stop=stop)
    return None if probed is None else probed[0]


def probe_features(
    codex: Codex, *, timeout_s: float = VERSION_PROBE_TIMEOUT_S, stop: threading.Event | None = None
) -> tuple[tuple[str, ...], bool] | None:
    """The feature names (see :func:`known_features`), and whether this codex takes
    :data:`YIELD_SETTING`: ``features list`` is asked with it first (one run where it is
    taken), then, refused, without it. None when codex cannot be asked."""
    for options in (("--config", f"{YIELD_SETTING}=1000"), ()):
        try:
            returncode, out, _ = run_features_list(
                codex, options=options, timeout_s=timeout_s, stop=stop
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        names = tuple(parse_features(out.decode("utf-8", "replace")))
        if returncode == 0 and names:
            return names, bool(options)
    return None


def manifest_version(codex: Codex) -> CodexVersion | None:
    """The version in the npm package's ``codex-package.json`` (layout 1, since 0.142), when
    the native binary run is that manifest's entry point: no process needed. None otherwise
    (older packages, other installs, the JS shim): then :func:`probe_version` asks codex."""
    if codex.via_shim:
        return None
    target = codex.path.parent.parent
    entry = _manifest_entrypoint(target)
    try:
        if entry is None or not os.path.samefile(entry, codex.path):
            return None
        manifest = json.loads((target / "codex-package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return parse_version(f"codex-cli {version}") if isinstance(version, str) else None


def probe_version(
    codex: Codex,
    *,
    timeout_s: float = VERSION_PROBE_TIMEOUT_S,
    stop: threading.Event | None = None,
) -> CodexVersion:
    """Run ``codex --version`` and parse it. Raises :class:`LaunchError`.

    ``stop``: set it from another thread to end the probe at once (it then raises a
    :class:`TransientError` with reason ``stopped`` once the child's tree is gone).
    """
    try:
        with _proc.scratch_home() as home:  # nothing of it lands in the user's codex home
            returncode, out, err = _proc.run_bounded(
                codex.command("--version"),
                env={**codex.env, "CODEX_HOME": str(home)},
                timeout_s=timeout_s,
                stop=stop,
                scratch=str(home),
            )
    except OSError as exc:
        raise LaunchError(
            f"Could not start {codex.path}: {exc.strerror or exc}.",
            reason="codex_not_executable",
            hint=_REINSTALL_HINT,
        ) from exc
    except subprocess.TimeoutExpired:
        raise LaunchError(
            f"`{codex.path} --version` did not answer within {timeout_s:g} s.",
            reason="version_probe_timeout",
            hint="Check that this is a working codex executable (run it by hand).",
        ) from None
    stdout = out.decode("utf-8", "replace")
    stderr_tail = _tail(err.decode("utf-8", "replace"))
    if returncode != 0:
        raise LaunchError(
            f"`{codex.path} --version` failed with exit code {returncode}"
            + (f": {stderr_tail.splitlines()[-1]}" if stderr_tail else "."),
            reason="version_probe_failed",
            hint=_REINSTALL_HINT,
            codex_exit_code=returncode,
            stderr_tail=stderr_tail or None,
        )
    version = parse_version(stdout)
    if version is None:
        raise LaunchError(
            f"`{codex.path} --version` printed no version: {stdout.strip()[:80]!r}.",
            reason="version_unparsable",
            hint="Check that this executable is the Codex CLI.",
            stderr_tail=stderr_tail or None,
        )
    return version


def _tail(text: str, lines: int = 20, chars: int = 4000) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]

"""Install real ``@openai/codex`` releases from npm into a cache folder, for end-to-end tests.

    python -m codex_cli_image.testing.realcodex            # every version in VERSIONS
    python -m codex_cli_image.testing.realcodex 0.169.0    # just these

Each version lives in ``<cache>/<version>`` (reused when complete); the cache is
``$CODEX_IMAGE_NPM_CACHE``, else ``$XDG_CACHE_HOME/codex-cli-image/npm``, else
``~/.cache/codex-cli-image/npm``. Prints the path of each version's npm shim.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..launcher import TESTED_VERSIONS

# The Codex CLI versions the real-CLI tests run against; adding one is one line, in
# launcher.TESTED_VERSIONS. The first is the newest; 0.149 has the client-side image tool (which
# arrived in 0.144), 0.142 the new npm layout and the hosted tool, 0.125 the old layout and the
# hosted tool.
VERSIONS: tuple[str, ...] = TESTED_VERSIONS

_STAMP = ".codex-cli-image-complete"


class NpmUnavailable(RuntimeError):
    """npm is not installed, so no real codex can be installed here."""


def cache_root() -> Path:
    explicit = os.environ.get("CODEX_IMAGE_NPM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codex-cli-image" / "npm"


def shim_path(version: str, root: Path | None = None) -> Path:
    """Where the npm shim of ``version`` lives once installed (``node_modules/.bin/codex``)."""
    name = "codex.cmd" if sys.platform == "win32" else "codex"
    return (root or cache_root()) / version / "node_modules" / ".bin" / name


def installed(version: str, root: Path | None = None) -> Path | None:
    target = (root or cache_root()) / version
    shim = shim_path(version, root)
    return shim if (target / _STAMP).exists() and shim.exists() else None


def install(version: str, *, root: Path | None = None, timeout_s: float = 900) -> Path:
    """Install ``@openai/codex@<version>`` (unless already complete) and return its npm shim."""
    root = root or cache_root()
    done = installed(version, root)
    if done is not None:
        return done
    npm = shutil.which("npm")
    if npm is None:
        raise NpmUnavailable("npm is not on PATH: install Node.js and npm to run real-codex tests")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{version}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(staging),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                f"@openai/codex@{version}",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
        )
        (staging / _STAMP).write_text(version, "utf-8")
        target = root / version
        shutil.rmtree(target, ignore_errors=True)  # an earlier, incomplete install
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return shim_path(version, root)


def _size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    """Install each version, saying on stderr what is downloaded (a release is 300-450 MB), and
    print each npm shim's path on stdout."""
    versions = (sys.argv[1:] if argv is None else argv) or list(VERSIONS)
    for version in versions:
        shim = installed(version)
        if shim is None:
            where = cache_root() / version
            print(f"real codex {version}: installing @openai/codex@{version} from npm "
                  f"into {where} (300-450 MB)...", file=sys.stderr, flush=True)  # fmt: skip
            started = time.monotonic()
            shim = install(version)
            size = _size(cache_root() / version) / 1e6
            print(f"real codex {version}: installed, {size:.0f} MB in "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        else:
            print(f"real codex {version}: already installed", file=sys.stderr, flush=True)
        print(shim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the ways npm, pnpm and the old codex packages lay out @openai/codex, in a temp dir."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from codex_cli_image.launcher import _current_platform

PLAT = _current_platform()
TRIPLE = PLAT.triple or "x86_64-unknown-linux-musl"
PLATFORM_PKG = PLAT.platform_package or "codex-linux-x64"
SHIM_JS = "#!/usr/bin/env node\n// Unified entry point for the Codex CLI (test copy).\n"


def _codex_package(node_modules: Path) -> Path:
    root = node_modules / "@openai" / "codex"
    (root / "bin").mkdir(parents=True)
    (root / "package.json").write_text(
        json.dumps(
            {"name": "@openai/codex", "version": "0.169.0", "bin": {"codex": "bin/codex.js"}}
        )
    )
    js = root / "bin" / "codex.js"
    js.write_text(SHIM_JS)
    js.chmod(0o755)
    return root


def _place_native(target_dir: Path, native: Path, rel: str, manifest: bool) -> Path:
    binary = target_dir / rel
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(native, binary)
    binary.chmod(0o755)
    if manifest:
        (target_dir / "codex-package.json").write_text(
            json.dumps(
                {
                    "layoutVersion": 1,
                    "version": "0.169.0",
                    "target": TRIPLE,
                    "variant": "codex",
                    "entrypoint": rel,
                    "resourcesDir": "codex-resources",
                    "pathDir": "codex-path",
                }
            )
        )
    return binary


def _bin_link(bin_dir: Path, target: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "codex"
    link.symlink_to(os.path.relpath(target, bin_dir))
    return link


def local_hoisted(project: Path, native: Path | None, *, manifest_entry: str = "bin/codex") -> Path:
    """`npm install @openai/codex` in a project (0.169 layout): platform package as a sibling."""
    node_modules = project / "node_modules"
    root = _codex_package(node_modules)
    if native is not None:
        vendor = node_modules / "@openai" / PLATFORM_PKG / "vendor" / TRIPLE
        _place_native(vendor, native, manifest_entry, manifest=True)
    return _bin_link(node_modules / ".bin", root / "bin" / "codex.js")


def global_nested(prefix: Path, native: Path | None) -> Path:
    """`npm install -g` (0.169 layout): platform package nested in the package's node_modules."""
    root = _codex_package(prefix / "lib" / "node_modules")
    if native is not None:
        vendor = root / "node_modules" / "@openai" / PLATFORM_PKG / "vendor" / TRIPLE
        _place_native(vendor, native, "bin/codex", manifest=True)
    return _bin_link(prefix / "bin", root / "bin" / "codex.js")


def old_layout(project: Path, native: Path) -> Path:
    """Before 0.142: `vendor/<triple>/codex/codex` inside @openai/codex itself, no manifest."""
    node_modules = project / "node_modules"
    root = _codex_package(node_modules)
    _place_native(root / "vendor" / TRIPLE, native, "codex/codex", manifest=False)
    return _bin_link(node_modules / ".bin", root / "bin" / "codex.js")


def pnpm_layout(project: Path, native: Path) -> Path:
    """pnpm: packages in a virtual store, siblings symlinked, `.bin/codex` a sh wrapper script."""
    store = project / "node_modules" / ".pnpm"
    codex_nm = store / "@openai+codex@0.169.0" / "node_modules"
    _codex_package(codex_nm)
    platform_nm = store / f"@openai+{PLATFORM_PKG}@0.169.0" / "node_modules"
    vendor = platform_nm / "@openai" / PLATFORM_PKG / "vendor" / TRIPLE
    _place_native(vendor, native, "bin/codex", manifest=True)
    (codex_nm / "@openai" / PLATFORM_PKG).symlink_to(platform_nm / "@openai" / PLATFORM_PKG)
    bin_dir = project / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "codex"
    wrapper.write_text(
        "#!/bin/sh\n"
        'basedir=$(dirname "$(echo "$0" | sed -e \'s,\\\\,/,g\')")\n'
        'exec node "$basedir/../.pnpm/@openai+codex@0.169.0/node_modules/@openai/codex/bin/'
        'codex.js" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper

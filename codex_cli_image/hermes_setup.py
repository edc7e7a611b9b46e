"""``codex-image hermes-setup``: enable the Hermes Agent backend in ``$HERMES_HOME/config.yaml``.

Hermes loads a pip-installed plugin only when its entry point is listed in ``plugins.enabled``, and
uses an image backend only when ``image_gen.provider`` names it. Setup adds the first, sets the
second when it is unset, and keeps the rest of the file, comments included: it is edited with
ruamel.yaml's round-trip mode (Hermes ships it; the ``hermes`` extra installs it) and replaced
atomically. :func:`apply` and :func:`missing` are pure over the parsed mapping.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import sys
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["SetupReport", "apply", "missing", "remove", "run"]

ENTRY_POINT = "codex-cli-image"
PROVIDER = "codex-cli"
GROUP = "hermes_agent.plugins"


@dataclass(frozen=True, slots=True)
class SetupReport:
    config: str
    changed: bool
    missing: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "config": self.config, "changed": self.changed,
                "missing": list(self.missing), "notes": list(self.notes)}  # fmt: skip


def missing(config: MutableMapping[str, Any]) -> list[str]:
    """What config.yaml still lacks for Hermes to use this backend."""
    gaps = []
    plugins = config.get("plugins")
    enabled = plugins.get("enabled") if isinstance(plugins, MutableMapping) else None
    disabled = plugins.get("disabled") if isinstance(plugins, MutableMapping) else None
    if not isinstance(enabled, list) or ENTRY_POINT not in enabled:
        gaps.append(f"plugins.enabled does not list {ENTRY_POINT}")
    if isinstance(disabled, list) and ENTRY_POINT in disabled:
        gaps.append(f"plugins.disabled lists {ENTRY_POINT}")
    image_gen = config.get("image_gen")
    provider = image_gen.get("provider") if isinstance(image_gen, MutableMapping) else None
    if provider != PROVIDER:
        gaps.append(f"image_gen.provider is {provider!r}, not {PROVIDER!r}")
    return gaps


def apply(config: MutableMapping[str, Any]) -> list[str]:
    """Enable the backend in ``config`` (in place); notes on what was left as it was."""
    notes = []
    plugins = _table(config, "plugins")
    enabled = plugins.get("enabled")
    if not isinstance(enabled, list):
        enabled = plugins["enabled"] = []
    if ENTRY_POINT not in enabled:
        enabled.append(ENTRY_POINT)
    disabled = plugins.get("disabled")
    if isinstance(disabled, list) and ENTRY_POINT in disabled:
        disabled.remove(ENTRY_POINT)  # an explicit disable wins in Hermes
    image_gen = _table(config, "image_gen")
    provider = image_gen.get("provider")
    if not provider:
        image_gen["provider"] = PROVIDER
    elif provider != PROVIDER:
        notes.append(
            f"image_gen.provider is {provider!r}: left as it is. Set it to {PROVIDER} to make "
            "images through codex (or pick it in `hermes tools`)."
        )
    return notes


def remove(config: MutableMapping[str, Any]) -> list[str]:
    """Undo :func:`apply` (in place); the image_gen.codex-cli settings are kept."""
    plugins = config.get("plugins")
    enabled = plugins.get("enabled") if isinstance(plugins, MutableMapping) else None
    if isinstance(enabled, list) and ENTRY_POINT in enabled:
        enabled.remove(ENTRY_POINT)
    image_gen = config.get("image_gen")
    if isinstance(image_gen, MutableMapping) and image_gen.get("provider") == PROVIDER:
        del image_gen["provider"]
        return ["image_gen.provider is unset: Hermes uses its default image backend again."]
    return []


def _table(config: MutableMapping[str, Any], key: str) -> MutableMapping[str, Any]:
    value = config.get(key)
    if value is None:
        value = config[key] = {}
    if not isinstance(value, MutableMapping):
        raise InputError(
            f"{key} in config.yaml is not a mapping.",
            reason="invalid_hermes_config",
            hint=f"Fix {key} in config.yaml by hand, then run hermes-setup again.",
        )
    return value


def run(*, check: bool = False, uninstall: bool = False) -> SetupReport:
    """Read, change (unless ``check``) and write config.yaml. Raises :class:`InputError`."""
    yaml = _yaml()
    path = _config_path()
    try:
        text = path.read_text("utf-8") if path.exists() else ""
        loaded = yaml.load(text) if text.strip() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Could not read {path}: {exc}.", reason="invalid_hermes_config",
                         hint="Check the file and its permissions.") from exc  # fmt: skip
    except Exception as exc:  # ruamel's parser errors share no public base class
        raise InputError(
            f"{path} is not valid YAML ({type(exc).__name__}).",
            reason="invalid_hermes_config",
            hint="Fix the file (hermes config check) and run again.",
        ) from None
    from ruamel.yaml.comments import CommentedMap

    config = loaded if loaded is not None else CommentedMap()
    if not isinstance(config, MutableMapping):
        raise InputError(f"{path} does not hold a mapping of settings.",
                         reason="invalid_hermes_config", hint="Fix the file by hand.")  # fmt: skip
    notes = _environment_notes()
    if check:
        return SetupReport(str(path), False, tuple(missing(config)), tuple(notes))
    before = missing(config)
    notes += remove(config) if uninstall else apply(config)
    after = missing(config)
    changed = before != after
    if changed:
        buffer = io.StringIO()
        yaml.dump(config, buffer)
        _replace(path, buffer.getvalue())
    gaps = [] if uninstall else after
    return SetupReport(str(path), changed, tuple(gaps), tuple(notes))


def _environment_notes() -> list[str]:
    notes = []
    try:
        importlib.metadata.version("hermes-agent")
    except importlib.metadata.PackageNotFoundError:
        notes.append(
            "hermes-agent is not installed in this Python environment: Hermes sees plugins "
            f"only in its own. Install codex-cli-image there ({sys.executable} is this one)."
        )
    names = {ep.name for ep in importlib.metadata.entry_points(group=GROUP)}
    if ENTRY_POINT not in names:
        notes.append(f"The entry point {ENTRY_POINT} is not installed in this environment.")
    return notes


def _config_path() -> Path:
    try:
        from hermes_constants import get_hermes_home

        home = Path(get_hermes_home())
    except ImportError:  # without Hermes: its documented default
        home = Path(os.environ.get("HERMES_HOME") or Path.home() / ".hermes")
    return home / "config.yaml"


def _yaml() -> Any:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise InputError(
            "hermes-setup needs ruamel.yaml (to keep config.yaml's comments).",
            reason="hermes_extra_missing",
            hint=f"Install the extra from your clone: {sys.executable} -m pip install "
            "'.[hermes]' (Hermes' own environment already has it).",
        ) from None
    yaml = YAML()  # round trip: comments, order and quoting stay
    yaml.preserve_quotes = True
    return yaml


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, keeping its permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o600
    handle, staging = tempfile.mkstemp(prefix=".config.yaml.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise

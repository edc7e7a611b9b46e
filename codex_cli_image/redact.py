"""Keep the login's secrets out of every text we pass on (the second wall, after the lockdown).

What codex and its model write (stderr, messages, the prompt the image was made from, failure
lines) reaches callers, logs and HTTP clients. The model has no way to read the login any more
(:mod:`codex_cli_image.lockdown`), but should anything of it appear in such text, it is replaced
here, where the runner hands codex's texts on: the exact values of ``auth.json`` (tokens, account
id, key), and anything shaped like a JWT or an API key (a cut or older token too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import redact as redact_shapes
from .preflight import read_auth_file

__all__ = ["REDACTED", "login_secrets", "read_login_secrets", "redact"]

REDACTED = "[redacted]"
_MIN_SECRET = 8  # shorter values (a plan name, "chatgpt") are no secrets and would match anywhere


def login_secrets(auth: Mapping[str, Any]) -> tuple[str, ...]:
    """Every secret value of a parsed ``auth.json``: tokens, account id, keys (longest first)."""
    found: set[str] = set()

    def collect(value: object) -> None:
        if isinstance(value, str) and len(value) >= _MIN_SECRET:
            found.add(value)
        elif isinstance(value, Mapping):
            for inner in value.values():
                collect(inner)

    for key, value in auth.items():
        if key not in ("auth_mode", "last_refresh"):
            collect(value)
    return tuple(sorted(found, key=len, reverse=True))


def read_login_secrets(codex_home: Path) -> tuple[str, ...]:
    """:func:`login_secrets` of ``codex_home/auth.json``; nothing when it cannot be read (the
    shapes are still redacted)."""
    return login_secrets(read_auth_file(codex_home) or {})


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets``, and anything shaped like a token or key (the shapes
    every error message is cleaned of: :func:`codex_cli_image.errors.redact`), replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return redact_shapes(text)

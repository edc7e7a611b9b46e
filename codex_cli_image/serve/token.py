"""The bearer token: from ``--token-file`` or ``$CODEX_IMAGE_TOKEN``, else one made once and kept
readable by the user only (loopback servers alone may do without one given)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from .._facts import user_dir
from ..errors import (
    InputError,
)
from .gate import (
    check_token_file,
)
from .options import (
    TOKEN_ENV,
)

# --- the token -------------------------------------------------------------------------------


def resolve_token(
    token_file: str | None, host: str, env: Mapping[str, str]
) -> tuple[str, str | None]:
    """The bearer token and, when it was kept or made in our folder, where (to tell the user).

    ``--token-file`` first, then ``$CODEX_IMAGE_TOKEN``; with neither, a loopback server uses
    a random token made once and kept readable by the user only; any other host refuses."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            problem = check_token_file(path)
            if problem is not None:
                raise InputError(
                    f"The token file {problem}.",
                    reason="token_file_unsafe",
                    hint="Keep the token in a file of your own that only you can read "
                    f"(chmod 600 {path}), as ssh wants for a private key.",
                )
            text = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"The token file {token_file} cannot be read: "
                f"{getattr(exc, 'strerror', None) or exc}.",
                reason="token_unreadable",
                hint="Name a readable file holding the token.",
            ) from None
        return _checked_token(text, f"The token file {token_file}"), None
    if env.get(TOKEN_ENV):
        return _checked_token(env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"), None
    if not is_loopback(host):
        raise InputError(
            f"Serving on {host} (not this machine only) needs a token.",
            reason="token_required",
            hint=f"Pass --token-file FILE or set {TOKEN_ENV}: anyone who can reach the port could "
            "otherwise spend your subscription.",
        )
    folder = user_dir("config", env)
    if folder is None:
        raise InputError(
            "There is no home folder to keep the server's token in.",
            reason="token_required",
            hint=f"Pass --token-file FILE or set {TOKEN_ENV}.",
        )
    return _kept_token(folder / "serve-token"), str(folder / "serve-token")


def _checked_token(text: str, where: str) -> str:
    if len(text) < 16 or any(c.isspace() or not c.isprintable() for c in text):
        raise InputError(
            f"{where} does not hold a usable token.",
            reason="invalid_token",
            hint="Use 16 or more printable characters without spaces, e.g. the "
            "output of: python3 -c 'import secrets; print(secrets.token_urlsafe())'.",
        )
    return text


def _kept_token(path: Path) -> str:
    """The token in ``path``, made (0600, in a 0700 folder) when missing."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            problem = check_token_file(path)
            if problem is not None:
                raise InputError(
                    f"The token file {problem}.",
                    reason="token_file_unsafe",
                    hint=f"Run `chmod 600 {path}`, or remove it to have a new token made.",
                ) from None
            return _checked_token(path.read_text("utf-8").strip(), f"The token file {path}")
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(token + "\n")
        return token
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"The token file {path} cannot be made or read: "
            f"{getattr(exc, 'strerror', None) or exc}.",
            reason="token_unreadable",
            hint=f"Pass --token-file FILE or set {TOKEN_ENV}.",
        ) from None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

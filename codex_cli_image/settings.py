"""The settings a :class:`~codex_cli_image.Client` holds, written and checked in one place.

:class:`Settings` is the value; :class:`ClientOptions` (and :class:`RunOptions`, the same without
``concurrency``) types the keywords that ``Client(...)`` and the module functions take and pass
on, so a new setting is a field here (and an option of the command line), not a parameter in six
signatures. The per-image keywords, :class:`ImageOptions`, are the fields of
:class:`~codex_cli_image.ImageRequest`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TIMEOUT_S",
    "ClientOptions",
    "ImageOptions",
    "RunOptions",
    "Settings",
    "check_profile_name",
]

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_CONCURRENCY = 2  # the backend answers 429 when more than 2-3 image streams run
MAX_CONCURRENCY = 16
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Settings:
    """How images are made; checked when made (:class:`InputError` naming a bad value).

    codex / codex_home: the executable and its state directory (default: found as
    ``codex-image doctor`` shows). profile: the codex profile to run with (``--profile``; codex
    0.142+ reads ``$CODEX_HOME/<profile>.config.toml``), checked like config.toml. model: passed
    to codex. allow_relay: accept a custom provider that receives the ChatGPT login. env: the
    environment codex is found and run with (default: ``os.environ`` when the client is made).
    timeout: seconds per image, retries and waiting for a slot included. retries: extra attempts
    after transient failures (never after a timeout or once an image was produced).
    concurrency: images made at once by every call of a client. wait_for_turn: let codex finish
    its closing message (to get ``usage``) instead of stopping it once the image is safe.
    keep_codex_copy: leave codex's own copy in ``$CODEX_HOME/generated_images``.
    """

    codex: str | os.PathLike[str] | None = None
    codex_home: str | os.PathLike[str] | None = None
    profile: str | None = None
    model: str | None = None
    allow_relay: bool = False
    env: Mapping[str, str] | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = 1
    concurrency: int = DEFAULT_CONCURRENCY
    wait_for_turn: bool = False
    keep_codex_copy: bool = False

    def __post_init__(self) -> None:
        _check_timeout(self.timeout)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InputError("retries must be a whole number, 0 or more.",
                             reason="invalid_retries", hint="Pass 0 or more.")  # fmt: skip
        _check_model(self.model)
        _check_concurrency(self.concurrency)
        if self.profile is not None:
            check_profile_name(self.profile)
        for name in ("allow_relay", "wait_for_turn", "keep_codex_copy"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} is not true or false.", reason="invalid_option",
                                 hint=f"Pass {name}=True or {name}=False.")  # fmt: skip

    @classmethod
    def from_options(cls, options: Mapping[str, Any], caller: str = "Client") -> Self:
        """Settings from keywords; an unknown keyword is a TypeError naming ``caller``."""
        unknown = sorted(set(options) - SETTING_NAMES)
        if unknown:
            raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
        return cls(**options)

    def per_call(self, timeout: float | None, retries: int | None) -> Self:
        """These settings with one call's own timeout or retries (checked)."""
        if timeout is None and retries is None:
            return self
        return replace(
            self,
            timeout=self.timeout if timeout is None else timeout,
            retries=self.retries if retries is None else retries,
        )


SETTING_NAMES = frozenset(field.name for field in fields(Settings))


class RunOptions(TypedDict, total=False):
    """The keywords of :class:`Settings` but ``concurrency`` (one image needs no limit)."""

    codex: str | os.PathLike[str] | None
    codex_home: str | os.PathLike[str] | None
    profile: str | None
    model: str | None
    allow_relay: bool
    env: Mapping[str, str] | None
    timeout: float
    retries: int
    wait_for_turn: bool
    keep_codex_copy: bool


class ClientOptions(RunOptions, total=False):
    """The keywords of :class:`Settings`, as ``Client(...)`` takes them."""

    concurrency: int


class ImageOptions(TypedDict, total=False):
    """The per-image keywords: the fields of :class:`~codex_cli_image.ImageRequest` but the
    prompt."""

    output: str | os.PathLike[str] | None
    overwrite: bool
    references: Sequence[str | os.PathLike[str]]
    aspect: str | None
    size: str | None
    transparent: bool
    fit: str | None


class GenerateOptions(ImageOptions, RunOptions, total=False):
    """What :func:`~codex_cli_image.generate` takes beside the prompt."""


def check_profile_name(name: str) -> str:
    """A profile name codex takes (a plain name: it becomes a file name), or InputError."""
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name) or ".." in name:
        raise InputError(
            f"The profile name {str(name)[:40]!r} is not usable.",
            reason="invalid_profile",
            hint="Pass a plain name such as work (codex reads it from work.config.toml).",
        )
    return name


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InputError(
            "The timeout must be a positive number of seconds.",
            reason="invalid_timeout",
            hint="Pass a timeout in seconds, e.g. 600.",
        )


def _check_model(model: str | None) -> None:
    if model is None:
        return
    if (
        not isinstance(model, str)
        or not model.strip()
        or "\x00" in model
        or len(model) > 200
        or not _encodable(model)
    ):
        raise InputError(
            f"The model name {str(model)[:40]!r} is not usable.",
            reason="invalid_model",
            hint="Pass a model name such as the one in your config.toml, or leave it out.",
        )


def _check_concurrency(concurrency: int) -> None:
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not (1 <= concurrency <= MAX_CONCURRENCY)
    ):
        raise InputError(
            f"The concurrency {concurrency!r} is out of range.",
            reason="invalid_concurrency",
            hint=f"Run 1 to {MAX_CONCURRENCY} jobs at once (2 avoids the backend's rate limit).",
        )


def _encodable(text: str) -> bool:
    """Whether ``text`` can be sent to codex as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

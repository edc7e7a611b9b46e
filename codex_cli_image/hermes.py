"""A Hermes Agent image backend: "Codex CLI (ChatGPT subscription)" in ``hermes tools``.

Loaded only by Hermes Agent (0.19+, Python 3.11+), through the entry point ``codex-cli-image``
in the group ``hermes_agent.plugins``; nothing else in this package imports it. Hermes calls
``register(ctx)``, which registers the provider ``codex-cli``. Settings come from the
``image_gen.codex-cli`` table of ``$HERMES_HOME/config.yaml``: ``codex``, ``codex_home``,
``profile``, ``model`` (codex's model), ``timeout`` (seconds, default 360: inside Hermes' 420 s
tool deadline) and ``allow_relay``.

The provider never raises: every failure becomes Hermes' ``error_response`` with an
``error_type`` from the error's kind, our message and hint as ``error``, and ``kind``,
``reason`` and (for quota) ``retry_at`` beside it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from agent.image_gen_provider import (
    ImageGenProvider,
    error_response,
    normalize_reference_images,
    resolve_aspect_ratio,
    success_response,
)

from .client import Client
from .errors import CodexImageError, InputError, internal_error, log_unexpected, retry_rule
from .request import MAX_REFERENCE_BYTES, MAX_REFERENCES
from .settings import Settings

__all__ = ["PROVIDER_NAME", "CodexCliProvider", "register"]

log = logging.getLogger(__name__)

PROVIDER_NAME = "codex-cli"
ENTRY_POINT = "codex-cli-image"
DEFAULT_TIMEOUT_S = 360.0  # Hermes ends a concurrent tool call after 420 s
IMAGE_MODEL = "gpt-image-2"  # what codex's image tool uses; not selectable
_SETTINGS = ("codex", "codex_home", "profile", "model", "timeout", "allow_relay")
_DOWNLOAD_TIMEOUT_S = 60.0
_REFERENCE_REASONS = frozenset({"invalid_reference", "too_many_references", "invalid_image_input"})


class CodexCliProvider(ImageGenProvider):  # type: ignore[misc]  # Hermes ships no types
    """Images through the user's signed-in Codex CLI, paid by the ChatGPT subscription."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._key: tuple[object, ...] | None = None
        self._unavailable: str | None = None  # the reason last logged, so it is logged once

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def display_name(self) -> str:
        return "Codex CLI (ChatGPT subscription)"

    def get_setup_schema(self) -> dict[str, Any]:
        return {
            "name": self.display_name,
            "badge": "subscription",
            "tag": "Your signed-in codex CLI makes the image; no API key",
            "env_vars": [],
        }

    def list_models(self) -> list[dict[str, Any]]:
        return [
            {
                "id": IMAGE_MODEL,
                "display": "gpt-image-2 (through codex)",
                "speed": "~20-120s",
                "price": "included in the ChatGPT plan",
            }
        ]

    def default_model(self) -> str:
        return IMAGE_MODEL

    def capabilities(self) -> dict[str, Any]:
        return {"modalities": ["text", "image"], "max_reference_images": MAX_REFERENCES}

    def is_available(self) -> bool:
        """Whether codex is there and signed in so that images can be made. Warm (nothing
        changed since the last check), it spawns nothing and reads nothing but file stats."""
        try:
            self._current().check()
        except CodexImageError as error:
            # Hermes hides the tool without a word: say why, once per reason.
            if error.reason != self._unavailable:
                self._unavailable = error.reason
                log.warning("the codex-cli image backend is not available: %s %s Run "
                            "`codex-image doctor` for details.", error.message,
                            hermes_terms(error.hint))  # fmt: skip
            return False
        except Exception as exc:
            log_unexpected(log, "checking the codex-cli image backend failed", exc)
            return False
        self._unavailable = None
        return True

    def generate(
        self,
        prompt: str,
        aspect_ratio: str = "landscape",
        *,
        image_url: str | None = None,
        reference_image_urls: list[str] | None = None,
        **kwargs: Any,  # model= (Hermes' image_gen.model) and future keys: ignored
    ) -> dict[str, Any]:
        aspect = resolve_aspect_ratio(aspect_ratio)
        sources = [image_url.strip()] if isinstance(image_url, str) and image_url.strip() else []
        sources += normalize_reference_images(reference_image_urls) or []
        try:
            client = self._current()
            with tempfile.TemporaryDirectory(
                prefix="codex-image-hermes-", ignore_cleanup_errors=True
            ) as scratch:
                references = _materialize(sources, Path(scratch))
                result = client.generate(
                    prompt, output=_images_folder(), references=references, aspect=aspect
                )
        except CodexImageError as error:
            return _error(error, prompt, aspect)
        except Exception as exc:  # a bug of ours must not take Hermes' tool call down
            log_unexpected(log, "codex-cli image backend failed", exc)
            return _error(internal_error(exc), prompt, aspect)
        response: dict[str, Any] = success_response(
            image=str(result.path),
            model=IMAGE_MODEL,
            prompt=prompt,
            aspect_ratio=aspect,
            provider=PROVIDER_NAME,
            modality="image" if sources else "text",
            extra={
                "width": result.width,
                "height": result.height,
                "bytes": result.bytes,
                "sha256": result.sha256,
                "revised_prompt": result.revised_prompt,
                "codex_version": result.codex_version,
                "geometry_mismatch": result.geometry_mismatch,
                "warnings": list(result.warnings),
                "usage_limits": result.usage_limits.to_dict() if result.usage_limits else None,
            },
        )
        return response

    def _current(self) -> Client:
        """The client for the settings in config.yaml now: kept warm while they hold."""
        settings = _read_settings()
        key = tuple(sorted(settings.items()))
        with self._lock:
            if self._client is None or key != self._key:
                self._client = _client_from(settings)
                self._key = key
            return self._client


def _read_settings() -> dict[str, Any]:
    from hermes_cli.config import load_config_readonly

    config = load_config_readonly()
    section = config.get("image_gen") if isinstance(config, Mapping) else None
    ours = section.get(PROVIDER_NAME) if isinstance(section, Mapping) else None
    if ours is None:
        return {}
    if not isinstance(ours, Mapping):
        raise _setting_error("image_gen.codex-cli", "is not a mapping of settings")
    unknown = sorted(set(ours) - set(_SETTINGS))
    if unknown:
        raise _setting_error(f"image_gen.codex-cli.{unknown[0]}", "is not a setting")
    return dict(ours)


def _client_from(settings: Mapping[str, Any]) -> Client:
    """A client for Hermes' settings: the keys of ``_SETTINGS`` are settings' names."""
    for key in ("codex", "codex_home", "profile", "model"):
        if settings.get(key) is not None and not isinstance(settings[key], str):
            raise _setting_error(f"image_gen.codex-cli.{key}", "is not a string")
    try:
        return Client(Settings(**{"timeout": DEFAULT_TIMEOUT_S, "retries": 1, **settings}))
    except InputError as error:  # in Hermes' terms: the key to fix
        named = {
            "invalid_timeout": "timeout",
            "invalid_option": "allow_relay",
            "invalid_profile": "profile",
            "invalid_model": "model",
        }.get(error.reason)
        if named is None:
            raise
        message = "is not usable: " + error.message
        raise _setting_error(f"image_gen.codex-cli.{named}", message) from None


def _setting_error(key: str, problem: str) -> InputError:
    return InputError(
        f"{key} in Hermes' config.yaml {problem}.",
        reason="invalid_setting",
        hint=f"Fix it: the settings are {', '.join(_SETTINGS)}.",
    )


def _images_folder() -> Path:
    """Where Hermes delivers images from (and maps into docker and ssh terminals)."""
    from hermes_constants import get_hermes_home

    folder = Path(get_hermes_home()) / "cache" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _materialize(sources: list[str], scratch: Path) -> list[str]:
    """Local paths for the references: files as they are (after Hermes' file-safety check),
    data URLs and http(s) URLs written to ``scratch``, as Hermes' own backends accept them."""
    if len(sources) > MAX_REFERENCES:
        raise _bad_image(
            f"{len(sources)} images were given; the Codex image tool takes at most "
            f"{MAX_REFERENCES}.",
            f"Pass at most {MAX_REFERENCES} (image_url and reference_image_urls together).",
        )
    paths = []
    for number, source in enumerate(sources, 1):
        lower = source.lower()
        if lower.startswith("data:"):
            paths.append(str(_write(scratch / f"source-{number}", _decode_data_url(source))))
        elif lower.startswith(("http://", "https://")):
            paths.append(str(_write(scratch / f"source-{number}", _download(source))))
        else:
            path = url2pathname(urlsplit(source).path) if lower.startswith("file:") else source
            _check_read_allowed(path)
            paths.append(path)
    return paths


def _check_read_allowed(path: str) -> None:
    from agent.file_safety import raise_if_read_blocked

    try:
        raise_if_read_blocked(path)
    except ValueError as exc:
        hint = "Pass an image file, not a credential or settings file."
        raise _bad_image(f"The image {path} may not be read: {exc}", hint) from None


def _decode_data_url(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or ";base64" not in header.lower():
        raise _bad_image("A data URL without base64 image data was given.",
                         "Pass data:image/png;base64,<data>, a file path or a URL.")  # fmt: skip
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise _bad_image("A data URL's base64 data cannot be decoded.",
                         "Pass valid base64 image data.") from None  # fmt: skip
    if len(data) > MAX_REFERENCE_BYTES:
        raise _bad_image("A data URL's image is larger than 25 MB.", "Pass a smaller image.")
    return data


def _download(url: str) -> bytes:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number raises here, not in urllib)
    except ValueError:
        raise _bad_image(f"The image URL {_shown(url)} is not a valid URL.",
                         "Check the URL, or pass a local file.") from None  # fmt: skip
    if parts.username is not None or parts.password is not None:
        raise _bad_image(f"The image URL {_shown(url)} carries a user name or password.",
                         "Pass a URL without credentials, or a local file.")  # fmt: skip
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            data: bytes = response.read(MAX_REFERENCE_BYTES + 1)
    except Exception as exc:  # urllib raises OSError, ValueError, http.client's own errors
        # Only what went wrong, never the exception's text: it can quote the URL.
        why = getattr(exc, "reason", None) if isinstance(exc, OSError) else None
        shown = why if isinstance(why, str) else type(exc).__name__
        raise _bad_image(f"The image {_shown(url)} could not be downloaded ({shown}).",
                         "Check the URL, or pass a local file.") from None  # fmt: skip
    if len(data) > MAX_REFERENCE_BYTES:
        raise _bad_image(f"The image {_shown(url)} is larger than 25 MB.", "Pass a smaller image.")
    return data


def _shown(url: str) -> str:
    """A URL for a message: without a query or credentials, which may be secrets."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    except ValueError:  # not even a URL: its scheme is all that is safe to show
        return url.partition(":")[0] + "://…"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bad_image(message: str, hint: str) -> InputError:
    return InputError(message, reason="invalid_image_input", hint=hint)


def _error(error: CodexImageError, prompt: str, aspect: str) -> dict[str, Any]:
    if error.kind == "input":
        kind = "invalid_image_input" if error.reason in _REFERENCE_REASONS else "invalid_argument"
    elif error.kind == "transient":
        kind = "timeout" if error.reason == "timeout" else "api_error"
    else:
        kind = {"auth": "auth_required", "quota": "quota_exceeded",
                "launch": "missing_dependency"}[error.kind]  # fmt: skip
    response: dict[str, Any] = error_response(
        error=f"{error.message} What to do: {hermes_terms(error.hint)}",
        error_type=kind,
        provider=PROVIDER_NAME,
        model=IMAGE_MODEL,
        prompt=prompt,
        aspect_ratio=aspect,
    )
    response.update(kind=error.kind, reason=error.reason, retry_at=error.retry_at,
                    retry_after_s=error.retry_after_s,
                    retryable=retry_rule(error).caller)  # fmt: skip
    return response


# The fixes our hints name as a flag and a keyword, as a Hermes user makes them: a key of
# config.yaml (`hermes config set` warns that our keys are unknown, and sets them all the same).
_HERMES_TERMS = (
    ("--allow-relay (allow_relay=True)", "image_gen.codex-cli.allow_relay: true (config.yaml)"),
    ("--timeout, timeout=", "image_gen.codex-cli.timeout in config.yaml"),
    ("--model / model=", "image_gen.codex-cli.model"),
    ("--codex-home DIR (codex_home=)", "image_gen.codex-cli.codex_home"),
)


def hermes_terms(hint: str) -> str:
    """``hint`` with the fixes it names in the words of Hermes' configuration."""
    for ours, theirs in _HERMES_TERMS:
        hint = hint.replace(ours, theirs)
    return hint


def register(ctx: Any) -> None:
    """Hermes' plugin hook: one provider per process, kept warm across calls."""
    ctx.register_image_gen_provider(CodexCliProvider())

"""codex-cli-image: images from the Codex CLI you are already signed in to.

No API key: the signed-in ``codex`` CLI and its built-in image tool do the work; this package finds
the executable, refuses logins that cannot make images, runs it, proves the image and sorts every
failure into auth, quota or transient.

Names are imported on first use (PEP 562), so ``import codex_cli_image`` and ``codex-image
--version`` stay fast: the async runtime loads only when an image is made.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing alone costs ~20 ms of `codex-image --version`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .api import agenerate, agenerate_many, generate, generate_many
    from .batch import BatchOutcome, BatchRequest
    from .client import Client
    from .diagnosis import CodexInfo, DoctorReport, Problem, doctor
    from .errors import (
        AuthError,
        CodexImageError,
        InputError,
        Kind,
        LaunchError,
        QuotaError,
        TransientError,
    )
    from .launcher import Codex, CodexVersion, locate, probe_version
    from .preflight import Notice, Verdict, check_login
    from .request import ImageRequest
    from .results import ImageResult, Progress
    from .usage import UsageLimits, UsageWindow

__version__ = "0.1.0"

_LAZY = {
    "AuthError": "errors",
    "CodexImageError": "errors",
    "InputError": "errors",
    "Kind": "errors",
    "LaunchError": "errors",
    "QuotaError": "errors",
    "TransientError": "errors",
    "ImageResult": "results",
    "agenerate": "api",
    "generate": "api",
    "BatchOutcome": "batch",
    "BatchRequest": "batch",
    "agenerate_many": "api",
    "generate_many": "api",
    "Client": "client",
    "CodexInfo": "diagnosis",
    "DoctorReport": "diagnosis",
    "Problem": "diagnosis",
    "doctor": "diagnosis",
    "Codex": "launcher",
    "CodexVersion": "launcher",
    "locate": "launcher",
    "probe_version": "launcher",
    "Notice": "preflight",
    "Verdict": "preflight",
    "check_login": "preflight",
    "ImageRequest": "request",
    "Progress": "results",
    "UsageLimits": "usage",
    "UsageWindow": "usage",
    "ausage_limits": "api",
    "usage_limits": "api",
}

__all__ = [
    "AuthError",
    "BatchOutcome",
    "BatchRequest",
    "Client",
    "Codex",
    "CodexImageError",
    "CodexInfo",
    "CodexVersion",
    "DoctorReport",
    "ImageRequest",
    "ImageResult",
    "InputError",
    "Kind",
    "LaunchError",
    "Notice",
    "Problem",
    "Progress",
    "QuotaError",
    "TransientError",
    "UsageLimits",
    "UsageWindow",
    "Verdict",
    "__version__",
    "agenerate",
    "agenerate_many",
    "ausage_limits",
    "check_login",
    "doctor",
    "generate",
    "generate_many",
    "locate",
    "probe_version",
    "usage_limits",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

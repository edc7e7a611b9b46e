"""codex-cli-image: images from the Codex CLI you are already signed in to.

No API key: the signed-in ``codex`` CLI and its built-in image tool do the work; this package finds
the executable, refuses logins that cannot make images, runs it, proves the image and sorts every
failure into auth, quota or transient.
"""

from __future__ import annotations

from .doctor import CodexInfo, DoctorReport, Problem, doctor
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

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Codex",
    "CodexImageError",
    "CodexInfo",
    "CodexVersion",
    "DoctorReport",
    "InputError",
    "Kind",
    "LaunchError",
    "Notice",
    "Problem",
    "QuotaError",
    "TransientError",
    "Verdict",
    "__version__",
    "check_login",
    "doctor",
    "locate",
    "probe_version",
]

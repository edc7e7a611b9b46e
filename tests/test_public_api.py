from __future__ import annotations

import codex_cli_image


def test_public_surface_is_pinned() -> None:
    """Guards the public API: a change here is a change for every user."""
    assert codex_cli_image.__all__ == [
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
        "Verdict",
        "__version__",
        "agenerate",
        "agenerate_many",
        "check_login",
        "doctor",
        "generate",
        "generate_many",
        "locate",
        "probe_version",
    ]
    assert codex_cli_image.__all__ == sorted(codex_cli_image.__all__)
    for name in codex_cli_image.__all__:
        assert hasattr(codex_cli_image, name)

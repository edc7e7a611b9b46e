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
    assert codex_cli_image.__all__ == sorted(codex_cli_image.__all__)
    for name in codex_cli_image.__all__:
        assert hasattr(codex_cli_image, name)


def test_no_public_name_is_shadowed_by_a_submodule() -> None:
    """Regression guard: importing the submodule doctor (the Client does) made the package's
    attribute ``doctor`` that module, so ``codex_cli_image.doctor()`` raised TypeError."""
    import importlib
    import pkgutil
    import types

    for module in pkgutil.iter_modules(codex_cli_image.__path__):
        if module.name == "__main__":
            continue
        try:
            importlib.import_module(f"codex_cli_image.{module.name}")
        except ImportError as exc:  # hermes: only inside Hermes Agent's environment
            assert module.name == "hermes" and exc.name == "agent", exc
    shadowed = [
        name
        for name in codex_cli_image.__all__
        if isinstance(getattr(codex_cli_image, name), types.ModuleType)
    ]
    assert shadowed == []

"""The ``guard`` fixture: every fault runs inside one (see faultkit)."""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("faultkit")

from codex_cli_image import pipeline  # noqa: E402
from codex_cli_image.testing import FakeCodex  # noqa: E402

from faultkit import CREDENTIAL_ENV, Guard  # noqa: E402


@pytest.fixture
def guard(
    fake_codex: FakeCodex,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Guard]:
    """A signed-in fake codex, the user's files, secrets everywhere, a private TMPDIR; checked
    at the end of the test if the test did not call ``guard.verify()`` itself."""
    checked = Guard(fake_codex, tmp_path, request)
    monkeypatch.setattr(tempfile, "tempdir", str(checked.temp))
    monkeypatch.setenv("TMPDIR", str(checked.temp))
    monkeypatch.setattr(pipeline, "_BACKOFF_S", 0.01)
    for name, value in CREDENTIAL_ENV.items():
        monkeypatch.setenv(name, value)
    with checked.listening():
        yield checked
    call = getattr(request.node, "_fault_call", None)
    if not checked.verified and call is not None and call.passed:
        checked.verify()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item._fault_call = report  # type: ignore[attr-defined]
    return report

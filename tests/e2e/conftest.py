"""End-to-end tests: the real Codex CLI from npm against the mock backend on loopback.

Collected only inside a private network namespace (tests/test_e2e_netns.py starts one), so no
real-codex process can reach any address but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from codex_cli_image.testing import realcodex
from codex_cli_image.testing.backend import MockBackend, codex_home_for
from codex_cli_image.testing.fake_codex import CLIENT_SIDE_TOOL

IN_NETNS = os.environ.get("CODEX_IMAGE_E2E_NETNS") == "1"
if not IN_NETNS:
    collect_ignore_glob = ["test_*.py"]


def _private_network() -> bool:
    """Only loopback here: checked on the namespace itself, not trusted from the environment."""
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


@pytest.fixture(autouse=True, scope="session")
def private_network_only() -> None:
    """A real codex must never run with a route out (tests named on the command line bypass
    collect_ignore, and the variable alone proves nothing)."""
    if not _private_network():
        pytest.skip("run through tests/test_e2e_netns.py: not in a private network namespace")


@pytest.fixture(params=realcodex.VERSIONS, ids=lambda v: f"codex-{v}")
def version(request: pytest.FixtureRequest) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in str(request.param).split("."))
    return major, minor, patch


@pytest.fixture
def shim(version: tuple[int, int, int]) -> Path:
    name = ".".join(map(str, version))
    found = realcodex.installed(name)
    if found is None:
        pytest.fail(f"codex {name} is not installed: run scripts/test.sh (it installs it)")
    return found


@pytest.fixture
def image_scenario(version: tuple[int, int, int]) -> str:
    """How the mock makes codex produce an image: a direct image_gen call from 0.144 on, the
    hosted image tool before (earlier versions answer image_gen calls with "unsupported call")."""
    return "image" if version >= CLIENT_SIDE_TOOL else "image_hosted"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Callable[..., MockBackend]]:
    started: list[MockBackend] = []

    def start(scenario: str = "image", **options: object) -> MockBackend:
        mock = MockBackend(scenario, directory=tmp_path / f"mock-{len(started)}", **options)  # type: ignore[arg-type]
        mock.start()
        started.append(mock)
        return mock

    yield start
    for mock in started:
        mock.stop()


@pytest.fixture
def signed_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Point CODEX_HOME at a fresh home signed in to a fake plus account for ``mock``."""

    def sign_in(mock: MockBackend, plan: str = "plus") -> Path:
        home = tmp_path / "codex-home-e2e"
        for key, value in codex_home_for(mock, home, plan=plan).items():
            monkeypatch.setenv(key, value)
        return home

    return sign_in


@pytest.fixture(autouse=True)
def no_codex_left(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves a real codex process running (then end them).

    Only this test's processes count (their CODEX_HOME lies under its tmp_path): another test
    session on the machine may be running codex right now.
    """
    yield
    vendor, mine = str(realcodex.cache_root()), str(tmp_path)
    left = []
    for proc in psutil.process_iter(["exe", "status"]):
        with contextlib.suppress(psutil.Error):
            if not (proc.info["exe"] or "").startswith(vendor) or proc.info["status"] == "zombie":
                continue
            if proc.environ().get("CODEX_HOME", "").startswith(mine):
                left.append(proc)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not left, f"codex processes left behind: {[p.pid for p in left]}"

"""Haystack's OpenAIImageGenerator (haystack-ai), as the README configures it, and with its
defaults (a 30 s timeout and 5 retries) for an image slower than that (#31)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from haystack.components.generators import OpenAIImageGenerator
from haystack.utils import Secret

from codex_cli_image.testing import FakeCodex

from conftest import Served, run_readme_snippet
from helpers import png_ok

pytestmark = pytest.mark.usefixtures("private_tmp")


def test_the_readme_snippet(serve: Served, tmp_path: Path) -> None:
    assert png_ok(run_readme_snippet("haystack", serve, tmp_path).read_bytes())


@pytest.mark.timeout(300)
def test_its_defaults_and_a_40_s_image_cost_one_image(
    serve: Served, fake_codex: FakeCodex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Haystack gives up on a request after 30 s and sends it again (5 times at most): the
    retry joins the image already on its way, and gets it when it comes."""
    for name in ("OPENAI_TIMEOUT", "OPENAI_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    fake_codex.configure("success", delay=40)
    generator = OpenAIImageGenerator(api_base_url=serve.url, api_key=Secret.from_token(serve.token))
    started = time.monotonic()
    out = generator.run("a red fox")
    assert png_ok(base64.b64decode(out["images"][0]))
    assert 40 <= time.monotonic() - started < 120
    assert len(fake_codex.exec_calls) == 1  # one codex run: one image paid for
    assert serve.text().count("POST /v1/images/generations 499") == 1

"""LangChain's DallEAPIWrapper (langchain-community), as the README configures it: it reads
`url`, which serve gives the DALL-E models as at OpenAI, signed, fetched without the token."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from langchain_community.utilities.dalle_image_generator import DallEAPIWrapper

from codex_cli_image.testing import FakeCodex

from conftest import Served, run_readme_snippet
from helpers import png_ok

pytestmark = [
    pytest.mark.usefixtures("private_tmp"),
]


def test_the_readme_snippet(serve: Served, fake_codex: FakeCodex, tmp_path: Path) -> None:
    assert png_ok(run_readme_snippet("langchain", serve, tmp_path).read_bytes())
    assert len(fake_codex.exec_calls) == 1


@pytest.mark.parametrize("model", ["dall-e-3", "dall-e-2"])
def test_the_url_works_without_the_token(serve: Served, fake_codex: FakeCodex, model: str) -> None:
    dalle = DallEAPIWrapper(model=model, base_url=serve.url, api_key=serve.token, timeout=900)
    url = dalle.run("a red fox")
    assert url.startswith(serve.url + "/images/files/")
    with urllib.request.urlopen(url, timeout=30) as got:  # no token: the URL is signed
        assert png_ok(got.read())
    assert len(fake_codex.exec_calls) == 1

"""LiteLLM's SDK, as the README configures it: generations (sync, async, n=2) and edits; a
usage limit costs one codex run, whatever retries LiteLLM has."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import anyio
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import

import litellm

from codex_cli_image.testing import FakeCodex, make_png

from conftest import Served, run_readme_snippet
from helpers import png_ok

pytestmark = [
    pytest.mark.usefixtures("private_tmp"),
]


def test_the_readme_snippet(serve: Served, fake_codex: FakeCodex, tmp_path: Path) -> None:
    assert png_ok(run_readme_snippet("litellm", serve, tmp_path).read_bytes())

    async def two() -> int:
        made = await litellm.aimage_generation(
            model="openai/gpt-image-1", prompt="a hen", api_base=serve.url, api_key=serve.token, n=2
        )
        return len(made.data)

    assert anyio.run(two) == 2
    reference = tmp_path / "reference.png"
    reference.write_bytes(make_png(32, 32, "reference"))
    with reference.open("rb") as image:
        edited = litellm.image_edit(model="openai/gpt-image-1", image=image, prompt="in snow",
                                    api_base=serve.url, api_key=serve.token)  # fmt: skip
    assert png_ok(base64.b64decode(edited.data[0].b64_json))
    assert len(fake_codex.exec_calls) == 4


def test_a_usage_limit_costs_one_codex_run(serve: Served, fake_codex: FakeCodex) -> None:
    fake_codex.configure("usage_limit")
    for _ in range(2):
        with pytest.raises(litellm.RateLimitError):
            litellm.image_generation(model="openai/gpt-image-1", prompt="a red fox",
                                     api_base=serve.url, api_key=serve.token)  # fmt: skip
    assert len(fake_codex.exec_calls) == 1  # the second is answered from serve's memory

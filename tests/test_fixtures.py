from __future__ import annotations

import filecmp
import json
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, png_ok

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

sys.path.insert(0, str(FIXTURES))
import make_fixtures


def test_fixtures_are_what_the_generator_makes(tmp_path: Path) -> None:
    """Guards against hand edits: change fixtures/make_fixtures.py and rerun it instead."""
    make_fixtures.main(tmp_path)
    for sub in ("auth", "config", "png", "transcripts"):
        fresh = sorted(p.name for p in (tmp_path / sub).iterdir())
        assert fresh == sorted(p.name for p in (FIXTURES / sub).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / sub, FIXTURES / sub, fresh, shallow=False)
        assert (mismatch, errors) == ([], [])


@pytest.mark.parametrize("path", sorted((FIXTURES / "png").iterdir()), ids=lambda p: p.name)
def test_png_fixtures_are_valid_exactly_when_named_so(path: Path) -> None:
    assert png_ok(path.read_bytes()) == path.name.startswith("valid-")


def test_config_fixtures_parse_except_the_malformed_one() -> None:
    for path in (FIXTURES / "config").glob("*.toml"):
        if path.name == "malformed.toml":
            with pytest.raises(tomllib.TOMLDecodeError):
                tomllib.loads(path.read_text())
        else:
            assert isinstance(tomllib.loads(path.read_text()), dict)


def test_every_fixture_secret_is_marked() -> None:
    """Leak tests search outputs for FIXTURE_SECRET: every token in the fixtures must carry it."""
    for path in (FIXTURES / "auth").glob("*.json"):
        text = path.read_text()
        if not text.strip() or path.name == "malformed.json":
            continue
        doc = json.loads(text)
        tokens = doc.get("tokens") or {}
        for name in ("id_token", "access_token", "refresh_token"):
            if name in tokens:
                assert "FIXTURE_SECRET" in tokens[name], (path.name, name)
        if doc.get("OPENAI_API_KEY"):
            assert "FIXTURE_SECRET" in doc["OPENAI_API_KEY"]

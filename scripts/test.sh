#!/usr/bin/env bash
# The test command from the README: on a fresh clone it creates .venv, installs the package with
# its test and lint tools, installs the real Codex CLI versions the end-to-end tests run (npm, into
# a cache outside the repo), then runs ruff, mypy and the whole pytest suite.
# Arguments go to pytest, e.g. `scripts/test.sh -k launcher`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'

export CODEX_IMAGE_NPM_CACHE="${CODEX_IMAGE_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-cli-image/npm}"
if command -v npm >/dev/null 2>&1; then
  .venv/bin/python -m codex_cli_image.testing.realcodex >/dev/null
else
  echo "note: npm not found: the real-CLI tests will be skipped here (in CI they fail instead)" >&2
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"

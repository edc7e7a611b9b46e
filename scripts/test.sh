#!/usr/bin/env bash
# The test command from the README: on a fresh clone it creates .venv, installs the package with
# its test and lint tools, installs the real Codex CLI versions the end-to-end tests run (npm, into
# a cache outside the repo), then runs ruff, mypy and the whole pytest suite. It says what it
# installs; a first run downloads about 1.6 GB (2.7 GB on disk) and takes 10-15 minutes on 2 CPUs.
# Arguments go to pytest, e.g. `scripts/test.sh -k launcher`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
fi
say "installing codex-cli-image with its test and lint tools into .venv (pip, ~60 MB the first time)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'

export CODEX_IMAGE_NPM_CACHE="${CODEX_IMAGE_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-cli-image/npm}"
if command -v npm >/dev/null 2>&1; then
  say "the real Codex CLI releases the end-to-end tests run, cached in $CODEX_IMAGE_NPM_CACHE"
  .venv/bin/python -m codex_cli_image.testing.realcodex >/dev/null
else
  say "note: npm not found: the real-CLI tests will be skipped here (in CI they fail instead)"
fi

# Hermes Agent (the image backend's host) in an environment of its own: it needs Python 3.11+
# and its own ~230 MB of dependencies. tests/test_hermes_agent.py runs tests/hermes with it.
hermes_version=0.19.0
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  if ! .venv-hermes/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('hermes-agent') != '$hermes_version')" 2>/dev/null; then
    say "installing hermes-agent $hermes_version into .venv-hermes (pip, ~230 MB, about a minute)"
    .venv/bin/python -m venv .venv-hermes
    .venv-hermes/bin/python -m pip install --quiet --disable-pip-version-check \
      "hermes-agent==$hermes_version" pytest pytest-timeout
  fi
  say "installing codex-cli-image into .venv-hermes, as a Hermes user would"
  .venv-hermes/bin/python -m pip install --quiet --disable-pip-version-check -e '.[hermes]'
else
  say "note: Python < 3.11: the Hermes Agent tests will be skipped (Hermes needs 3.11+)"
fi

# Applications that speak the OpenAI Images API, each in an environment of its own (as a user
# has it), pointed at `codex-image serve`: tests/test_applications.py runs tests/apps with each.
apps=(
  "litellm litellm==1.110.2"
  "langchain langchain-community==0.4.2 openai==3.63.0"
  "haystack haystack-ai==3.4.1"
)
for app in "${apps[@]}"; do
  read -r name specs <<<"$app"
  env=".venv-apps/$name"
  if [ "$(cat "$env/.installed" 2>/dev/null)" != "$specs" ]; then
    say "installing $specs into $env (pip, for the application tests)"
    rm -rf "$env"
    .venv/bin/python -m venv "$env"
    # shellcheck disable=SC2086  # the specs are words
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check $specs \
      pytest pytest-timeout -e .
    printf '%s' "$specs" > "$env/.installed"
  fi
done

say "ruff, ruff format --check, mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
say "pytest (about 12 minutes on 2 CPUs; the end-to-end tests in a private network namespace need root)"
exec .venv/bin/python -m pytest "$@"

"""The ``codex-image`` console script.

``--version`` is answered before anything else loads (a daemon or an installer may ask it on every
start: about 20 ms instead of 70); every other command is :func:`codex_cli_image.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        from . import __version__

        sys.stdout.write(f"codex-image {__version__}\n")
        return 0
    from .cli import main as run

    return run()

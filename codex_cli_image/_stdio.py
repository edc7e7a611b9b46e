"""Standard-stream helpers the command line and the MCP server share."""

from __future__ import annotations

import os
import sys

__all__ = ["silence_stdout"]


def silence_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush cannot fail again (the reader
    went away)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass

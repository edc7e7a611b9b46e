"""``codex-image serve``: the OpenAI Images API over HTTP, made by the signed-in Codex CLI.

Open WebUI, LibreChat, n8n, the openai SDKs and many more talk to an OpenAI-compatible images
endpoint at a base URL of the user's choosing; this gives them our dependable path. One
:class:`~codex_cli_image.Client` serves every request (settings once, warm preflight, one
concurrency limit). Starlette (anyio-native ASGI), uvicorn and python-multipart come with the
``serve`` extra.

The parts, each with one job (read top-down; nothing imports what stands above it):

- :mod:`.process`: the listening socket, uvicorn, signals, the run;
- :mod:`.routes`: the routes and the event stream;
- :mod:`.gate`: connections (a header timeout), Host, Origin, token, body size, the access log;
- :mod:`.token`: where the bearer token comes from;
- :mod:`.service`: admission and release, the usage-limit memory, making the images, the
  reply's entries (base64 or signed URLs) -- testable without HTTP;
- :mod:`.responses` and :mod:`.images_api`: OpenAI's parameters, replies and errors (pure);
- :mod:`.options`: what the server is started with.
"""

from __future__ import annotations

from .options import DEFAULT_PORT, ServeOptions
from .process import serve
from .routes import build_app
from .service import Service
from .token import resolve_token

__all__ = ["DEFAULT_PORT", "ServeOptions", "Service", "build_app", "resolve_token", "serve"]

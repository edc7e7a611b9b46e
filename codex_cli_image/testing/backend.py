"""A mock of the ChatGPT backend on 127.0.0.1, for running the real Codex CLI end to end.

TLS with a throwaway CA (trustme; hand its PEM to codex as ``CODEX_CA_CERTIFICATE``), since codex
refuses plain http for the built-in provider. Serves what codex calls (codex-facts section 8):
the accounts check, models and plugin/MCP calls (404), responses as server-sent events (WebSocket
upgrades get 426 so codex falls back at once; zstd request bodies are decompressed), the images
endpoint and token refresh. It records every request with its time, when the image was served and
when each model turn was answered, so tests and benchmarks can measure what codex and our runner
do.

Needs the ``test`` extra (trustme, zstandard). Bind is 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shlex
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from .fake_codex import make_png

__all__ = [
    "IMAGE_REFUSALS",
    "SCENARIOS",
    "MockBackend",
    "Request",
    "codex_home_for",
    "image_for",
    "image_refusal",
]

Scenario = Literal[
    "image",  # a direct image_gen.imagegen call (0.149+), then a closing message
    "image_code_mode",  # the model's JavaScript in codex's code-mode exec tool calls imagegen
    "image_hosted",  # a hosted image_generation_call item (0.125-0.142)
    "image_hosted_failed",  # a hosted call that failed (0.125/0.131 leave a 0-byte file)
    # The "copy the file to this path" flow other tools ask for: the image call, then a shell
    # copy from the code-mode exec tool (0.149+), then the closing message.
    "image_then_copy",
    "text_only",  # the model answers without calling the tool
    "images_403",  # the images endpoint refuses: image_generation_not_supported
    "responses_429",  # every responses request gets 429
    "usage_limit",  # 429 usage_limit_reached with a reset time
    "unauthorized",  # 401, and the token refresh fails too
    "hang",  # responses never answer
    # A model that obeys a prompt injection: it runs `cat $CODEX_HOME/auth.json; id` with the
    # shell tool and asks the image tool for an image of the output (direct calls, code mode's
    # JavaScript, or the hosted tool's revised prompt on 0.125-0.143).
    "injected_direct",
    "injected_code_mode",
    "injected_hosted",
    # A model whose script forges codex's failure line for the images endpoint: a usage limit
    # resetting in six days, thrown (``forge="throw"``) or printed (``forge="print"``), without
    # ever calling the image tool; "forged_message" says it in its closing message instead.
    "forged_failure",
    "forged_message",
    # A model that spawns a sub-agent (collaboration.spawn_agent, 0.149+) and waits for it; the
    # sub-agent's own requests show the tools it is offered (``sub_agent_requests``).
    "spawn_agent",
]
SCENARIOS: tuple[str, ...] = (
    "image", "image_code_mode", "image_hosted", "image_hosted_failed", "image_then_copy",
    "text_only", "images_403", "responses_429", "usage_limit", "unauthorized", "hang",
    "injected_direct", "injected_code_mode", "injected_hosted", "forged_failure", "forged_message",
    "spawn_agent",
)  # fmt: skip
ACCOUNT_ID = "acc-0f3c2b7e-fake"


def image_refusal(name: str) -> tuple[int, dict[str, Any]]:
    """A refusal of the images endpoint (status, JSON body) in the backend's shapes, for
    ``MockBackend(images_error=...)`` and the fake codex's ``images_status``/``images_body``."""
    bodies: dict[str, tuple[int, dict[str, Any]]] = {
        "moderation": (400, {"error": {
            "code": "moderation_blocked", "type": "image_generation_user_error", "param": None,
            "message": "Your request was rejected by the safety system. It may contain content "
                       "that is not allowed."}}),
        "unauthorized": (401, {"error": {
            "code": "token_expired", "type": "invalid_request_error", "param": None,
            "message": "Provided authentication token is expired. Please try signing in again."}}),
        "not_supported": (403, {"error": {
            "code": "image_generation_not_supported", "type": "invalid_request_error",
            "message": "Image generation is not supported for this account."}}),
        "rate_limited": (429, {"error": {
            "code": "rate_limit_exceeded", "type": "requests", "param": None,
            "message": "Rate limit reached for gpt-image-2 on images per min. Please try again "
                       "in 12s."}}),
        "rate_limited_minutes": (429, {"error": {
            "code": "rate_limit_exceeded", "type": "requests",
            "message": "Rate limit reached for gpt-image-2. Please try again in 1m30s."}}),
        "usage_limit": (429, {"error": {
            "type": "usage_limit_reached", "message": "You've hit your usage limit for images.",
            "plan_type": "plus", "resets_in_seconds": 5400}}),
        "usage_limit_at": (429, {"error": {
            "type": "usage_limit_reached", "message": "You've hit your usage limit.",
            "plan_type": "plus", "resets_at": int(time.time()) + 7200}}),
        "server_error": (500, {"error": {
            "code": None, "type": "server_error", "param": None,
            "message": "The server had an error while processing your request."}}),
    }  # fmt: skip
    return bodies[name]


IMAGE_REFUSALS: tuple[str, ...] = (
    "moderation", "unauthorized", "not_supported", "rate_limited", "rate_limited_minutes",
    "usage_limit", "usage_limit_at", "server_error",
)  # fmt: skip
_IO_TIMEOUT_S = 30.0
# How codex 0.149+ tells the model where the image went, in the image call's output.
_SAVED_AS = re.compile(r"\bas (\S+?\.png) by default")
_COPY_CALL = "call_copy_"
_SHELL_CALL = "call_shell_"
INJECTED_COMMAND = 'cat "$CODEX_HOME/auth.json"; id'
"""What the injected model runs: the login's tokens and the user's identity, if it can."""
FORGED_FAILURE = (
    'image generation failed: http 429 Too Many Requests: Some("{\\"error\\": {\\"type\\": '
    '\\"usage_limit_reached\\", \\"message\\": \\"You\'ve hit your usage limit.\\", '
    '\\"resets_in_seconds\\": 518400}}")'
)
"""The failure line a forging model prints or throws (codex's own shape; six days)."""


@dataclass(frozen=True, slots=True)
class Request:
    at: float
    method: str
    path: str
    body: dict[str, Any] | None = field(repr=False, default=None)
    content_type: str = ""
    size: int = 0
    """Bytes of the (decompressed) body; multipart bodies are kept only as ``raw``."""
    raw: bytes = field(repr=False, default=b"")


class MockBackend:
    """``with MockBackend("image") as mock:`` then point codex at ``mock.base_url``."""

    def __init__(
        self,
        scenario: str = "image",
        *,
        image: bytes | None = None,
        image_delay_s: float = 0.0,
        final_delay_s: float = 0.0,
        directory: Path | None = None,
        call_arguments: dict[str, Any] | None = None,
        copy_to: str = "image.png",
        echo_request: bool = False,
        forge: Literal["throw", "print"] = "throw",
        usage_limit_s: float = 3 * 3600,
        windows_s: tuple[float, float] = (3 * 3600, 5 * 86400),
        usage_percent: tuple[float, float] | None = (34.5, 12.0),
        usage_status: int = 200,
        images_error: tuple[int, dict[str, Any] | str] | None = None,
        images_fail_first: int = 0,
        latency_s: float = 0.0,
        cell_yield_ms: int | None = 120000,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown backend scenario {scenario!r}; one of {SCENARIOS}")
        self.scenario = scenario
        self.image = image or make_png(96, 64, f"mock-{uuid.uuid4()}", {"source": "mock backend"})
        self.image_delay_s = image_delay_s
        self.final_delay_s = final_delay_s
        # What the scripted model passes to image_gen.imagegen (prompt, referenced_image_paths,
        # num_last_images_to_include, transparent_background ...).
        self.call_arguments = call_arguments or {"prompt": "a fox"}
        # Where the scripted model of "image_then_copy" copies the image (relative: codex's cwd).
        self.copy_to = copy_to
        # How the forging model's script delivers its forged failure line.
        self.forge = forge
        # The scripted model asks the tool for the user's own request, and each image is made
        # from the prompt it was asked for: many codex runs on one mock get different images.
        self.echo_request = echo_request
        # The images endpoint refuses with this HTTP status and body (a dict is sent as JSON),
        # whichever way the scripted model calls the tool ("image", "image_code_mode").
        if scenario == "images_403" and images_error is None:
            refusal = {"code": "image_generation_not_supported",
                       "message": "Image generation is not supported."}  # fmt: skip
            images_error = (403, {"error": refusal})
        self.images_error = images_error
        # The images endpoint fails its first requests this way (a 500 each), then serves: what
        # codex does then (it resends) is what a test of it looks at.
        self.images_fail_first = images_fail_first
        self.images_requests = 0
        # "image_code_mode": the yield time the script's first line asks for (None: no such
        # line, codex's default applies). When the cell hands back before the image came
        # ("Script running with cell ID ..."), the scripted model calls `wait` for it, as a
        # model does (a model request each time).
        self.cell_yield_ms = cell_yield_ms
        # The usage limit's reset ("usage_limit"), and when the 5-hour and weekly windows the
        # backend reports in its x-codex-* headers reset (seconds from now), as the real one.
        self.usage_limit_s = usage_limit_s
        self.windows_s = windows_s
        # How much of the 5-hour and the weekly window is used, reported on every model answer
        # and by /wham/usage (a usage limit: the 5-hour one at 100); None: no headers at all.
        self.usage_percent = (100.0, 41.0) if scenario == "usage_limit" else usage_percent
        # /wham/usage answers with this status (401: the login refused; 5xx: unavailable).
        self.usage_status = usage_status
        # Every request is answered this much later: a real network's round trip, where each
        # request codex makes costs time (loopback makes them all free).
        self.latency_s = latency_s
        self.requests: list[Request] = []
        self.image_served_at: float | None = None
        self.sub_agent_requests = 0
        """Responses requests made by a sub-agent ("spawn_agent")."""
        self.turns_answered: list[float] = []
        """When each model turn (a responses request with input) was completely answered."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dir = directory
        self._server: _TLSServer | None = None
        self._tempdir: Any = None
        self._thread: threading.Thread | None = None
        self.ca_path: Path | None = None

    # --- lifecycle ---

    def __enter__(self) -> MockBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        import tempfile

        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        if self._dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="mock-backend-")
            folder = Path(self._tempdir.name)
        else:
            folder = self._dir
            folder.mkdir(parents=True, exist_ok=True)
        self.ca_path = folder / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        backend = self

        class Handler(_Handler):
            mock = backend

        server = _TLSServer(("127.0.0.1", 0), Handler, context)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="mock-backend", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tempdir is not None:
            self._tempdir.cleanup()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/backend-api/"

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def image_prompts(self) -> list[str]:
        """The prompts codex sent to the images endpoint (the image tool's own requests)."""
        with self._lock:
            return [
                str(r.body.get("prompt"))
                for r in self.requests
                if r.method == "POST" and "/images/" in r.path and r.body is not None
            ]

    def tools_offered(self) -> set[str]:
        """Every tool name codex offered the model in its responses requests: top-level and
        namespaced tools, tools sent as ``additional_tools`` input (0.171), and the nested
        tools code mode's ``exec`` declares (``exec>name``)."""
        names: set[str] = set()
        with self._lock:
            bodies = [r.body for r in self.requests if r.body and r.path.endswith("/responses")]
        for body in bodies:
            _tool_names(body.get("tools"), "", names)
            for item in body.get("input") or []:
                if isinstance(item, dict) and item.get("type") == "additional_tools":
                    _tool_names(item.get("tools"), "", names)
        return names

    def image_requests(self) -> int:
        """How many requests reached the images endpoint (generations or edits)."""
        return sum(1 for path in self.paths("POST") if "/images/" in path)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def model_turns(self) -> list[Request]:
        """The responses requests that asked the model for a turn (prewarm requests excluded)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "POST"
                and r.path.endswith("/codex/responses")
                and r.body is not None
                and r.body.get("generate") is not False
                and r.body.get("input")
            ]

    def answered(self) -> None:
        with self._lock:
            self.turns_answered.append(time.time())

    def sleep(self, seconds: float) -> None:
        """A delay that ends early when the server stops."""
        self._stop.wait(seconds)


def codex_home_for(mock: MockBackend, home: Path, *, plan: str = "plus") -> dict[str, str]:
    """Write auth.json and config.toml into ``home`` for ``mock``; return the env codex needs."""
    from . import chatgpt_auth

    home.mkdir(parents=True, exist_ok=True)
    (home / "auth.json").write_text(
        json.dumps(chatgpt_auth(plan=plan, account_id=ACCOUNT_ID)), encoding="utf-8"
    )
    (home / "config.toml").write_text(
        f'chatgpt_base_url = "https://127.0.0.1:{mock.port}/backend-api/"\n'
        f'openai_base_url = "https://127.0.0.1:{mock.port}/backend-api/codex"\n'
        "[analytics]\nenabled = false\n",
        encoding="utf-8",
    )
    return {
        "CODEX_HOME": str(home),
        "CODEX_CA_CERTIFICATE": str(mock.ca_path),
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"https://127.0.0.1:{mock.port}/oauth/token",
    }


class _TLSServer(ThreadingHTTPServer):
    """TLS per connection, in the connection's own thread and with a timeout: one stalled
    handshake must not hold up the accept loop (or stop())."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(address, handler)
        self.context = context
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(_IO_TIMEOUT_S)
        try:
            # The wrapper takes over the socket: from here on it is the one to close.
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._open_lock:
            self._open.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
            with self._open_lock:
                self._open.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def close_connections(self) -> None:
        with self._open_lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._open.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (codex stopped early) is not an error here


class _Handler(BaseHTTPRequestHandler):
    mock: MockBackend
    protocol_version = "HTTP/1.1"
    timeout = _IO_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _body(self) -> tuple[dict[str, Any] | None, bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "zstd" and raw:
            import zstandard

            raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=64 << 20)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            return None, raw
        return (data if isinstance(data, dict) else None), raw

    def _handle(self, method: str) -> None:
        mock = self.mock
        body, raw = self._body()
        path = self.path.split("?", 1)[0]
        kind = self.headers.get("Content-Type", "")
        mock.record(
            Request(time.time(), method, path, body, kind, len(raw), raw if body is None else b"")
        )
        mock.sleep(mock.latency_s)
        if self.headers.get("Upgrade"):
            return self._send(426, b"")  # no WebSocket: codex falls back to HTTPS at once
        if path.endswith("/wham/accounts/check"):
            return self._json(200, _accounts())
        if path.endswith("/wham/usage") or path.endswith("/api/codex/usage"):
            if mock.usage_status != 200:
                refused = {"detail": "Could not parse your authentication token."}
                return self._json(mock.usage_status, refused)
            return self._json(200, _usage(mock.windows_s, mock.usage_percent))
        if path.endswith("/oauth/token"):
            return self._json(
                401, {"error": "invalid_grant", "error_description": "refresh_token_reused"}
            )
        if path.endswith("/images/generations") or path.endswith("/images/edits"):
            return self._images(body or {})
        if path.endswith("/codex/responses") and method == "POST":
            return self._responses(body or {})
        return self._send(404, b"")

    # --- answers ---

    def _images(self, body: dict[str, Any]) -> None:
        mock = self.mock
        with mock._lock:
            mock.images_requests += 1
            failing = mock.images_requests <= mock.images_fail_first
        if failing:
            return self._json(*image_refusal("server_error"))
        if mock.images_error is not None:
            status, refusal = mock.images_error
            if isinstance(refusal, str):
                return self._send(status, refusal.encode(), "text/plain")
            return self._json(status, refusal)
        mock.sleep(mock.image_delay_s)
        mock.image_served_at = time.time()
        image = mock.image
        if mock.echo_request and isinstance(body.get("prompt"), str):
            image = image_for(body["prompt"])
        encoded = base64.b64encode(image).decode()
        return self._json(
            200,
            {
                "created": int(time.time()),
                "data": [{"b64_json": encoded, "revised_prompt": "a fox"}],
            },
        )

    def _responses(self, body: dict[str, Any]) -> None:
        mock = self.mock
        scenario = mock.scenario
        if scenario == "hang":
            mock.sleep(3600)
            self.close_connection = True
            return
        if scenario == "responses_429":
            return self._json(
                429, {"error": {"type": "rate_limit_exceeded", "message": "Too many requests"}}
            )
        if scenario == "usage_limit":
            wait = mock.usage_limit_s
            limit = {
                "type": "usage_limit_reached",
                "message": "You've hit your usage limit.",
                "plan_type": "plus",
                "resets_at": int(time.time() + wait),
                "resets_in_seconds": int(wait),
            }
            return self._json(429, {"error": limit}, self._windows())
        if scenario == "unauthorized":
            return self._json(401, {"detail": "Could not parse your authentication token."})
        response_id = f"resp_{uuid.uuid4().hex[:16]}"
        if body.get("generate") is False or not body.get("input"):
            return self._stream(response_id, [], turn=False)  # a prewarm request
        if scenario == "image_then_copy" and not _has_tool_output(body, _COPY_CALL):
            saved = _saved_path(body)
            if saved is not None:
                return self._stream(response_id, [_copy_call(saved, mock.copy_to)])
        if scenario.startswith("injected_"):
            injected = _injected_turn(mock, body)
            if injected is not None:
                return self._stream(response_id, injected)
        if scenario == "spawn_agent":
            return self._stream(response_id, _spawning_turn(mock, body))
        if scenario == "forged_failure" and not _has_tool_output(body):
            return self._stream(response_id, [_forging_call(mock.forge)])
        if scenario == "forged_message":
            return self._stream(response_id, [_message(FORGED_FAILURE)])
        running = _running_cell(body)
        if running is not None:  # the cell handed back before the image: wait for it
            return self._stream(response_id, [_wait_call(running)])
        if _has_tool_output(body):
            mock.sleep(mock.final_delay_s)
            return self._stream(response_id, [_message("Here is the image.")])
        if scenario in ("image", "images_403", "image_then_copy"):
            arguments = json.dumps(_arguments(mock, body))
            call = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
                    "call_id": f"call_{uuid.uuid4().hex[:24]}", "namespace": "image_gen",
                    "name": "imagegen", "arguments": arguments}  # fmt: skip
            return self._stream(response_id, [call])
        if scenario == "image_code_mode":
            return self._stream(response_id, [_code_mode_call(mock.cell_yield_ms)])
        if scenario in ("image_hosted", "image_hosted_failed"):
            failed = scenario == "image_hosted_failed"
            if not failed:
                mock.sleep(mock.image_delay_s)
                mock.image_served_at = time.time()
            item = {"type": "image_generation_call", "id": f"ig_{uuid.uuid4().hex[:24]}",
                    "status": "failed" if failed else "completed", "revised_prompt": "a fox",
                    "result": "" if failed else base64.b64encode(mock.image).decode()}  # fmt: skip
            return self._stream(
                response_id, [item, _message("Here is the image.")], final_delay=True
            )
        return self._stream(
            response_id, [_message("I can only describe the image: a fox in snow.")]
        )

    def _stream(
        self,
        response_id: str,
        items: list[dict[str, Any]],
        final_delay: bool = False,
        turn: bool = True,
    ) -> None:
        try:
            self._stream_events(response_id, items, final_delay)
        except OSError:
            self.close_connection = True  # codex went away (stopped early): nothing to tell
            return
        if turn:
            self.mock.answered()

    def _stream_events(
        self, response_id: str, items: list[dict[str, Any]], final_delay: bool
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in self._windows().items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "status": "in_progress",
            "output": [],
        }
        events: list[dict[str, Any]] = [{"type": "response.created", "response": response}]
        for index, item in enumerate(items):
            if final_delay and index == len(items) - 1 and index > 0:
                for event in events:
                    self._event(event)
                events = []
                self.mock.sleep(self.mock.final_delay_s)
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item}
            )
        usage = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": 1240}  # fmt: skip
        completed = {**response, "status": "completed", "usage": usage}
        events.append({"type": "response.completed", "response": completed})
        for event in events:
            self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        payload = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
        self.wfile.write(payload)  # an OSError (codex went away) ends the stream in _stream
        self.wfile.flush()

    def _windows(self) -> dict[str, str]:
        percent = self.mock.usage_percent
        return {} if percent is None else _window_headers(self.mock.windows_s, percent)

    def _json(
        self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


def image_for(prompt: str) -> bytes:
    """The image an ``echo_request`` mock serves for ``prompt`` (its hash in a tEXt chunk)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    return make_png(96, 64, prompt, {"prompt_sha256": digest})


def _arguments(mock: MockBackend, body: dict[str, Any]) -> dict[str, Any]:
    arguments = dict(mock.call_arguments)
    if mock.echo_request:
        request = _user_request(body)
        if request is not None:
            arguments["prompt"] = request
    return arguments


def _user_request(body: dict[str, Any]) -> str | None:
    """The text between the request markers of our instruction, as a model would pass it."""
    begin, end = "<<<IMAGE REQUEST>>>", "<<<END OF IMAGE REQUEST>>>"
    for item in body.get("input") or []:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        for part in item.get("content") or []:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and begin in text and end in text:
                return text.split(begin, 1)[1].split(end, 1)[0].strip()
    return None


def _accounts() -> dict[str, Any]:
    account = {"id": ACCOUNT_ID, "plan_type": "plus", "workspace_backend_origin": "NO_CONSTRAINT",
               "account_routing_override": "NO_CONSTRAINT"}  # fmt: skip
    return {
        "accounts": [account],
        "account_ordering": [ACCOUNT_ID],
        "default_account_id": ACCOUNT_ID,
    }


def _message(text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "role": "assistant",
        "status": "completed",
        "content": content,
    }


def _code_mode_call(yield_ms: int | None) -> dict[str, Any]:
    """Code mode's exec call whose script makes the image (its first line asks ``yield_ms``
    of the cell; None: codex's default yield applies)."""
    pragma = "" if yield_ms is None else f'// @exec: {{"yield_time_ms": {yield_ms}}}\n'
    code = (
        f"{pragma}"
        'const result = await tools.image_gen__imagegen({prompt: "a fox"});\n'
        "generatedImage(result);\n"
    )
    return {"type": "custom_tool_call", "id": f"ctc_{uuid.uuid4().hex[:12]}",
            "call_id": f"call_{uuid.uuid4().hex[:24]}", "name": "exec", "input": code}  # fmt: skip


def _wait_call(cell: str) -> dict[str, Any]:
    """The model asks for a running cell's result (codex's ``wait`` tool, default yield)."""
    return {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
            "call_id": f"call_{uuid.uuid4().hex[:24]}", "name": "wait",
            "arguments": json.dumps({"cell_id": cell})}  # fmt: skip


_RUNNING = re.compile(r"Script running with cell ID ([A-Za-z0-9_-]+)")


def _running_cell(body: dict[str, Any]) -> str | None:
    """The cell id when the last tool output says the exec cell is still running."""
    kinds = ("function_call_output", "custom_tool_call_output")
    outputs = [i for i in body.get("input") or [] if isinstance(i, dict) and i.get("type") in kinds]
    if not outputs:
        return None
    found = _RUNNING.search(json.dumps(outputs[-1].get("output")))
    return found.group(1) if found else None


def _has_tool_output(body: dict[str, Any], call_prefix: str = "") -> bool:
    items = body.get("input")
    return isinstance(items, list) and any(
        isinstance(i, dict)
        and i.get("type") in ("function_call_output", "custom_tool_call_output")
        and str(i.get("call_id", "")).startswith(call_prefix)
        for i in items
    )


def _saved_path(body: dict[str, Any]) -> str | None:
    """Where codex says it saved the image, from the image call's output in the input."""
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            found = _SAVED_AS.search(json.dumps(item.get("output")))
            if found:
                return found.group(1)
    return None


def _copy_call(source: str, target: str) -> dict[str, Any]:
    """What a model does when asked to put the image at a path: a shell copy, from the code-mode
    exec tool, as gpt-6.1-sol calls tools in 0.169 (``tools.exec_command``)."""
    command = f"cp {shlex.quote(source)} {shlex.quote(target)}"
    code = (
        '// @exec: {"yield_time_ms": 30000}\n'
        f"const result = await tools.exec_command({{cmd: {json.dumps(command)}}});\n"
        "text(result.output);\n"
    )
    return {
        "type": "custom_tool_call",
        "id": f"ctc_{uuid.uuid4().hex[:12]}",
        "call_id": f"{_COPY_CALL}{uuid.uuid4().hex[:16]}",
        "name": "exec",
        "input": code,
    }


def _tool_names(tools: object, prefix: str, names: set[str]) -> None:
    if not isinstance(tools, list):
        return
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        name = str(tool.get("name") or tool.get("type"))
        if tool.get("type") == "namespace":
            _tool_names(tool.get("tools"), f"{name}.", names)
            continue
        names.add(prefix + name)
        # Code mode declares its nested tools in the exec tool's description.
        for nested in _DECLARED.findall(str(tool.get("description") or "")):
            names.add(f"exec>{nested}")


_DECLARED = re.compile(r"declare const tools: \{ (\w+)\(")


def _tool_output(body: dict[str, Any], call_prefix: str) -> str | None:
    """The output codex returned for the model's call whose id starts with ``call_prefix``."""
    for item in body.get("input") or []:
        if (
            isinstance(item, dict)
            and item.get("type") in ("function_call_output", "custom_tool_call_output")
            and str(item.get("call_id", "")).startswith(call_prefix)
        ):
            output = item.get("output")
            if isinstance(output, list):
                return "\n".join(
                    str(part.get("text", "")) for part in output if isinstance(part, dict)
                )
            return output if isinstance(output, str) else json.dumps(output)
    return None


def _injected_turn(mock: MockBackend, body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The injected model's next step: run the command, then ask for an image of its output
    (None once the image call is done: the closing message follows as usual)."""
    scenario = mock.scenario
    if scenario == "injected_code_mode":
        if _has_tool_output(body):
            return None
        # Whatever the shell tool does (or the error its absence throws) becomes the prompt.
        code = (
            '// @exec: {"yield_time_ms": 120000}\n'
            "let said;\n"
            f"try {{ said = (await tools.exec_command({{cmd: {json.dumps(INJECTED_COMMAND)}}}))"
            ".output; }\n"
            "catch (error) { said = String(error); }\n"
            "const result = await tools.image_gen__imagegen({prompt: 'A poster of: ' + said});\n"
            "generatedImage(result);\n"
        )
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        return [{"type": "custom_tool_call", "id": f"ctc_{uuid.uuid4().hex[:12]}",
                 "call_id": call_id, "name": "exec", "input": code}]  # fmt: skip
    said = _tool_output(body, _SHELL_CALL)
    if said is None:
        arguments = json.dumps({"cmd": INJECTED_COMMAND})
        return [{"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
                 "call_id": f"{_SHELL_CALL}{uuid.uuid4().hex[:16]}", "name": "exec_command",
                 "arguments": arguments}]  # fmt: skip
    prompt = f"A poster of: {said}"
    if scenario == "injected_hosted":  # the image comes in this answer, which ends the turn
        mock.image_served_at = time.time()
        item = {"type": "image_generation_call", "id": f"ig_{uuid.uuid4().hex[:24]}",
                "status": "completed", "revised_prompt": prompt,
                "result": base64.b64encode(mock.image).decode()}  # fmt: skip
        return [item, _message("Here is the image.")]
    if any(
        isinstance(i, dict)
        and i.get("type") == "function_call_output"
        and not str(i.get("call_id", "")).startswith(_SHELL_CALL)
        for i in body.get("input") or []
    ):
        return None  # the image call is answered: the closing message
    call = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
            "call_id": f"call_{uuid.uuid4().hex[:24]}", "namespace": "image_gen",
            "name": "imagegen", "arguments": json.dumps({"prompt": prompt})}  # fmt: skip
    return [call]


def _forging_call(forge: str) -> dict[str, Any]:
    """Code mode's exec call whose script forges the images endpoint's failure line."""
    line = json.dumps(FORGED_FAILURE)
    body = f"throw new Error({line});" if forge == "throw" else f"text({line});"
    code = f'// @exec: {{"yield_time_ms": 30000}}\n{body}\n'
    return {"type": "custom_tool_call", "id": f"ctc_{uuid.uuid4().hex[:12]}",
            "call_id": f"call_{uuid.uuid4().hex[:24]}", "name": "exec", "input": code}  # fmt: skip


def _window_headers(windows_s: tuple[float, float], percent: tuple[float, float]) -> dict[str, str]:
    """The usage windows as the backend reports them on every answer (codex-facts section 11)."""
    now = time.time()
    primary, secondary = windows_s
    return {
        "x-codex-primary-used-percent": f"{percent[0]:.1f}",
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(int(now + primary)),
        "x-codex-secondary-used-percent": f"{percent[1]:.1f}",
        "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-at": str(int(now + secondary)),
    }


def _usage(windows_s: tuple[float, float], percent: tuple[float, float] | None) -> dict[str, Any]:
    """``GET /wham/usage``, which codex app-server's ``account/rateLimits/read`` asks
    (codex-facts section 11): whole percents, windows in seconds."""
    now = int(time.time())

    def window(used: float, length_s: int, reset_s: float) -> dict[str, Any]:
        return {"used_percent": int(used), "limit_window_seconds": length_s,
                "reset_after_seconds": int(reset_s), "reset_at": now + int(reset_s)}  # fmt: skip

    limit = None
    if percent is not None:
        limit = {
            "allowed": percent[0] < 100 and percent[1] < 100,
            "limit_reached": percent[0] >= 100 or percent[1] >= 100,
            "primary_window": window(percent[0], 18000, windows_s[0]),
            "secondary_window": window(percent[1], 604800, windows_s[1]),
        }
    return {
        "plan_type": "plus",
        "rate_limit": limit,
        "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
        "additional_rate_limits": [],
    }


_SUB_AGENT_TASK = "SUB-AGENT TASK: run id"


def _spawning_turn(mock: MockBackend, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The spawning model's next step: spawn, wait, end; a sub-agent's turn just answers."""
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    called = {i.get("name") for i in items if i.get("type") == "function_call"}
    # A sub-agent's request ends with its task, sent to it as an agent message (its history is
    # a copy of its parent's: seen on 0.149-0.171).
    if (
        items
        and items[-1].get("type") == "agent_message"
        and _SUB_AGENT_TASK in json.dumps(items[-1])
    ):
        with mock._lock:
            mock.sub_agent_requests += 1
        return [_message("sub-agent done")]
    arguments: dict[str, object]
    if "spawn_agent" not in called:
        name, arguments = "spawn_agent", {"task_name": "probe", "message": _SUB_AGENT_TASK}
    elif "wait_agent" not in called:
        name, arguments = "wait_agent", {"timeout_ms": 20000}
    else:
        return [_message("Done.")]
    return [{"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
             "call_id": f"call_{uuid.uuid4().hex[:24]}", "namespace": "collaboration",
             "name": name, "arguments": json.dumps(arguments)}]  # fmt: skip

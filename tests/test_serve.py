"""`codex-image serve` driven by the official `openai` SDK (and raw HTTP), against the fake codex.

Each test starts the real command in its own process, as a user would, on a free port; the fake
codex stands in for the CLI. What is checked beside each answer: the server's log holds no
traceback, no prompt and no token, and no codex is left running.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import openai
import pytest

from codex_cli_image.serve.gate import HEADER_TIMEOUT_S, host_name
from codex_cli_image.testing import FakeCodex, make_png

from helpers import png_ok, survivors

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("private_tmp")]

TOKEN = "test-token-0123456789abcdef"
PROMPT = "a red fox in the snow, secret-prompt-words"


@dataclass
class Server:
    process: subprocess.Popen[str]
    base_url: str
    log: Path
    token: str = TOKEN
    stopped: bool = field(default=False)
    clients: list[openai.OpenAI] = field(default_factory=list)

    def sdk(self, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=self.base_url, api_key=self.token, **options)
        self.clients.append(client)  # closed at the end: its pooled sockets too
        return client

    def http(self, headers: dict[str, str] | None = None, timeout: float = 60) -> Raw:
        return Raw(
            self.base_url, {"authorization": f"Bearer {self.token}", **(headers or {})}, timeout
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.stopped = True
        return code

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace")


@pytest.fixture
def serve(fake_codex: FakeCodex, tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(
        *extra: str, env: dict[str, str] | None = None, token: bool = True, fds: int | None = None
    ) -> Server:
        environment = dict(os.environ if env is None else env)
        # fds: the server runs under that descriptor limit, soft and hard (as `ulimit -n`).
        limit = None if fds is None else partial(resource.setrlimit, resource.RLIMIT_NOFILE,
                                                 (fds, fds))  # fmt: skip
        if token:
            environment["CODEX_IMAGE_TOKEN"] = TOKEN
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "codex_cli_image", "serve", "--port", "0", *extra],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=environment,
                preexec_fn=limit,
            )
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            process.kill()
            raise AssertionError("serve printed no URL: " + log.read_text()) from None
        server = Server(process, first.strip(), log)
        started.append(server)
        if not first.startswith("http://"):
            process.wait(10)
            return server
        return server

    yield start
    for server in started:
        for client in server.clients:
            client.close()
        if server.process.poll() is None:
            assert server.stop() == 0, server.text()
        text = server.text()
        assert "Traceback" not in text and TOKEN not in text and "secret-prompt" not in text, text
        if server.process.stdout is not None:
            server.process.stdout.close()
    deadline = time.monotonic() + 10
    while survivors(fake_codex) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not survivors(fake_codex)


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Raw:
    """Plain HTTP with the standard library: any header, any body (the SDK would fix them)."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.root, self.headers, self.timeout = parts.path, headers, timeout
        self.address = (parts.hostname or "", parts.port or 80)

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self.address, timeout=self.timeout)

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> http.client.HTTPResponse:
        headers = {**self.headers, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("content-type", "application/json")
        connection = self.connection()
        url = (
            path
            if path.startswith("/")
            and not path.startswith("/images")
            and not path.startswith("/models")
            else self.root + path
        )
        if "host" in headers:
            connection.putrequest(method, url, skip_host=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            chunked = body is not None and not isinstance(body, bytes)
            if chunked:
                connection.putheader("transfer-encoding", "chunked")
            connection.endheaders()
            if body is not None:
                connection.send(body)
        else:
            connection.request(
                method,
                url,
                body=body,
                headers=headers,
                encode_chunked=body is not None and not isinstance(body, bytes),
            )
        self.last = connection  # for the caller of send() to close
        try:
            response = connection.getresponse()
        except BaseException:  # a timeout: hang up, as a client that gives up does
            connection.close()
            raise
        response.connection = connection  # type: ignore[attr-defined]
        return response

    def request(self, method: str, path: str, **options: Any) -> Reply:
        response = self.send(method, path, **options)
        try:
            return Reply(
                response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            )
        finally:
            response.close()
            response.connection.close()  # type: ignore[attr-defined]

    def get(self, path: str, **options: Any) -> Reply:
        return self.request("GET", path, **options)

    def options(self, path: str, **options: Any) -> Reply:
        return self.request("OPTIONS", path, **options)

    def post(
        self,
        path: str,
        *,
        json: Any = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> Reply:
        if files is not None or data is not None:
            content, boundary = _multipart(data or {}, files or {})
            headers = {
                **(headers or {}),
                "content-type": f"multipart/form-data; boundary={boundary}",
            }
        return self.request("POST", path, body=content, json_body=json, headers=headers)


def _multipart(data: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "testboundary7d3f"
    parts = []
    for name, value in data.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for name, (filename, content, kind) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {kind}\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def _png(b64: str | None) -> bytes:
    assert b64 is not None
    data = base64.b64decode(b64)
    assert png_ok(data)
    return data


# --- making images -----------------------------------------------------------------------------


def test_generate_returns_the_verified_png(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    reply = server.sdk().images.generate(model="gpt-image-1", prompt=PROMPT)
    assert len(reply.data) == 1
    _png(reply.data[0].b64_json)
    assert reply.size == "64x64" and reply.output_format == "png" and reply.quality is None
    assert reply.background == "opaque" and reply.created > 0
    assert len(fake_codex.exec_calls) == 1
    log = server.text()
    assert "POST /v1/images/generations 200" in log


def test_lenient_fields_are_accepted_and_the_delivered_size_reported(
    serve: Any, fake_codex: FakeCodex
) -> None:
    fake_codex.configure("success", width=96, height=64)
    server = serve()
    reply = server.sdk().images.generate(
        model="dall-e-3",
        response_format="b64_json",  # dall-e-3's default is url, as at OpenAI
        prompt=PROMPT,
        size="1536x1024",
        quality="high",
        moderation="low",
        user="someone",
        style="vivid",
        extra_body={"their_own_field": {"x": 1}},
    )
    _png(reply.data[0].b64_json)
    assert reply.size == "96x64"  # what was delivered, not what was asked
    assert "1536x1024" in fake_codex.exec_calls[0].stdin


def test_n_images_are_made_side_by_side(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    reply = server.sdk().images.generate(prompt=PROMPT, n=2)
    assert len(reply.data) == 2
    assert len({_png(d.b64_json) for d in reply.data}) >= 1
    assert len(fake_codex.exec_calls) == 2


def test_some_of_n_failing_keeps_the_images_made(tmp_path: Path) -> None:
    """In process, with a client whose second image fails: the paid-for first is returned."""
    import anyio

    from codex_cli_image.errors import TransientError
    from codex_cli_image.serve import ServeOptions, Service
    from codex_cli_image.serve.images_api import images_reply, parse_call

    made = ImageResultStub.make(tmp_path)

    class Halfway:
        concurrency, closed, calls = 2, False, 0

        async def agenerate(self, request: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise TransientError("codex failed.", reason="codex_failed", hint="Retry.")
            return made

    service = Service(Halfway(), ServeOptions(TOKEN), tmp_path, tmp_path)  # type: ignore[arg-type]
    call = parse_call({"prompt": PROMPT, "n": 2})
    with service.admitted(call.n):  # admission and release, paired
        assert service.pending == 2
        outcome = anyio.run(service.make, call, ())
    assert len(outcome.images) == 1 and len(outcome.failed) == 1 and service.pending == 0
    reply = images_reply(call, [(made, {"b64_json": "x"})], outcome.failed, created=1)
    assert reply["failed"] == 1 and reply["errors"][0]["code"] == "codex_failed"
    assert len(reply["data"]) == 1


class ImageResultStub:
    @staticmethod
    def make(folder: Path) -> Any:
        from codex_cli_image.results import ImageResult

        path = folder / "made.png"
        path.write_bytes(make_png(16, 16, "ref"))
        return ImageResult(
            path=path,
            bytes=path.stat().st_size,
            sha256="0" * 64,
            width=16,
            height=16,
            format="png",
            thread_id="t",
            codex_version="0.169.0",
            elapsed_s=1.0,
            usage=None,
            revised_prompt=None,
            attempts=1,
            warnings=(),
            image_source="file",
        )


def _private_images(scratch: Path) -> list[Path]:
    """The image files in the server's private folder (under the test's TMPDIR)."""
    return sorted(p for p in scratch.glob("codex-image-serve-*/images/*") if p.is_file())


def test_url_replies_are_signed_expiring_and_need_no_token(serve: Any, private_tmp: Path) -> None:
    """#30 item 8: a URL needed the bearer token, so an <img src> or a tool fetching it with a
    plain GET got 401. URLs are signed and expire, as OpenAI's; altered, they are refused."""
    server = serve("--url-ttl", "2")
    reply = server.sdk().images.generate(prompt=PROMPT, response_format="url")
    url = reply.data[0].url
    assert url is not None and url.startswith(server.base_url + "/images/files/img-")
    with urllib.request.urlopen(url, timeout=30) as got:  # a plain GET, no token
        assert got.headers["content-type"] == "image/png" and png_ok(got.read())
    path, query = url.split("/v1", 1)[1].split("?")
    fields = dict(part.split("=") for part in query.split("&"))
    anonymous = Raw(server.base_url, {}, 30)
    altered = [
        f"{path[:-5]}{'1' if path[-5] != '1' else '2'}.png?{query}",  # another name
        f"{path}?expires={int(fields['expires']) + 60}&sig={fields['sig']}",
        f"{path}?expires={fields['expires']}&sig={'0' * 32}",
        path,
    ]
    for changed in altered:
        assert anonymous.get(changed).status_code == 403, changed
    assert len(_private_images(private_tmp)) == 1
    time.sleep(2.5)
    assert anonymous.get(f"{path}?{query}").status_code == 403  # expired
    server.sdk().images.generate(prompt=PROMPT)  # a base64 reply: it also reaps
    assert _private_images(private_tmp) == []  # expired, and base64 replies keep nothing


def test_dall_e_gets_a_url_it_can_fetch_as_langchain_does(serve: Any) -> None:
    """#31: LangChain's DallEAPIWrapper asks dall-e-3 with no response_format and reads `url`
    (OpenAI's default for the DALL-E models), then fetches it with a plain GET."""
    server = serve()
    reply = server.sdk().images.generate(model="dall-e-3", prompt=PROMPT)
    assert reply.data[0].b64_json is None and reply.data[0].url
    with urllib.request.urlopen(reply.data[0].url, timeout=30) as got:
        assert png_ok(got.read())


def test_out_dir_keeps_every_image_and_b64_replies_keep_none_without_it(
    serve: Any, private_tmp: Path, tmp_path: Path
) -> None:
    """#30 item 7: serve kept every image for its whole life, base64 replies and converted
    copies included; without --out-dir nothing of a base64 reply stays."""
    server = serve()
    server.sdk().images.generate(prompt=PROMPT, n=2)
    assert _private_images(private_tmp) == []
    kept = tmp_path / "kept"
    with_dir = serve("--out-dir", str(kept))
    with_dir.sdk().images.generate(prompt=PROMPT)
    assert len(list(kept.glob("*.png"))) == 1


def test_jpeg_output_is_converted(serve: Any) -> None:
    server = serve()
    reply = server.sdk().images.generate(prompt=PROMPT, output_format="jpeg")
    data = base64.b64decode(reply.data[0].b64_json or "")
    assert data[:3] == b"\xff\xd8\xff" and reply.output_format == "jpeg"


def test_transparent_background_is_asked_and_reported(serve: Any, fake_codex: FakeCodex) -> None:
    fake_codex.configure("success", alpha=True)
    server = serve()
    reply = server.sdk().images.generate(prompt=PROMPT, background="transparent")
    assert reply.background == "transparent"
    assert "transparent" in fake_codex.exec_calls[0].stdin.lower()


def test_out_dir_keeps_the_images(serve: Any, tmp_path: Path) -> None:
    out = tmp_path / "kept"
    server = serve("--out-dir", str(out))
    server.sdk().images.generate(prompt=PROMPT)
    assert server.stop() == 0
    assert [p.suffix for p in out.iterdir()] == [".png"]


@pytest.mark.parametrize("how", ["image", "image[]"])
def test_edits_take_references(serve: Any, fake_codex: FakeCodex, tmp_path: Path, how: str) -> None:
    reference = make_png(48, 32, "ref")
    server = serve()
    image: Any = ("ref.png", reference, "image/png")
    if how == "image[]":
        image = [image, ("second.png", make_png(32, 32, "ref"), "image/png")]
    reply = server.sdk().images.edit(image=image, prompt=PROMPT)
    assert _png(reply.data[0].b64_json) != reference
    argv = fake_codex.exec_calls[0].argv
    assert sum(a.startswith("--image=") for a in argv) == (2 if how == "image[]" else 1)


def test_edit_with_a_mask_or_no_image_is_refused(serve: Any) -> None:
    server = serve()
    with server.http() as http:
        files = {
            "image": ("a.png", make_png(8, 8, "ref"), "image/png"),
            "mask": ("m.png", make_png(8, 8, "ref"), "image/png"),
        }
        got = http.post("/images/edits", data={"prompt": PROMPT}, files=files)
        assert got.status_code == 400 and got.json()["error"]["param"] == "mask"
        got = http.post(
            "/images/edits", data={"prompt": PROMPT}, files={"other": ("a.txt", b"x", "text/plain")}
        )
        assert got.status_code == 400 and got.json()["error"]["param"] == "image"
        bad = {"image": ("a.png", b"not an image at all", "image/png")}
        got = http.post("/images/edits", data={"prompt": PROMPT}, files=bad)
        assert got.status_code == 400, got.text


def test_stream_sends_the_completed_event(serve: Any) -> None:
    server = serve()
    events = list(server.sdk().images.generate(prompt=PROMPT, stream=True))
    assert [e.type for e in events] == ["image_generation.completed"]
    _png(events[0].b64_json)
    assert events[0].usage is not None


def test_a_failure_before_the_stream_spoke_has_its_own_status(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """A usage limit comes in seconds, before the first keep-alive: a 429 the SDKs know."""
    fake_codex.configure("usage_limit")
    server = serve()
    with pytest.raises(openai.RateLimitError) as caught:
        list(server.sdk().images.generate(prompt=PROMPT, stream=True))
    assert "usage limit" in str(caught.value.message).lower()


def test_a_slow_stream_keeps_alive_then_ends_with_an_error_event(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """Keep-alives every 10 s while codex works; a failure after them is an error event."""
    fake_codex.configure("hang")
    server = serve("--timeout", "12")
    with server.http() as http:
        started = time.monotonic()
        body = {"prompt": PROMPT, "stream": True}
        response = http.send("POST", "/images/generations", json_body=body)
        assert response.status == 200
        assert response.readline().startswith(b": keep-alive")
        assert 8 < time.monotonic() - started < 14
        rest = response.read().decode()
        response.close()
        http.last.close()
    assert "event: error" in rest and '"code": "timeout"' in rest


def test_models_and_health(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    models = server.sdk().models.list()
    assert [m.id for m in models.data] == ["gpt-image-2"]
    with server.http() as http:
        health = "/healthz"
        assert http.get(health).status_code == 200
        (fake_codex.codex_home / "auth.json").unlink()
        sick = http.get(health)
        assert sick.status_code == 503 and sick.json()["error"]["kind"] == "auth"
    assert fake_codex.exec_calls == []


# --- errors, as the SDK's exception classes --------------------------------------------------


def test_usage_limit_is_a_rate_limit_error_answered_once(serve: Any, fake_codex: FakeCodex) -> None:
    fake_codex.configure("usage_limit")
    server = serve()
    client = server.sdk(max_retries=3)
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(prompt=PROMPT)
    response = caught.value.response
    assert response.headers["x-should-retry"] == "false"
    assert int(response.headers["retry-after"]) > 3600
    body = response.json()["error"]
    assert body["code"] == "usage_limit" and body["retry_at"]
    assert "Wait until" in body["message"]
    with pytest.raises(openai.RateLimitError):  # answered at once, without codex
        client.images.generate(prompt=PROMPT)
    assert len(fake_codex.exec_calls) == 1
    # #31: the access log says why, not only 429.
    lines = [line for line in server.text().splitlines() if "POST /v1/images/generations" in line]
    assert len(lines) == 2 and all(line.endswith("B usage_limit") for line in lines), lines


@pytest.mark.parametrize(("scenario", "runs"), [("invalid_png", 1), ("stream_disconnected", 2)])
def test_the_sdks_retries_never_multiply_ours(
    serve: Any, fake_codex: FakeCodex, scenario: str, runs: int
) -> None:
    """#30: the openai SDK retries 5xx twice by default; a failure that may have paid for an
    image ran codex 3 times, and one the pipeline retries itself 6. Following our headers, the
    SDK runs codex exactly as often as the pipeline does (once; twice with --retries 1)."""
    fake_codex.configure(scenario)
    server = serve()
    with pytest.raises(openai.InternalServerError) as caught:
        server.sdk(max_retries=2).images.generate(prompt=PROMPT)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(fake_codex.exec_calls) == runs


def test_a_usage_limit_is_forgotten_when_the_login_changes(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """#30: the limit belongs to the account that hit it; after `codex login` with another one,
    the next request runs codex again."""
    fake_codex.configure("usage_limit")
    server = serve()
    client = server.sdk()
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            client.images.generate(prompt=PROMPT)
    assert len(fake_codex.exec_calls) == 1
    fake_codex.login(account_id="acc-another-account")
    fake_codex.configure("success")
    assert client.images.generate(prompt=PROMPT).data
    assert len(fake_codex.exec_calls) == 2


def test_a_forged_usage_limit_does_not_shut_the_server(serve: Any, fake_codex: FakeCodex) -> None:
    """#29: a model's script threw codex's line for a usage limit of six days; that made every
    later request a 429 for days. It is a plain failure now, and the next request is made."""
    fake_codex.configure("forged_failure")
    server = serve()
    client = server.sdk()
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(prompt=PROMPT)
    assert caught.value.status_code != 429
    assert "518400" not in caught.value.response.text
    fake_codex.configure("success")
    reply = client.images.generate(prompt=PROMPT)
    assert png_ok(base64.b64decode(reply.data[0].b64_json or ""))  # type: ignore[index]


@pytest.mark.parametrize(
    ("scenario", "error", "status"),
    [
        ("refresh_failed", openai.PermissionDeniedError, 403),
        ("stream_disconnected", openai.InternalServerError, 502),
    ],
)
def test_failures_map_to_the_sdk_classes(
    serve: Any, fake_codex: FakeCodex, scenario: str, error: type[Exception], status: int
) -> None:
    fake_codex.configure(scenario)
    server = serve()
    with pytest.raises(error) as caught:
        server.sdk().images.generate(prompt=PROMPT)
    assert caught.value.status_code == status  # type: ignore[attr-defined]


def test_bad_input_is_a_bad_request_naming_the_field(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    with pytest.raises(openai.BadRequestError) as caught:
        server.sdk().images.generate(prompt=PROMPT, size="huge")  # type: ignore[arg-type]
    assert caught.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        server.sdk().images.generate(prompt=PROMPT, n=11)
    with server.http() as http:
        assert http.post("/images/generations", content=b"{nope").status_code == 400
    assert fake_codex.exec_calls == []


def test_a_missing_codex_is_a_503(serve: Any, fake_codex: FakeCodex, tmp_path: Path) -> None:
    server = serve("--codex", str(tmp_path / "no-such-codex"))
    with pytest.raises(openai.InternalServerError) as caught:
        server.sdk().images.generate(prompt=PROMPT)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_our_timeout_is_a_504(serve: Any, fake_codex: FakeCodex) -> None:
    fake_codex.configure("success", delay=20)
    server = serve("--timeout", "2")
    with pytest.raises(openai.InternalServerError) as caught:
        server.sdk().images.generate(prompt=PROMPT)
    assert caught.value.status_code == 504


# --- who may call -----------------------------------------------------------------------------


def test_a_wrong_or_missing_token_is_refused(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    server.token = "wrong-token-0123456789"
    with pytest.raises(openai.AuthenticationError):
        server.sdk().images.generate(prompt=PROMPT)
    server.token = TOKEN
    anonymous = Raw(server.base_url, {}, 30)
    assert anonymous.post("/images/generations", json={"prompt": "x"}).status_code == 401
    assert fake_codex.exec_calls == []


def test_a_foreign_host_header_is_refused(serve: Any) -> None:
    server = serve()
    with server.http(headers={"host": "evil.example:80"}) as http:
        assert http.get("/models").status_code == 421
    with server.http(headers={"host": "localhost"}) as http:
        assert http.get("/models").status_code == 200


def test_the_host_header_is_parsed_strictly(serve: Any) -> None:
    """#29: `[::1]evil.com` named loopback to the old check; only host, host:port, [v6] and
    [v6]:port are read."""
    assert host_name("localhost:8080") == "localhost" and host_name("[::1]:80") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1" and host_name("[::1]") == "::1"
    for bad in ("[::1]evil.com", "localhost:80:90", "[::1", "local host", "[evil]:80", ""):
        assert host_name(bad) is None, bad
    server = serve()
    with server.http(headers={"host": "[::1]evil.com"}) as http:
        assert http.get("/models").status_code == 421


@pytest.mark.parametrize("how", ["mode-644", "symlink"])
def test_an_unsafe_token_file_is_refused_at_start(serve: Any, tmp_path: Path, how: str) -> None:
    """#29: as ssh refuses a private key others can read, serve refuses such a token file,
    naming it and its mode (and a symbolic link, whose target it would not check)."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644 if how == "mode-644" else 0o600)
    named = token
    if how == "symlink":
        named = tmp_path / "link"
        named.symlink_to(token)
    env = {k: v for k, v in os.environ.items() if k != "CODEX_IMAGE_TOKEN"}
    server = serve("--token-file", str(named), env=env, token=False)
    assert server.process.wait(10) == 2
    text = server.text()
    assert str(named) in text and TOKEN not in text
    assert ("0644" in text and "chmod 600" in text) if how == "mode-644" else "link" in text
    token.chmod(0o600)
    fine = serve("--token-file", str(token), env=env, token=False)
    assert fine.base_url.startswith("http://") and fine.sdk().models.list().data


def test_a_kept_token_others_can_read_is_refused(serve: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CODEX_IMAGE_TOKEN"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    kept = tmp_path / "config" / "codex-cli-image" / "serve-token"
    kept.parent.mkdir(parents=True)
    kept.write_text(TOKEN + "\n")
    kept.chmod(0o640)
    server = serve(env=env, token=False)
    assert server.process.wait(10) == 2 and "0640" in server.text()


def test_a_connection_that_never_finishes_its_headers_is_closed(serve: Any) -> None:
    """#29: uvicorn waited forever for headers; now each connection has HEADER_TIMEOUT_S."""
    server = serve()
    address = Raw(server.base_url, {}, 5).address
    with socket.create_connection(address, timeout=HEADER_TIMEOUT_S + 20) as half:
        half.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        assert half.recv(100) == b""  # closed by the server, without an answer
        assert HEADER_TIMEOUT_S - 1 <= time.monotonic() - started < HEADER_TIMEOUT_S + 15


def test_half_open_connections_do_not_keep_an_authorized_client_out(serve: Any) -> None:
    """#29: 1100 connections sending half their headers, without a token, under `ulimit -n 1024`
    used every descriptor: nobody else got in, and the log took millions of lines. Now the
    oldest waiting connections make room, and the log stays short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2400:
        pytest.skip(f"this test opens 1100 connections; the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2400), hard))
    server = serve(fds=1024)
    address = Raw(server.base_url, {}, 5).address
    held: list[socket.socket] = []
    try:
        for _ in range(1100):
            try:
                sock = socket.create_connection(address, timeout=5)
            except OSError:
                continue  # the server closed an old one meanwhile, or the backlog was full
            sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: local")
            held.append(sock)
        started = time.monotonic()
        assert server.sdk(timeout=20).models.list().data
        assert time.monotonic() - started < 5
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(server.text().splitlines()) < 200


def test_origins_need_to_be_allowed(serve: Any) -> None:
    server = serve("--allow-origin", "https://app.example")
    with server.http(headers={"origin": "https://evil.example"}) as http:
        assert http.get("/models").status_code == 403
    with server.http(headers={"origin": "https://app.example"}) as http:
        got = http.get("/models")
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == "https://app.example"
        # #32: the page may read the usage windows' headers (and when to retry)
        exposed = got.headers["access-control-expose-headers"]
        assert "x-codex-primary-used-percent" in exposed and "retry-after" in exposed
        pre = http.options(
            "/images/generations",
            headers={
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.example"


def test_oversized_bodies_get_413(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    # Refused on its Content-Length, before the body is read: the server answers and closes
    # while a client may still be sending (http.client then fails with a broken pipe, a race
    # on a busy machine), so this client sends the headers and a little of the body only.
    big = len(json.dumps({"prompt": "x" * (1024 * 1024 + 10)}))
    with socket.create_connection(Raw(server.base_url, {}, 5).address, timeout=30) as raw:
        raw.sendall(
            f"POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f'Content-Length: {big}\r\n\r\n{{"prompt": "xxxx'.encode()
        )
        assert raw.recv(100).startswith(b"HTTP/1.1 413 ")
    # No Content-Length: counted as it comes; just over the limit, then the client listens.
    with socket.create_connection(Raw(server.base_url, {}, 5).address, timeout=30) as raw:
        raw.sendall(
            f"POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(17):
            raw.sendall(b"10000\r\n" + b" " * 65536 + b"\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 413 ")
    with server.http() as http:
        claimed = http.post(
            "/images/edits",
            content=b"",
            headers={
                "content-length": str(500 * 1024 * 1024),
                "content-type": "multipart/form-data; boundary=x",
            },
        )
        assert claimed.status_code == 413
    assert fake_codex.exec_calls == []


def test_a_full_queue_is_a_429_at_once(serve: Any, fake_codex: FakeCodex) -> None:
    fake_codex.configure("success", delay=4)
    server = serve("-j", "1", "--max-queue", "0")
    results: list[int] = []
    with server.http() as http:
        first = threading.Thread(
            target=lambda: results.append(
                http.post("/images/generations", json={"prompt": PROMPT}).status_code
            )
        )
        first.start()
        deadline = time.monotonic() + 20
        while not fake_codex.exec_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        full = http.post("/images/generations", json={"prompt": PROMPT})
        assert time.monotonic() - started < 3
        assert full.status_code == 429 and full.headers["retry-after"]
        assert full.json()["error"]["code"] == "queue_full"
        first.join(30)
    assert results == [200]


# --- lifetime ---------------------------------------------------------------------------------


def test_a_client_that_gives_up_gets_its_image_on_retry_with_one_codex_run(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """Haystack's way (a 30 s timeout, then the same request again): the first image runs on
    after its client left, and the retry joins it: one codex run, one image, delivered."""
    fake_codex.configure("success", delay=4)
    server = serve()
    with server.http(timeout=1) as http, pytest.raises(TimeoutError):
        http.post("/images/generations", json={"prompt": PROMPT})
    with server.http(timeout=1) as http, pytest.raises(TimeoutError):
        http.post("/images/generations", json={"prompt": PROMPT})  # gives up again
    with server.http(timeout=30) as http:
        reply = http.post("/images/generations", json={"prompt": PROMPT})
    assert reply.status_code == 200, reply.text
    assert png_ok(base64.b64decode(reply.json()["data"][0]["b64_json"]))
    assert len(fake_codex.exec_calls) == 1
    assert server.text().count("POST /v1/images/generations 499") == 2
    assert server.text().count(" client_closed") == 2  # the access log says why
    with server.http(timeout=30) as http:  # delivered: the same request again is a new image
        again = http.post("/images/generations", json={"prompt": PROMPT})
    assert again.status_code == 200 and len(fake_codex.exec_calls) == 2


def test_a_retry_joins_an_image_already_made_for_a_client_that_left(
    serve: Any, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    fake_codex.configure("success", delay=2)
    server = serve()
    with server.sdk(timeout=0.5) as sdk, pytest.raises(openai.APITimeoutError):
        sdk.images.generate(prompt=PROMPT, n=2, size="1024x1024")
    deadline = time.monotonic() + 30  # both images made while nobody waits for them
    while len(fake_codex.exec_calls) < 2 or survivors(fake_codex):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    started = time.monotonic()
    reply = server.sdk().images.generate(prompt=PROMPT, n=2, size="1024x1024")
    assert time.monotonic() - started < 2  # made already: handed over at once
    assert len(reply.data or []) == 2 and len(fake_codex.exec_calls) == 2
    other = server.sdk().images.generate(prompt=PROMPT, n=1, size="1024x1024")  # not the same
    assert other.data and len(fake_codex.exec_calls) == 3


def test_the_same_request_from_two_clients_at_once_is_two_images(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """Without an Idempotency-Key, only a request whose client left is joined: two people who
    ask for the same prompt at the same time each get an image of their own."""
    fake_codex.configure("success", delay=1)
    server = serve()
    replies: list[Any] = []

    def ask() -> None:
        replies.append(server.sdk().images.generate(prompt=PROMPT))

    asking = [threading.Thread(target=ask) for _ in range(2)]
    for thread in asking:
        thread.start()
    for thread in asking:
        thread.join(30)
    assert len(replies) == 2 and len(fake_codex.exec_calls) == 2
    first, second = (r.data[0].b64_json for r in replies)
    assert first and second


def test_an_idempotency_key_joins_its_request_and_replays_it(
    serve: Any, fake_codex: FakeCodex
) -> None:
    fake_codex.configure("success", delay=1)
    server = serve()
    key = {"Idempotency-Key": "order-7f3a"}
    replies: list[Any] = []

    def ask() -> None:
        replies.append(server.sdk().images.generate(prompt=PROMPT, extra_headers=key))

    asking = [threading.Thread(target=ask) for _ in range(2)]
    for thread in asking:
        thread.start()
    for thread in asking:
        thread.join(30)
    assert len(replies) == 2 and len(fake_codex.exec_calls) == 1
    assert replies[0].data[0].b64_json == replies[1].data[0].b64_json  # type: ignore[index]
    replay = server.sdk().images.generate(prompt=PROMPT, extra_headers=key)  # after delivery
    assert replay.data[0].b64_json == replies[0].data[0].b64_json  # type: ignore[index]
    assert len(fake_codex.exec_calls) == 1
    with pytest.raises(openai.BadRequestError) as raised:  # the key of another request
        server.sdk().images.generate(prompt=PROMPT + " at night", extra_headers=key)
    assert raised.value.body["param"] == "Idempotency-Key"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        server.sdk().images.generate(prompt=PROMPT, extra_headers={"Idempotency-Key": "k" * 300})
    assert len(fake_codex.exec_calls) == 1


def test_a_stream_that_gives_up_is_joined_by_its_retry(serve: Any, fake_codex: FakeCodex) -> None:
    fake_codex.configure("success", delay=3)
    server = serve()
    body = {"prompt": PROMPT, "stream": True}
    with server.http(timeout=1) as http, pytest.raises(TimeoutError):
        http.post("/images/generations", json=body)
    with server.sdk() as sdk:
        events = list(sdk.images.generate(prompt=PROMPT, stream=True))
    assert [e.type for e in events] == ["image_generation.completed"]
    assert png_ok(base64.b64decode(events[0].b64_json))
    assert len(fake_codex.exec_calls) == 1


def test_an_edit_retry_with_another_boundary_joins_the_first(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """A multipart body's boundary changes with each send: the request is the fields and the
    images' bytes, not the body's bytes."""
    fake_codex.configure("success", delay=3)
    server = serve()
    image = make_png(16, 16, "reference")
    with server.sdk(timeout=1) as sdk, pytest.raises(openai.APITimeoutError):
        sdk.images.edit(image=("a.png", image, "image/png"), prompt=PROMPT)
    reply = server.sdk().images.edit(image=("a.png", image, "image/png"), prompt=PROMPT)
    assert reply.data and len(fake_codex.exec_calls) == 1


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_with_a_request_in_flight(
    serve: Any, fake_codex: FakeCodex, tmp_path: Path, sig: int, code: int
) -> None:
    fake_codex.configure("success", delay=60)
    server = serve()
    answers: list[Reply] = []
    with server.http() as http:
        asking = threading.Thread(
            target=lambda: answers.append(http.post("/images/generations", json={"prompt": PROMPT}))
        )
        asking.start()
        deadline = time.monotonic() + 20
        while not fake_codex.exec_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        assert server.stop(sig) == code, server.text()
        assert time.monotonic() - started < 20
        asking.join(10)
    assert answers and answers[0].status_code == 503
    assert "stopping" in answers[0].json()["error"]["message"]
    assert not survivors(fake_codex)
    assert not list((tmp_path / "scratch").glob("codex-image-serve-*"))


def test_a_public_host_needs_a_token(serve: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CODEX_IMAGE_TOKEN"}
    server = serve("--host", "0.0.0.0", env=env, token=False)
    assert server.process.wait(10) == 2
    assert "needs a token" in server.text()


def test_a_loopback_server_makes_its_token_once(serve: Any, tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = {k: v for k, v in os.environ.items() if k != "CODEX_IMAGE_TOKEN"}
    env["XDG_CONFIG_HOME"] = str(config)
    server = serve(env=env, token=False)
    kept = config / "codex-cli-image" / "serve-token"
    assert kept.stat().st_mode & 0o777 == 0o600
    token = kept.read_text().strip()
    assert str(kept) in server.text() and token not in server.text()
    server.token = token
    assert server.sdk().models.list().data
    assert server.stop() == 0
    again = serve(env=env, token=False)
    assert kept.read_text().strip() == token
    again.token = token
    assert again.sdk().models.list().data


def test_serve_without_the_extra_names_the_install(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "uvicorn.py").write_text("raise ImportError('no uvicorn here', name='uvicorn')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    done = subprocess.run(
        [sys.executable, "-m", "codex_cli_image", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "'.[serve]'" in done.stderr and "Traceback" not in done.stderr


def test_a_killed_server_leaves_no_folder_and_no_codex(
    serve: Any, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    fake_codex.configure("success", delay=60)
    server = serve()
    with server.http(timeout=60) as http:
        asking = threading.Thread(
            target=lambda: _swallow(http.post, "/images/generations", json={"prompt": PROMPT})
        )
        asking.start()
        deadline = time.monotonic() + 20
        while not fake_codex.exec_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "scratch").glob("codex-image-serve-*"))
        server.process.kill()
        server.process.wait()
        asking.join(10)
    deadline = time.monotonic() + 10
    while (survivors(fake_codex) or list((tmp_path / "scratch").glob("codex-image-serve-*"))) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not survivors(fake_codex)
    assert not list((tmp_path / "scratch").glob("codex-image-serve-*"))


def _swallow(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except (OSError, http.client.HTTPException):  # the server died mid-request: expected
        pass


# --- found by an outside review ---------------------------------------------------------------


def _raw_socket(server: Server) -> socket.socket:
    parts = urllib.parse.urlsplit(server.base_url)
    return socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)


def _partial_post(server: Server, path: str = "/v1/images/generations") -> socket.socket:
    """A request whose body stops half way (a client that stalls, or is about to go)."""
    sock = _raw_socket(server)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"prompt": "a fox", "x": "')
    return sock


def test_a_client_gone_while_sending_its_body_is_a_499_without_a_traceback(serve: Any) -> None:
    server = serve()
    _partial_post(server).close()
    deadline = time.monotonic() + 10
    while "POST /v1/images/generations 499" not in server.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "POST /v1/images/generations 499" in server.text()
    assert "Traceback" not in server.text() and "unexpected" not in server.text()


def test_a_stop_while_a_body_is_half_sent_is_prompt_and_clean(serve: Any) -> None:
    server = serve()
    sock = _partial_post(server)
    time.sleep(0.3)
    started = time.monotonic()
    try:
        assert server.stop() == 0
    finally:
        sock.close()
    assert time.monotonic() - started < 8, server.text()
    assert "Traceback" not in server.text()


def test_deep_json_oversized_or_odd_uploads_and_impossible_n(
    serve: Any, fake_codex: FakeCodex
) -> None:
    server = serve("-j", "1", "--max-queue", "1")
    with server.http() as http:
        deep = b'{"prompt": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        got = http.post("/images/generations", content=deep)
        assert got.status_code == 400 and got.json()["error"]["param"] == "body"
        got = http.post("/images/generations", json={"prompt": PROMPT, "n": 3})
        assert got.status_code == 400 and got.json()["error"]["param"] == "n"
        assert got.headers["x-should-retry"] == "false"
        odd = {"image": ("notes.txt", b"just some text, not an image", "text/plain")}
        got = http.post("/images/edits", data={"prompt": PROMPT}, files=odd)
        assert got.status_code == 400 and got.json()["error"]["param"] == "image"
        assert "notes.txt" in got.text and "uploads" not in got.text
        big = {"image": ("big.png", make_png(8, 8, "x") + b"\0" * (26 * 1024 * 1024), "image/png")}
        got = http.post("/images/edits", data={"prompt": PROMPT}, files=big)
        assert got.status_code == 413 and "big.png" in got.text
        assert http.post("/images/generations/", json={"prompt": PROMPT}).status_code == 404
    assert fake_codex.exec_calls == []


@pytest.mark.parametrize("scenario", ["credits_exhausted", "rate_limited"])
def test_every_quota_answer_says_when_to_come_back(
    serve: Any, fake_codex: FakeCodex, scenario: str
) -> None:
    fake_codex.configure(scenario)
    server = serve()
    with server.http() as http:
        got = http.post("/images/generations", json={"prompt": PROMPT})
    assert got.status_code == 429 and int(got.headers["retry-after"]) > 0


def test_a_request_cannot_forge_a_log_line(serve: Any) -> None:
    server = serve()
    with server.http() as http:
        http.get("/x%0a2026-12-06T22:00:00%20POST%20/v1/images/generations%20200%201.0s%201B%00")
        http.get("/models")
    lines = server.text().splitlines()
    assert len([line for line in lines if "/v1/images/generations 200" in line]) == 0, lines
    assert "\0" not in server.text()


def test_an_unusable_out_dir_is_an_input_error(serve: Any, tmp_path: Path) -> None:
    taken = tmp_path / "a-file.png"
    taken.write_bytes(b"x")
    server = serve("--out-dir", str(taken))
    assert server.process.wait(10) == 2
    assert "--out-dir" in server.text() and "Traceback" not in server.text()


def test_a_gone_image_folder_is_a_server_error_without_its_path(
    serve: Any, fake_codex: FakeCodex, tmp_path: Path
) -> None:
    """#30 item 6: the server's own folder gone was a 400 invalid_request_error naming a server
    path with a command-line hint; it is a server error, and the path stays in the log."""
    images = tmp_path / "kept"
    server = serve("--out-dir", str(images))
    images.rmdir()
    with pytest.raises(openai.InternalServerError) as caught:
        server.sdk().images.generate(prompt=PROMPT)
    body = caught.value.response.json()["error"]
    assert body["type"] == "server_error" and body["code"] == "server_storage"
    assert str(tmp_path) not in caught.value.response.text and "--out-dir" not in body["message"]
    assert str(images) in server.text()
    assert fake_codex.exec_calls == []


def test_a_login_that_cannot_make_images_is_told_at_start(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """#31: serve started silently with a login that cannot make images; the first sign was a
    403 in the application. It says why on stderr before its URL, and still starts."""
    (fake_codex.codex_home / "auth.json").unlink()
    server = serve()
    assert server.base_url.startswith("http://")
    assert "images cannot be made yet" in server.text() and "codex login" in server.text()
    with server.http() as http:
        assert http.get("/healthz").status_code == 503


def test_the_misdirected_hint_names_the_real_address(serve: Any) -> None:
    server = serve()
    with server.http(headers={"host": "evil.example"}) as http:
        got = http.get("/models")
    assert got.status_code == 421 and server.base_url in got.json()["error"]["hint"]


def test_a_replayed_usage_limit_says_the_wait_left(tmp_path: Path) -> None:
    """Later requests get the usage limit at once: its hint tells the wait from now."""
    from codex_cli_image.errors import QuotaError
    from codex_cli_image.limits import UsageLimitMemory
    from codex_cli_image.serve import ServeOptions, Service

    class Idle:
        concurrency, closed = 2, False

    service = Service(Idle(), ServeOptions(TOKEN), tmp_path, tmp_path)  # type: ignore[arg-type]
    limit = QuotaError(
        "Limit.",
        reason="usage_limit",
        retry_after_s=7800.0,
        hint="Wait until the limit resets at 15:45 (in 2 h 10 min), or check x.",
    )
    service.limits.note(limit)
    with pytest.raises(QuotaError) as caught:
        service.admit(1)
    assert "(in 2 h 10 min)" in caught.value.hint  # nothing has passed yet
    now = [0.0]
    login = ["acc-1"]
    service.limits = UsageLimitMemory(lambda: login[0], clock=lambda: now[0])
    service.limits.note(limit)
    now[0] = 7800.0 - 90
    with pytest.raises(QuotaError) as caught:
        service.admit(1)
    assert "at 15:45 (in 2 min)" in caught.value.hint and caught.value.retry_after_s <= 90
    # #30: another login has limits of its own: the memory is forgotten.
    login[0] = "acc-2"
    service.admit(1)


def test_a_stream_of_n_images_sends_each_as_it_is_made(serve: Any, fake_codex: FakeCodex) -> None:
    server = serve()
    events = list(server.sdk().images.generate(prompt=PROMPT, n=2, stream=True))
    assert [e.type for e in events] == ["image_generation.completed"] * 2
    assert all(_png(e.b64_json) for e in events) and len(fake_codex.exec_calls) == 2


def test_json_sent_to_edits_is_told_to_use_a_form(serve: Any) -> None:
    server = serve()
    with server.http() as http:
        got = http.post("/images/edits", json={"prompt": PROMPT})
    assert got.status_code == 400 and "multipart/form-data" in got.json()["error"]["message"]


def test_a_conversion_pillow_refuses_sends_the_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paid image is never lost to the conversion (a WebP over 16383 px): it goes as PNG."""
    import anyio

    from codex_cli_image.serve import ServeOptions, Service
    from codex_cli_image.serve import service as server_module
    from codex_cli_image.serve.images_api import images_reply, parse_call
    from codex_cli_image.serve.service import Made

    def refuse(png: bytes, call: Any) -> bytes:
        raise OSError("encoder error -2 when writing image file")

    monkeypatch.setattr(server_module, "_convert", refuse)
    made = ImageResultStub.make(tmp_path)
    service = Service(None, ServeOptions(TOKEN), tmp_path, tmp_path)  # type: ignore[arg-type]
    call = parse_call({"prompt": PROMPT, "output_format": "webp"})
    entries, delivered = anyio.run(service.reply_entries, call, Made([made], []), "http://x/v1")
    assert delivered.output_format == "png" and _png(entries[0]["b64_json"])
    reply = images_reply(delivered, [(made, entries[0])], [], created=1)
    assert reply["output_format"] == "png"


def test_an_image_nobody_comes_back_for_is_kept_a_few_minutes_then_removed(
    tmp_path: Path,
) -> None:
    """#31: what a client that left paid for waits JOB_KEEP_S for its retry, then goes (its
    file too); a job that made nothing is not kept at all."""
    import anyio

    from codex_cli_image.serve import ServeOptions, Service
    from codex_cli_image.serve.options import JOB_KEEP_S

    class Idle:
        concurrency, closed = 2, False

    service = Service(Idle(), ServeOptions(TOKEN), tmp_path, tmp_path)  # type: ignore[arg-type]
    image = tmp_path / "img-20261207-120000-0123456789ab.png"
    image.write_bytes(make_png(8, 8, "kept"))

    class Result:
        path = image

    async def left_behind() -> None:
        with service.joined("request", None, 1) as watch:
            await watch.job.add(Result())  # type: ignore[arg-type]
            watch.job.finish(100.0)
        with service.joined("failed", None, 1) as watch:
            watch.job.finish(100.0)
        with service.joined("request", None, 1) as retry:  # the same request joins
            assert not retry.runs and retry.job.images

    anyio.run(left_behind)
    assert [job.fingerprint for job in service.jobs] == ["request"] and service.pending == 0
    service.reap(clock=100.0 + JOB_KEEP_S - 1)
    assert image.exists() and len(service.jobs) == 1
    service.reap(clock=100.0 + JOB_KEEP_S)
    assert not image.exists() and service.jobs == []


def test_the_usage_windows_in_healthz_and_on_image_replies(
    serve: Any, fake_codex: FakeCodex
) -> None:
    """#32: /healthz carries the last known windows (read through codex app-server when over a
    minute old: no image), and each image reply carries them in headers of our own."""
    server = serve()
    with server.http() as http:
        health = http.get("/healthz")
        assert health.status_code == 200
        limits = health.json()["usage_limits"]
        assert limits["primary"]["used_percent"] == 34.0 and limits["plan"] == "plus"
        assert http.get("/healthz").json()["usage_limits"] == limits  # within the minute
        assert len(fake_codex.app_server_calls) == 1 and fake_codex.exec_calls == []
        reply = http.post("/images/generations", json={"prompt": PROMPT})
        assert reply.status_code == 200
        assert reply.headers["x-codex-primary-used-percent"] == "34.5"  # the image's record
        assert reply.headers["x-codex-primary-window-minutes"] == "300"
        assert int(reply.headers["x-codex-primary-reset-at"]) > time.time()
        assert reply.headers["x-codex-secondary-window-minutes"] == "10080"
        assert reply.headers["x-codex-plan-type"] == "plus"
        after = http.get("/healthz").json()["usage_limits"]
        assert after["primary"]["used_percent"] == 34.5  # the image's, fresher than the read
    assert len(fake_codex.app_server_calls) == 1
    with server.sdk() as sdk:
        raw = sdk.images.with_raw_response.generate(prompt=PROMPT, stream=True)
        assert raw.headers["x-codex-primary-used-percent"] == "34.5"
        assert [event.type for event in raw.parse()] == ["image_generation.completed"]


_APP_GENERATIONS = {
    # Read from each application's source (2026-12): what it sends, field for field.
    "open-webui-default": {"model": "dall-e-2", "prompt": PROMPT, "n": 1, "size": "512x512",
                           "response_format": "b64_json"},
    "open-webui-gpt-image": {"model": "gpt-image-1", "prompt": PROMPT, "n": 1, "size": "auto"},
    "n8n": {"prompt": PROMPT, "model": "gpt-image-1-mini"},
    "n8n-dall-e-3": {"prompt": PROMPT, "model": "dall-e-3", "response_format": "b64_json",
                     "quality": "hd", "style": "vivid", "size": "1024x1792"},
    "n8n-legacy": {"prompt": PROMPT, "model": "dall-e-2", "response_format": "url", "n": 1},
    "librechat": {"model": "gpt-image-1", "prompt": PROMPT, "n": 1, "background": "auto",
                  "output_format": "png", "quality": "auto", "size": "auto"},
    "haystack": {"model": "gpt-image-2", "prompt": PROMPT, "n": 1, "quality": "auto",
                 "size": "1024x1024"},
}  # fmt: skip

_APP_EDITS = {
    "open-webui-one": ({"model": "", "prompt": PROMPT, "response_format": "b64_json"}, "image", 1),
    "open-webui-two": ({"model": "", "prompt": PROMPT}, "image[]", 2),
    "librechat": ({"model": "gpt-image-1", "prompt": PROMPT, "quality": "auto", "size": "auto"},
                  "image[]", 1),
    "n8n": ({"prompt": PROMPT, "model": "gpt-image-1", "n": "1", "size": "1024x1024",
             "quality": "auto"}, "image[]", 1),
}  # fmt: skip


def test_the_request_shapes_applications_send(serve: Any, fake_codex: FakeCodex) -> None:
    """#31: Open WebUI (its full install is 7 GB), n8n, LibreChat and Haystack, held to the
    requests they send (read from their source); each gets its image, in the form it reads."""
    server = serve()
    image = make_png(16, 16, "reference")
    with server.http() as http:
        for who, body in _APP_GENERATIONS.items():
            reply = http.post("/images/generations", json=body)
            assert reply.status_code == 200, (who, reply.text)
            (entry,) = reply.json()["data"]
            wants_url = body.get("response_format") == "url"
            assert (entry.get("url") is not None) == wants_url, who
            assert wants_url or png_ok(base64.b64decode(entry["b64_json"])), who
        for who, (fields, name, count) in _APP_EDITS.items():
            boundary = "appboundary42"
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                     f"{value}\r\n".encode() for key, value in fields.items()]  # fmt: skip
            for n in range(count):
                head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                        f'filename="{n}.png"\r\nContent-Type: image/png\r\n\r\n')  # fmt: skip
                parts.append(head.encode() + image + b"\r\n")
            content = b"".join(parts) + f"--{boundary}--\r\n".encode()
            kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
            reply = http.post("/images/edits", content=content, headers=kind)
            assert reply.status_code == 200, (who, reply.text)
            assert png_ok(base64.b64decode(reply.json()["data"][0]["b64_json"])), who
    assert len(fake_codex.exec_calls) == len(_APP_GENERATIONS) + len(_APP_EDITS)

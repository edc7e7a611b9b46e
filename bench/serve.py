"""8. ``codex-image serve``: what the HTTP server adds, how it holds a crowd, how soon a stream
speaks. The real codex at the mock, as for every other benchmark.

- Added time: the same image made by a warm in-process ``Client.agenerate`` (in a running event
  loop, as the server makes it) and by a POST to a warm server (its own warm client, the b64
  reply included), in alternating pairs; the median of the pairwise differences. Codex's own
  run varies by about 50 ms from run to run: a median near 0, either side, means nothing
  measurable was added.
- A crowd: 50 requests sent at once to a server with ``-j 2``: how many are answered with an
  image, and the server process's peak RSS (sampled every 20 ms; codex's processes not counted).
- A stream: seconds from the request to its first keep-alive comment, and the longest gap
  between keep-alives while the mock takes 20 s over the image.
- A small request beside a large reply: ``GET /v1/models`` every 20 ms while ten 12 MB images
  are made and sent as base64 in one reply (about 160 MB of JSON): its slowest answer.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator

import anyio
import psutil

from codex_cli_image import Client

from .common import PROMPT, BenchError, Lab, Row, Section, Stat, differences, log

TITLE = "8. The HTTP server (codex-image serve)"
REPEAT = 9
CROWD = 50
ADDED_LIMIT_MS = 30.0
CROWD_RSS_LIMIT_MB = 200.0
KEEPALIVE_LIMIT_S = 15.0
STREAM_IMAGE_DELAY_S = 20.0
BESIDE_LIMIT_MS = 50.0
LARGE_SIDE = 2000  # an incompressible RGB image of this side is about 12 MB as PNG
_TOKEN = "bench-token-0123456789abcdef"


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("serve", TITLE)
    with lab.backend("image") as mock:
        env = lab.home(mock, "serve")
        added = _added_time(lab, env, repeat)
        answered, peak = _crowd(lab, env)
    with lab.backend("image", image_delay_s=STREAM_IMAGE_DELAY_S) as mock:
        first, gap = _stream(lab, lab.home(mock, "serve-stream"))
    with lab.backend("image", image=_large_png(LARGE_SIDE)) as mock:
        beside = _beside_a_large_reply(lab, lab.home(mock, "serve-large"))
    p95 = sorted(beside)[int(len(beside) * 0.95)]
    section.rows += [
        Row(
            "added time over Client.agenerate (median of pairs)",
            Stat.of(added),
            "ms",
            f"<= {ADDED_LIMIT_MS:g} ms",
            Stat.of(added).median <= ADDED_LIMIT_MS,
        ),
        Row(
            f"{CROWD} requests at once, -j 2: answered with an image",
            Stat.of([answered]),
            "n",
            f"{CROWD}",
            answered == CROWD,
        ),
        Row(
            f"{CROWD} requests at once: server peak RSS",
            Stat.of([peak]),
            "MB",
            f"<= {CROWD_RSS_LIMIT_MB:g} MB",
            peak <= CROWD_RSS_LIMIT_MB,
        ),
        Row(
            "stream: first keep-alive",
            Stat.of([first]),
            "s",
            f"<= {KEEPALIVE_LIMIT_S:g} s",
            first <= KEEPALIVE_LIMIT_S,
        ),
        Row(
            f"stream: longest keep-alive gap ({STREAM_IMAGE_DELAY_S:g} s image)",
            Stat.of([gap]),
            "s",
            f"<= {KEEPALIVE_LIMIT_S:g} s",
            gap <= KEEPALIVE_LIMIT_S,
        ),
        Row(
            "GET /v1/models while 10 large images are sent as base64: 95th percentile",
            Stat.of([p95]),
            "ms",
            f"<= {BESIDE_LIMIT_MS:g} ms",
            p95 <= BESIDE_LIMIT_MS,
        ),
        Row("GET /v1/models meanwhile (min, median, max)", Stat.of(beside), "ms"),
    ]
    section.notes.append(
        "Added time: each pair makes the same image at the same mock, once with a warm "
        "in-process Client and once through a warm server (HTTP on loopback, JSON parsing, the "
        "base64 reply); pairs alternate which goes first. The crowd's RSS is the server process "
        "alone; its codex processes are the same as for any caller."
    )
    section.raw = {
        "added_ms": added,
        "crowd_answered": answered,
        "crowd_peak_rss_mb": peak,
        "stream_first_s": first,
        "stream_gap_s": gap,
        "models_beside_large_reply_ms": beside,
    }
    return section


@contextlib.contextmanager
def _server(
    lab: Lab, env: dict[str, str], *extra: str
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    command = lab.ours("serve", "--port", "0", "--codex", str(lab.shim), "--allow-relay", *extra)
    log_file = lab.folder("serve-log") / "serve.log"
    with log_file.open("w") as err:
        server = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**env, "CODEX_IMAGE_TOKEN": _TOKEN},
            start_new_session=True,
        )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://"):
            raise BenchError(f"serve did not start: {log_file.read_text()[-1500:]}")
        yield server, int(url.rsplit(":", 1)[1].split("/")[0])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def _post(port: int, body: dict[str, object], timeout: float = 300) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/v1/images/generations",
            body=json.dumps(body),
            headers={"authorization": f"Bearer {_TOKEN}", "content-type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _added_time(lab: Lab, env: dict[str, str], repeat: int) -> list[float]:
    """Pairs of the same image: ``Client.agenerate`` on a warm client in a running event loop
    (as the server itself makes it), and a POST to a warm server; run 0 warms both."""
    direct: dict[int, float] = {}
    served: dict[int, float] = {}
    out = lab.folder("serve-direct")

    async def pairs(port: int) -> None:
        async with Client(codex=lab.shim, allow_relay=True, env=env) as client:

            async def one_direct(n: int) -> None:
                started = time.perf_counter()
                await client.agenerate(PROMPT, output=out / f"direct-{n}.png")
                direct[n] = time.perf_counter() - started

            async def one_served(n: int) -> None:
                started = time.perf_counter()
                ask = functools.partial(_post, port, {"prompt": PROMPT})
                status, body = await anyio.to_thread.run_sync(ask)
                served[n] = time.perf_counter() - started
                if status != 200:
                    raise BenchError(f"serve answered {status}: {body[:500]!r}")

            for n in range(repeat + 1):  # alternating which goes first, as side_by_side does
                if n:
                    log(f"  serve: added time {n}/{repeat}")
                for one in (one_direct, one_served) if n % 2 else (one_served, one_direct):
                    await one(n)

    with _server(lab, env) as (_, port):
        anyio.run(pairs, port)
    runs = range(1, repeat + 1)
    return [d * 1000 for d in differences([served[n] for n in runs], [direct[n] for n in runs])]


def _crowd(lab: Lab, env: dict[str, str]) -> tuple[float, float]:
    log(f"  serve: {CROWD} requests at once")
    with _server(lab, env, "-j", "2", "--max-queue", str(CROWD)) as (server, port):
        process = psutil.Process(server.pid)
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], process.memory_info().rss / 1e6)
                time.sleep(0.02)

        statuses: list[int] = []

        def ask() -> None:
            statuses.append(_post(port, {"prompt": PROMPT}, timeout=900)[0])

        sampler = threading.Thread(target=sample)
        sampler.start()
        askers = [threading.Thread(target=ask) for _ in range(CROWD)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
        done.set()
        sampler.join()
    return float(statuses.count(200)), peak[0]


def _stream(lab: Lab, env: dict[str, str]) -> tuple[float, float]:
    log("  serve: a stream while the image takes 20 s")
    with _server(lab, env) as (_, port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            started = time.perf_counter()
            connection.request(
                "POST",
                "/v1/images/generations",
                body=json.dumps({"prompt": PROMPT, "stream": True}),
                headers={"authorization": f"Bearer {_TOKEN}", "content-type": "application/json"},
            )
            response = connection.getresponse()
            beats: list[float] = []
            completed = False
            for line in iter(response.readline, b""):
                if line.startswith(b": keep-alive"):
                    beats.append(time.perf_counter() - started)
                completed = completed or line.startswith(b"event: image_generation.completed")
            if not completed or not beats:
                raise BenchError("the stream ended without its image")
        finally:
            connection.close()
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    end = time.perf_counter() - started
    return beats[0], max([*gaps, end - beats[-1]])


def _large_png(side: int) -> bytes:
    """An RGB PNG of random pixels (incompressible: about 3 bytes a pixel), made fast."""
    rows = b"".join(b"\x00" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))  # fmt: skip


_POLLER = """
import http.client, json, sys, threading, time
port, token = int(sys.argv[1]), sys.argv[2]
latencies, done = [], threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.is_set():
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    connection.request("GET", "/v1/models", headers={"authorization": "Bearer " + token})
    connection.getresponse().read()
    latencies.append((time.perf_counter() - started) * 1000)
    connection.close()
    time.sleep(0.02)
print(json.dumps(latencies))
"""


def _beside_a_large_reply(lab: Lab, env: dict[str, str]) -> list[float]:
    """Milliseconds each ``GET /v1/models`` took while one request for n=10 large images was
    made and answered (its base64 and JSON are prepared off the event loop). The poller is a
    process of its own: this one also runs the mock, whose own base64 would slow it."""
    log("  serve: /v1/models beside a reply of ten large images")
    with _server(lab, env, "-j", "10") as (_, port):
        poller = subprocess.Popen(
            [sys.executable, "-c", _POLLER, str(port), _TOKEN],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            status, body = _post(port, {"prompt": PROMPT, "n": 10}, timeout=900)
        finally:
            out, _ = poller.communicate("", timeout=120)
        if status != 200 or len(json.loads(body)["data"]) != 10:
            raise BenchError(f"the large reply failed: {status} {body[:300]!r}")
    latencies: list[float] = json.loads(out)
    return latencies

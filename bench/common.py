"""What the benchmarks share: statistics, table rows, timed processes and a lab of mock backends.

A :class:`Lab` is one temporary folder holding everything a benchmark run creates: the user's
HOME, one ``CODEX_HOME`` per mock backend, workspaces and outputs. Nothing outside it is written,
and the real ``~/.codex`` is never read: HOME points into the lab.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from codex_cli_image import locate
from codex_cli_image.launcher import Codex
from codex_cli_image.testing import realcodex
from codex_cli_image.testing.backend import MockBackend, codex_home_for

PROMPT = "a red fox in the snow"
DRIVER = Path(__file__).with_name("driver.py")
"""The measured process of the memory and scaling benchmarks (run as a script)."""
RUN_TIMEOUT_S = 180.0
Unit = Literal["s", "ms", "µs", "MB", "x", "turns", "img/min", "n"]
_SCRUBBED = ("CODEX_", "OPENAI_", "FAKE_CODEX_")
_IEND = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"


class BenchError(RuntimeError):
    """The benchmark cannot run here, or a run did not do what it must (the message says)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- numbers and rows ---


@dataclass(frozen=True, slots=True)
class Stat:
    """Repeated measurements of one quantity."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise BenchError("no measurement was taken")
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    stat: Stat
    unit: Unit
    target: str = ""
    met: bool | None = None
    """Whether the target is met; None when the row has no target."""


@dataclass(slots=True)
class Section:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    """Every run's figures, for the results file."""


def fmt(value: float, unit: Unit) -> str:
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "µs":
        return f"{value:.0f} µs"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "img/min":
        return f"{value:.1f}"
    return f"{value:g}"


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratios of runs made side by side (pair by pair), so machine noise hits both alike."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def differences(first: Sequence[float], second: Sequence[float]) -> list[float]:
    return [a - b for a, b in zip(first, second, strict=True)]


def side_by_side(
    repeat: int, first: Callable[[int], None], second: Callable[[int], None], label: str
) -> None:
    """Run 0 of each (a warm-up, not counted), then runs 1..repeat in pairs, alternating which
    goes first so that drift on a noisy machine hits both alike."""
    first(0)
    second(0)
    for n in range(1, repeat + 1):
        log(f"  {label} {n}/{repeat}")
        for one in (first, second) if n % 2 else (second, first):
            one(n)


# --- processes ---


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    returncode: int
    stdout: bytes
    stderr: bytes
    ended_at: float
    """``time.time()`` when the process had exited."""
    png_at_s: float | None = None
    """Seconds from the start until a complete new PNG was seen (when watched for)."""


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdin: bytes = b"",
    timeout_s: float = RUN_TIMEOUT_S,
    watch: Path | None = None,
) -> Run:
    """Run a process to its exit and time it (wall clock, from spawn to reaped).

    It leads its own process group, killed whole on timeout. ``watch``: a folder whose new
    complete PNGs (``*/*.png`` ending in IEND) are looked for every 5 ms while it runs.
    """
    before = set(watch.glob("*/*.png")) if watch is not None else set()
    seen: list[float] = []
    done = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    watcher = None
    if watch is not None:
        watcher = threading.Thread(target=_watch_png, args=(watch, before, started, seen, done))
        watcher.start()
    try:
        out, err = proc.communicate(stdin, timeout=timeout_s)
    except BaseException:
        # SIGTERM first: our CLI turns it into its clean-up (codex runs in a session of its
        # own, which a SIGKILL to this group would not reach), then SIGKILL what is left.
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
    wall = time.perf_counter() - started
    return Run(wall, proc.returncode, out, err, time.time(), seen[0] if seen else None)


def _watch_png(
    folder: Path, before: set[Path], started: float, seen: list[float], done: threading.Event
) -> None:
    while not done.is_set():
        for path in set(folder.glob("*/*.png")) - before:
            with contextlib.suppress(OSError), path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size >= len(_IEND):
                    handle.seek(size - len(_IEND))
                    if handle.read() == _IEND:
                        seen.append(time.perf_counter() - started)
                        return
        time.sleep(0.005)


def check(run: Run, what: str) -> Run:
    if run.returncode != 0:
        tail = (run.stdout[-1500:] + b"\n" + run.stderr[-1500:]).decode("utf-8", "replace")
        raise BenchError(f"{what} exited with {run.returncode}:\n{tail}")
    return run


def new_pngs(folder: Path, before: set[Path]) -> list[Path]:
    return sorted(set(folder.glob("*/*.png")) - before, key=lambda p: p.stat().st_mtime)


# --- the lab ---


class Lab:
    """The folder, codex and commands every benchmark uses."""

    def __init__(self, root: Path, version: str) -> None:
        self.root = root
        self.version = version
        self.tmp = root / "tmp"
        self.tmp.mkdir(exist_ok=True)
        shim = realcodex.installed(version)
        if shim is None:
            raise BenchError(
                f"@openai/codex {version} is not installed in {realcodex.cache_root()}: run "
                f"`.venv/bin/python -m codex_cli_image.testing.realcodex {version}` (needs npm) "
                "or set CODEX_IMAGE_NPM_CACHE"
            )
        self.shim = shim
        self.user_home = root / "user-home"
        self.user_home.mkdir(parents=True, exist_ok=True)
        self.codex: Codex = locate(shim, env=self.base_env())
        if self.codex.via_shim:
            raise BenchError(f"no native codex binary was found behind {shim}")

    def base_env(self) -> dict[str, str]:
        """The caller's environment without codex settings, with HOME inside the lab."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
        env["HOME"] = str(self.user_home)
        env["TMPDIR"] = str(self.tmp)  # our runner's workspaces stay in the lab
        env["CODEX_IMAGE_CACHE_DIR"] = str(self.root / "cache")  # what we learn of codex, too
        return env

    @contextlib.contextmanager
    def backend(self, scenario: str, **options: Any) -> Iterator[MockBackend]:
        folder = self.folder(f"mock-{scenario}")
        with MockBackend(scenario, directory=folder, **options) as mock:
            yield mock

    def home(self, mock: MockBackend, name: str, *, analytics: bool = False) -> dict[str, str]:
        """A CODEX_HOME signed in to ``mock``; the environment (ours and codex's) to use it.

        ``analytics``: leave codex's analytics at their default (on), as a user's config does.
        """
        home = self.folder(f"codex-home-{name}")
        env = {**self.base_env(), **codex_home_for(mock, home)}
        if analytics:
            config = home / "config.toml"
            text = config.read_text("utf-8").replace("[analytics]\nenabled = false\n", "")
            config.write_text(text, "utf-8")
        return env

    def codex_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """What our runner gives codex (repaired PATH, npm markers) plus the CODEX_* of ``env``."""
        return {**self.codex.env, **{k: v for k, v in env.items() if k.startswith("CODEX_")}}

    def folder(self, name: str) -> Path:
        path = self.root / name
        n = 1
        while path.exists():
            n += 1
            path = self.root / f"{name}-{n}"
        path.mkdir(parents=True)
        return path

    def ours(self, *args: str) -> list[str]:
        """Our command line as installed (the console script), else ``python -m``."""
        script = Path(sys.executable).with_name("codex-image")
        if script.exists():
            return [str(script), *args]
        return [sys.executable, "-m", "codex_cli_image", *args]

    def generate_args(self, output: Path, *extra: str) -> list[str]:
        """``generate`` with the real codex (its npm shim, swapped for the native binary)."""
        return [
            "generate",
            PROMPT,
            "-o",
            str(output),
            "--codex",
            str(self.shim),
            "--allow-relay",
            "--json",
            *extra,
        ]

    def generate(self, output: Path, *extra: str) -> list[str]:
        return self.ours(*self.generate_args(output, *extra))

    def bare_exec(self, workspace: Path, *, sandbox: str = "read-only") -> list[str]:
        """``codex exec`` with the flags our runner passes (same native binary)."""
        return self.codex.command(
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--sandbox",
            sandbox,
            "--cd",
            str(workspace),
            "--config",
            "analytics.enabled=false",
            "-",
        )

    def leftovers(self) -> list[int]:
        """End and list the processes still running for this lab (codex or its helpers)."""
        mine = str(self.root)
        left = []
        for proc in psutil.process_iter(["pid", "status"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                    continue
                if proc.environ().get("CODEX_HOME", "").startswith(mine):
                    proc.kill()
                    left.append(proc.pid)
        return left


def machine(version: str) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load: tuple[float, ...] = ()
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "codex": version,
        "load_at_start": [round(x, 2) for x in load] if load else None,
    }

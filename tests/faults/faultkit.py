"""The fault suite's checker: what must hold after every fault, verified the same way each time.

:class:`Guard` sets up a run the way a user has it (a signed-in codex home whose auth.json holds
recognisable secrets, credential variables in the environment, an output folder with the user's
files, a reference image, a private temporary directory) and snapshots it. Tests drive our code
through :meth:`Guard.generate`, :meth:`Guard.cli` or :meth:`Guard.start_cli`, which record
everything our code says. :meth:`Guard.verify` then asserts, against the snapshot:

- no process left: no new live descendant of this test process, and no live process anywhere
  whose environment points at this test's codex home or fake codex (orphans re-parented away);
- no temporary directory left: the private ``TMPDIR`` holds what it held before;
- the user's files untouched: the same bytes (sha256) for every file in the output folder and
  the references folder, and no file added there except the images the test says were delivered
  (each a complete PNG);
- auth.json and config.toml never modified: the same bytes, mtime, mode and inode;
- nothing secret in any output: no token, key or marker from auth.json or the environment in
  stdout, stderr, JSON, exception text and tracebacks, log records or progress messages, and no
  credential variable in codex's environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from codex_cli_image import CodexImageError, ImageResult, generate
from codex_cli_image._watchdog import WATCHDOG
from codex_cli_image.results import Progress
from codex_cli_image.testing import FakeCodex, chatgpt_auth, make_png

from helpers import default_sigint, png_ok

MARK = "FAULT_SECRET"
PROMPT = "a lighthouse in a storm"
CREDENTIAL_ENV = {
    "CODEX_API_KEY": f"sk-{MARK}_ENV_CODEX_API_KEY_0123456789",
    "CODEX_ACCESS_TOKEN": f"{MARK}_ENV_ACCESS_TOKEN_0123456789",
    "OPENAI_API_KEY": f"sk-proj-{MARK}_ENV_OPENAI_0123456789",
}


def secret_auth() -> dict[str, Any]:
    """A working ChatGPT plus login whose every credential carries the marker."""
    document = chatgpt_auth(plan="plus", api_key=f"sk-proj-{MARK}_AUTH_KEY_0123456789abcdef")
    tokens = document["tokens"]
    for name in ("id_token", "access_token"):
        header_and_claims = tokens[name].rsplit(".", 1)[0]
        tokens[name] = f"{header_and_claims}.{MARK}_{name.upper()}_SIGNATURE"
    tokens["refresh_token"] = f"rt_{MARK}_REFRESH_0123456789abcdef"
    return document


def _secrets(auth: dict[str, Any]) -> list[str]:
    """Every string that must never be shown: whole credentials and each part of the JWTs."""
    tokens = auth["tokens"]
    values = [MARK, auth["OPENAI_API_KEY"], *CREDENTIAL_ENV.values()]
    for name in ("id_token", "access_token", "refresh_token"):
        values.append(tokens[name])
        values += [part for part in tokens[name].split(".") if len(part) >= 16]
    return values


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _fingerprint(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISREG(info.st_mode):
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return f"mode:{stat.filemode(info.st_mode)}"  # never opened: it may be a FIFO


def _tree(root: Path) -> dict[Path, str]:
    if not root.exists():
        return {}
    return {path: _fingerprint(path) for path in sorted(root.rglob("*"))}


def _protected_state(path: Path) -> tuple[object, ...] | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    return (_fingerprint(path), info.st_mtime_ns, info.st_mode, info.st_ino, info.st_size)


class _Said(logging.Handler):
    """Hands every record of the package's logger, with its traceback, to ``said``."""

    def __init__(self, said: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self._said = said

    def emit(self, record: logging.LogRecord) -> None:
        self._said(self.format(record))


class Guard:
    """One fault's surroundings, its snapshot and the checks of what must hold afterwards."""

    def __init__(self, fake: FakeCodex, root: Path, request: pytest.FixtureRequest) -> None:
        self.fake = fake
        self.root = root
        self.request = request
        self.temp = root / "tmp"
        self.out = root / "out"
        self.refs = root / "refs"
        self.target = self.out / "image.png"
        self.reference = self.refs / "ref.png"
        self.auth_file = fake.codex_home / "auth.json"
        self.config_file = fake.codex_home / "config.toml"
        for folder in (self.temp, self.out, self.refs):
            folder.mkdir()
        self.watched = [self.out, self.refs]
        auth = secret_auth()
        self.auth_file.write_text(json.dumps(auth, indent=2), "utf-8")
        self.auth_file.chmod(0o600)
        self.config_file.write_text('model_reasoning_effort = "low"\n', "utf-8")
        # The user's files: one at the output path, others beside it, a reference image.
        self.target.write_bytes(make_png(20, 10, "the user's own picture"))
        (self.out / "notes.txt").write_text("not ours to touch\n", "utf-8")
        (self.out / "older.png").write_bytes(make_png(8, 8, "an older picture"))
        self.reference.write_bytes(make_png(16, 16, "a reference the user drew"))
        self.secrets = _secrets(auth)
        self.scanned = 0  # texts searched for secrets as they were said
        self.leaks: list[tuple[str, str]] = []  # (secret, the text it was in)
        self.runs = 0
        self.verified = False
        self._lock = threading.Lock()
        self._said = _Said(self.said)
        self.snapshot()

    # --- before ---

    def snapshot(self) -> None:
        """Take the state to compare with; call again after arranging a fault on purpose."""
        me = psutil.Process()
        self._procs = {(p.pid, p.create_time()) for p in me.children(recursive=True)}
        self._temp = sorted(os.listdir(self.temp))
        self._files = self._user_files()
        self._protected = {p: _protected_state(p) for p in (self.auth_file, self.config_file)}

    def watch(self, folder: Path) -> None:
        """Count the files in ``folder`` as the user's too (and take a new snapshot)."""
        self.watched.append(folder)
        self.snapshot()

    def _user_files(self) -> dict[Path, str]:
        files: dict[Path, str] = {}
        for folder in self.watched:
            files |= _tree(folder)
        return files

    # --- driving our code, recording what it says ---

    def said(self, *texts: str) -> None:
        """Search what our code said for secrets now (nothing is kept: 50 runs stay flat)."""
        found = [(secret, text) for text in texts for secret in self.secrets if secret in text]
        with self._lock:
            self.scanned += len(texts)
            self.leaks += found

    def said_error(self, error: BaseException) -> None:
        self.said(str(error), repr(error), "".join(traceback.format_exception(error)))
        if isinstance(error, CodexImageError):
            self.said(json.dumps(error.to_dict()), error.hint, error.stderr_tail or "")

    def _count_run(self) -> None:
        with self._lock:
            self.runs += 1

    def generate(self, prompt: str = PROMPT, **kwargs: Any) -> ImageResult:
        """The library call, over the user's file at ``target`` unless told otherwise."""
        kwargs.setdefault("output", self.target)
        kwargs.setdefault("overwrite", True)
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("references", [self.reference])
        forward: Callable[[Progress], None] | None = kwargs.pop("on_progress", None)

        def on_progress(progress: Progress) -> None:
            self.said(repr(progress))
            if forward is not None:
                forward(progress)

        self._count_run()
        try:
            result = generate(prompt, on_progress=on_progress, **kwargs)
        except BaseException as error:
            self.said_error(error)
            raise
        self.said(json.dumps(result.to_dict()), repr(result))
        return result

    def fails(self, prompt: str = PROMPT, **kwargs: Any) -> CodexImageError:
        with pytest.raises(CodexImageError) as info:
            self.generate(prompt, **kwargs)
        return info.value

    def cli_argv(self, *args: str, prefix: Iterable[str] = ()) -> list[str]:
        return [*prefix, sys.executable, "-m", "codex_cli_image", *args]

    def cli(
        self, *args: str, prefix: Iterable[str] = (), timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        """``codex-image ARGS`` as a subprocess, with this test's environment."""
        self._count_run()
        proc = subprocess.run(
            self.cli_argv(*args, prefix=prefix),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
            timeout=timeout,
        )
        self.said(proc.stdout, proc.stderr)
        return proc

    def start_cli(self, *args: str) -> RunningCli:
        """``codex-image ARGS`` started in the background; see :class:`RunningCli`."""
        return self.start(self.cli_argv(*args))

    def start(
        self, argv: list[str], *, stdin: bool = False, ignoring: Sequence[int] = ()
    ) -> RunningCli:
        """Any host of our code (the CLI, a Python program) started in the background;
        ``stdin``: a pipe to write to (else it reads nothing); ``ignoring``: signals it starts
        with ignored (as ``nohup`` leaves SIGHUP)."""
        self._count_run()

        def prepare() -> None:
            default_sigint()
            for signum in ignoring:
                signal.signal(signum, signal.SIG_IGN)

        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            preexec_fn=prepare,
        )
        return RunningCli(proc, self)

    # --- after ---

    def leftover_processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for proc in psutil.Process().children(recursive=True):
            if proc.pid == WATCHDOG.pid:  # this process's own watchdog lives as long as we do
                continue
            with contextlib.suppress(psutil.Error):
                if (proc.pid, proc.create_time()) not in self._procs and _alive(proc):
                    found[proc.pid] = proc
        home, fake_dir = str(self.fake.codex_home), str(self.fake.dir)
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                env = proc.environ()
                ours = env.get("CODEX_HOME") == home or env.get("FAKE_CODEX_DIR") == fake_dir
                if ours and _alive(proc):
                    found[proc.pid] = proc
        return list(found.values())

    def verify(self, delivered: Iterable[Path] = ()) -> None:
        """Assert everything that must hold after a fault. ``delivered``: the images our code
        was meant to leave in the watched folders (each must be a complete PNG)."""
        leftovers = self.leftover_processes()
        described = []
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):  # ended meanwhile: not left behind
                described.append(f"{proc.pid} {' '.join(proc.cmdline()[:6])}")
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        assert described == [], "processes left behind"

        assert sorted(os.listdir(self.temp)) == self._temp, "temporary files left behind"

        expected = set(delivered)
        for path in expected:
            assert png_ok(path.read_bytes()), f"{path} is not a complete PNG"
        now = self._user_files()
        assert set(now) - set(self._files) - expected == set(), "files added to the user's"
        assert set(self._files) - set(now) == set(), "user files lost"
        changed = [p for p, print_ in self._files.items() if p not in expected and now[p] != print_]
        assert changed == [], "user files modified"

        for path, before in self._protected.items():
            assert _protected_state(path) == before, f"{path.name} was modified"

        assert self.scanned > 0, "nothing our code said was searched for secrets"
        assert self.leaks == [], "secrets in our output"
        reached = [c.env_present for c in self.fake.exec_calls if c.env_present]
        assert reached == [], "credential variables reached codex"

        self.verified = True
        self.request.node.user_properties.append(("leak_free_runs", self.runs))

    # --- fixture plumbing ---

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        logger = logging.getLogger("codex_cli_image")
        level = logger.level
        logger.addHandler(self._said)
        logger.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            logger.removeHandler(self._said)
            logger.setLevel(level)


class RunningCli:
    """A CLI process whose stdout and stderr are read as they come (no pipe ever fills)."""

    def __init__(self, proc: subprocess.Popen[str], guard: Guard) -> None:
        self.proc = proc
        self.guard = guard
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def events(self) -> list[str]:
        """The names of the ``--events`` lines on stderr so far."""
        names = []
        for line in list(self.err):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                names.append(json.loads(line)["event"])
        return names

    def wait_for_event(self, name: str, timeout: float = 30) -> None:
        wait_for(lambda: name in self.events() or self.proc.poll() is not None, timeout, name)
        assert name in self.events(), f"the CLI ended before {name}: {''.join(self.err)}"

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the CLI and record what it said (it is killed if it does not end)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        out, err = "".join(self.out), "".join(self.err)
        self.guard.said(out, err)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        assert self.proc.returncode is not None
        return self.proc.returncode, out, err


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def fake_process(fake: FakeCodex) -> psutil.Process | None:
    """The running `codex exec` of this fake, found in our process tree."""
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if (
                proc.environ().get("FAKE_CODEX_DIR") == str(fake.dir)
                and "exec" in proc.cmdline()
                and _alive(proc)
            ):
                return proc
    return None

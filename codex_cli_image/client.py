"""``Client``: settings once, images many, codex kept warm.

A desktop app, a daemon or the MCP server makes many images in one process. The client holds what
they share (:class:`~codex_cli_image.settings.Settings`: the codex executable, its home, the
model, the relay policy, the environment, default timeout and retries, one concurrency limit) and
what need not be redone per image: the located executable and its version, reused while the
binary's file is unchanged, and the login verdict, reused while ``auth.json`` and ``config.toml``
are unchanged and no run failed for auth. The module functions (:func:`~codex_cli_image.generate`
and friends) are throwaway clients.

One client may be used from many threads and event loops at once: its shared state is guarded by
thread locks, and what waits across loops (the limit, :meth:`Client.close`) polls a little.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import anyio

from . import _facts
from ._facts import Stamp, stamp
from ._limit import POLL_S, Limit, Runs
from ._sync import run_blocking, stoppable
from ._tasks import beside
from .app_server import READ_TIMEOUT_S, read_usage_limits
from .batch import (
    BatchOutcome,
    BatchProgressCallback,
    OutcomeCallback,
    RequestLike,
    coerce_requests,
    run_batch,
)
from .errors import AuthError, InputError, LaunchError, QuotaError, TransientError
from .failures import recorded_limit
from .launcher import (
    Codex,
    CodexVersion,
    locate,
    manifest_version,
    parse_version,
    probe_features,
    probe_version,
)
from .limits import UsageLimitMemory, account_of
from .lockdown import features_to_disable
from .output import CLAIMS
from .pipeline import Plan, Ready, Reporter, make_image, plan_image
from .preflight import Verdict, check_login, codex_home_path, profile_problem
from .request import ImageRequest
from .results import ImageResult, ProgressCallback
from .settings import Settings
from .usage import UsageLimits

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .diagnosis import DoctorReport
    from .settings import ClientOptions, ImageOptions

__all__ = ["Client"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_CLOSE_WAIT_S = 60.0
"""A run's own clean-up is bounded (terminate, grace, kill, reap): this only guards a hang."""
_STEP_LIMIT_S = 10.0


@dataclass(frozen=True, slots=True)
class _WarmCodex:
    codex: Codex
    version: CodexVersion
    disable: tuple[str, ...]
    files: tuple[str, ...]
    stamps: tuple[Stamp, ...]
    yield_setting: bool = False

    def fresh(self) -> bool:
        return tuple(stamp(f) for f in self.files) == self.stamps


@dataclass(frozen=True, slots=True)
class _WarmLogin:
    key: tuple[object, ...]
    verdict: Verdict


class Client:
    """Makes images with one set of settings, keeping codex warm between them.

    ::

        with Client(timeout=300) as client:
            fox = client.generate("a red fox in the snow", output="fox.png")
            hen = client.generate(ImageRequest("a hen", output="hen.png", aspect="square"))

        async with Client(concurrency=2) as client:
            result = await client.agenerate("a red fox")

    Takes the keywords of :class:`~codex_cli_image.settings.Settings` (codex, codex_home,
    profile, model, allow_relay, env, timeout, retries, concurrency, wait_for_turn,
    keep_codex_copy), or a ``Settings`` value first; they are checked here, once.

    Safe to share between threads and event loops. :meth:`close` (or leaving the ``with``
    block) ends every call in flight, their codex trees and temporary files included, before it
    returns; those calls raise :class:`~codex_cli_image.TransientError` (reason ``cancelled``),
    later calls :class:`~codex_cli_image.InputError` (``client_closed``).
    """

    def __init__(
        self, settings: Settings | None = None, /, **options: Unpack[ClientOptions]
    ) -> None:
        if settings is None:
            settings = Settings.from_options(options)
        elif options:
            settings = replace(settings, **options)
        self.settings = settings
        self._env = dict(os.environ if settings.env is None else settings.env)
        # Made absolute once: a later chdir must not move the home the login is judged in.
        self._home = codex_home_path(self._env, settings.codex_home)
        self._cache = _facts.cache_dir(self._env)
        given = settings.codex_home is not None and os.fspath(settings.codex_home) != ""
        self._codex_home: Path | None = self._home if given else None
        if not given and self._env.get("CODEX_HOME"):
            self._env["CODEX_HOME"] = str(self._home)
        self._limit = Limit(settings.concurrency)
        self._runs = Runs()
        self._preflight_lock = threading.Lock()  # one probe at a time: the rest reuse it
        self._state_lock = threading.Lock()
        self._warm_codex: _WarmCodex | None = None
        self._warm_login: _WarmLogin | None = None
        self._login_epoch = 0  # bumped when a run fails for auth: an older verdict is void
        # A usage limit codex recorded (a refusal, or a window used up by the last image): later
        # calls get it at once, without running codex, until it resets.
        self._usage_memory = UsageLimitMemory(partial(account_of, self._home))

    @property
    def codex_home(self) -> Path:
        """The codex home this client checks and runs codex with."""
        return self._home

    @property
    def usage_limit_memory(self) -> UsageLimitMemory:
        """The usage limit this client answers calls with until it resets (hosts that refuse
        work before it reaches the client, as serve's queue does, ask it too)."""
        return self._usage_memory

    @property
    def concurrency(self) -> int:
        return self._limit.total

    @property
    def closed(self) -> bool:
        return self._runs.closing

    # --- one image -------------------------------------------------------------------------

    async def agenerate(
        self,
        request: ImageRequest | str,
        *,
        # Per call, as the client's default: the whole call, retries included.
        timeout: float | None = None,  # noqa: ASYNC109
        retries: int | None = None,
        on_progress: ProgressCallback | None = None,
        **image: Unpack[ImageOptions],
    ) -> ImageResult:
        """Make one image: a prompt with the per-image keywords of
        :func:`~codex_cli_image.generate` (output, references, aspect, size, transparent, fit,
        overwrite), or an :class:`~codex_cli_image.ImageRequest`.

        timeout / retries: this call's, instead of the client's. on_progress: called with each
        :class:`~codex_cli_image.Progress` (phase ``queued`` when the call waits for a free
        slot). Raises :class:`~codex_cli_image.CodexImageError`.
        """
        report = Reporter(on_progress)
        request = _as_request(request, image)
        settings = self.settings.per_call(timeout, retries)

        async def work() -> ImageResult:
            plan = await anyio.to_thread.run_sync(plan_image, request)
            return await self._queued(plan, settings, report)

        return await self._guarded(work)

    def generate(
        self,
        request: ImageRequest | str,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        on_progress: ProgressCallback | None = None,
        **image: Unpack[ImageOptions],
    ) -> ImageResult:
        """The blocking twin of :meth:`agenerate`, safe from any thread (its own event loop, in
        this thread or a worker's); Ctrl-C ends codex's tree before ``KeyboardInterrupt``
        propagates. ``on_progress`` is called from the thread that runs that loop."""
        report = Reporter(on_progress)
        request = _as_request(request, image)
        settings = self.settings.per_call(timeout, retries)
        self._refuse_if_closed()
        plan = plan_image(request)  # before a worker thread and an event loop start
        return run_blocking(partial(self._guarded, partial(self._queued, plan, settings, report)))

    # --- many images -----------------------------------------------------------------------

    @asynccontextmanager
    async def agenerate_many(
        self,
        requests: Iterable[RequestLike],
        *,
        out_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (per job)
        retries: int | None = None,
        on_progress: BatchProgressCallback | None = None,
        lines: Sequence[int] | None = None,
    ) -> AsyncIterator[AsyncIterator[BatchOutcome]]:
        """A batch, as :func:`~codex_cli_image.agenerate_many`, within this client's concurrency
        (shared with its other calls) and settings."""
        jobs = coerce_requests(requests)
        settings = self.settings.per_call(timeout, retries)

        def make(plan: Plan, progress: ProgressCallback | None) -> Awaitable[ImageResult]:
            return self._make(plan, settings, Reporter(progress))

        self._runs.enter()
        try:
            async with run_batch(
                jobs, limit=self._limit, make=make, out_dir=out_dir, overwrite=overwrite,
                on_progress=on_progress, lines=lines, stop_when=self._runs.cancel_on_close,
            ) as outcomes:  # fmt: skip
                # A close ends the batch; every job still gets its outcome (an image already
                # saved as "ok", the others "cancelled"), so nothing is raised for it here.
                yield outcomes
        finally:
            self._runs.exit()

    def generate_many(
        self,
        requests: Iterable[RequestLike],
        *,
        out_dir: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        timeout: float | None = None,
        retries: int | None = None,
        on_progress: BatchProgressCallback | None = None,
        on_outcome: OutcomeCallback | None = None,
        lines: Sequence[int] | None = None,
    ) -> list[BatchOutcome]:
        """The blocking twin of :meth:`agenerate_many`, as :func:`~codex_cli_image.generate_many`:
        every outcome, in request order; ``on_outcome`` as each job finishes."""
        jobs = coerce_requests(requests)  # bad input raises before a thread and a loop start

        async def collect() -> list[BatchOutcome]:
            collected: list[BatchOutcome] = []
            async with self.agenerate_many(
                jobs, out_dir=out_dir, overwrite=overwrite, timeout=timeout, retries=retries,
                on_progress=on_progress, lines=lines,
            ) as outcomes:  # fmt: skip
                async for outcome in outcomes:
                    collected.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
            return sorted(collected, key=lambda outcome: outcome.index)

        return run_blocking(collect)

    # --- the usage windows -----------------------------------------------------------------

    async def ausage_limits(self, *, timeout: float | None = None) -> UsageLimits:  # noqa: ASYNC109
        """How much of the subscription's usage windows (5 hours, a week) is used, when each
        resets, and the plan, as the backend reports them now: read through ``codex
        app-server``, with no model request and no image spent. codex and the login are
        checked first, as for an image (the same errors). timeout: seconds (default 30)."""
        limit = READ_TIMEOUT_S if timeout is None else timeout

        async def work() -> UsageLimits:
            deadline = time.monotonic() + limit
            ready = await self._preflight(deadline)
            ready.verdict.raise_for_problem()
            try:
                usage = await read_usage_limits(
                    ready.codex, ready.home, disable=ready.disable,
                    timeout_s=max(0.1, deadline - time.monotonic()),
                )  # fmt: skip
            except AuthError:
                self._forget_login()
                raise
            self._note_usage(usage, fresh=True)
            return usage

        return await self._guarded(work)

    def usage_limits(self, *, timeout: float | None = None) -> UsageLimits:
        """The blocking twin of :meth:`ausage_limits`, safe from any thread."""
        self._refuse_if_closed()
        return run_blocking(partial(self.ausage_limits, timeout=timeout))

    def check(self) -> None:
        """Raise what a call would raise before codex runs (launch, login, profile), spending
        no quota; from warm state when nothing changed, so a repeated check spawns nothing and
        takes microseconds. For hosts that show or hide an image tool on readiness."""
        ready = self._prepare(time.monotonic() + _STEP_LIMIT_S, stop=threading.Event())
        ready.verdict.raise_for_problem()

    def doctor(self, *, usage: bool = True) -> DoctorReport:
        """:func:`~codex_cli_image.doctor` with this client's settings: checked afresh."""
        from .diagnosis import doctor

        return doctor(codex=self.settings.codex, codex_home=self._codex_home,
                      profile=self.settings.profile, allow_relay=self.settings.allow_relay,
                      env=self._env, usage=usage)  # fmt: skip

    # --- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """End every call in flight (codex trees ended, temporary files removed) and refuse new
        ones. Returns once they are gone. From async code, use :meth:`aclose`: called from the
        thread whose loop runs calls of this client (a progress callback, a coroutine), it
        cannot wait for them, so it only tells them to end and returns."""
        self._runs.close()
        if self._runs.here:  # waiting would block the loop they need to end: a deadlock
            log.warning("Client.close() from the loop of its calls: they end once it runs on; "
                        "use `await client.aclose()`")  # fmt: skip
            return
        if not self._runs.wait_idle(_CLOSE_WAIT_S):
            log.warning("calls of a closed Client were still ending after %g s", _CLOSE_WAIT_S)

    async def aclose(self) -> None:
        """:meth:`close` for async code: waits without blocking the event loop."""
        self._runs.close()
        with anyio.move_on_after(_CLOSE_WAIT_S) as waited:
            while not self._runs.idle:  # noqa: ASYNC110 (calls on other loops and threads)
                await anyio.sleep(POLL_S)
        if waited.cancelled_caught:
            log.warning("calls of a closed Client were still ending after %g s", _CLOSE_WAIT_S)

    def __enter__(self) -> Client:
        self._refuse_if_closed()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        self._refuse_if_closed()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- inside ----------------------------------------------------------------------------

    def _refuse_if_closed(self) -> None:
        self._runs.enter()
        self._runs.exit()

    async def _guarded(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` as a call in flight: ended (cancelled, then cleaned up) if the client
        closes meanwhile."""
        self._runs.enter()
        try:
            done = await beside(work, self._runs.cancel_on_close)
        finally:
            self._runs.exit()
        if done is None:
            raise _closed_mid_run()
        return done[0]

    async def _queued(self, plan: Plan, settings: Settings, report: Reporter) -> ImageResult:
        """One image once a slot is free. The timeout is the whole call's: time in the queue
        counts (a host such as Hermes gives up after its own deadline, and an image made after
        it is paid for nothing)."""
        held = self._usage_memory.in_force()
        if held is not None:  # the image would be refused: no codex run, no slot
            raise held
        waiting_message = f"waiting for a free slot ({self._limit.total} images at once)"
        left = settings.timeout - (time.monotonic() - report.started)
        with anyio.move_on_after(left) as waiting:
            await self._limit.acquire(partial(report, "queued", waiting_message))
        if waiting.cancelled_caught:
            raise TransientError(
                f"No image could start within {settings.timeout:g} s: "
                f"{self._limit.total} were being made (the client's concurrency).",
                reason="timeout",
                hint="Allow more time, or make fewer images at once.",
            )
        try:
            return await self._make(plan, settings, report)
        finally:
            self._limit.release()

    async def _make(self, plan: Plan, settings: Settings, report: Reporter) -> ImageResult:
        """One image, the slot already held, its output files held against other writers; an
        auth or launch failure voids the warm state."""
        try:
            with CLAIMS.hold(plan.writes):
                result = await make_image(plan, self._preflight, settings, report)
        except AuthError:
            self._forget_login()
            raise
        except LaunchError:
            self._warm_codex = None
            raise
        except QuotaError as error:
            self._usage_memory.note(error)
            raise
        self._note_usage(result.usage_limits)
        return result

    def _note_usage(self, usage: UsageLimits | None, *, fresh: bool = False) -> None:
        """Remember a window codex recorded as used up. A ``fresh`` read (made now) with none
        used up clears what was remembered (the limit was lifted, or credits were bought); an
        image's record does not: it may be older than a refusal another image met since."""
        limit = recorded_limit(usage, dt.datetime.now().astimezone())
        if limit is not None:
            self._usage_memory.note(limit)
        elif fresh and usage is not None and usage.reached is None:
            self._usage_memory.forget()

    async def _preflight(self, deadline: float) -> Ready:
        return await stoppable(partial(self._prepare, deadline))

    def _prepare(self, deadline: float, *, stop: threading.Event) -> Ready:
        """The executable, its version and the login: from warm state when nothing changed.
        Runs in a worker thread; ``stop`` ends it (and any child) at once."""
        while not self._preflight_lock.acquire(timeout=POLL_S):
            if stop.is_set():
                raise TransientError("Stopped.", reason="stopped", hint="Retry.")
            if time.monotonic() >= deadline:
                raise TransientError(
                    "No time was left to check codex and the login.",
                    reason="timeout",
                    hint="Allow more time (--timeout, timeout=), or make fewer images at once.",
                )
        try:
            warm = self._codex_for(deadline, stop)
            try:
                verdict = self._login_for(warm.codex, warm.version, deadline, stop)
            except OSError as exc:  # the codex home's files: a login problem, never a crash
                raise _home_error(self._home, exc) from None
        finally:
            self._preflight_lock.release()
        return Ready(warm.codex, warm.version, self._home, verdict, warm.disable,
                     warm.yield_setting)  # fmt: skip

    def _codex_for(self, deadline: float, stop: threading.Event) -> _WarmCodex:
        warm = self._warm_codex
        if warm is not None and warm.fresh():
            return warm
        found = locate(self.settings.codex, env=self._env)
        manifest = found.path.parent.parent / "codex-package.json"
        files = tuple(dict.fromkeys(str(p) for p in (found.found, *found.argv, manifest)))
        stamps = tuple(stamp(f) for f in files)  # before the probes: a change during them shows
        # What a probe learns is kept on disk per binary too: the next process need not ask.
        binary = tuple(stamp(f) for f in found.argv)
        kept = _facts.load(self._cache, binary)
        version = manifest_version(found)
        if version is None and kept.version is not None:
            version = parse_version(f"codex-cli {kept.version}")
        learned = kept
        if version is None:
            version = probe_version(found, timeout_s=_left(deadline), stop=stop)
            learned = replace(learned, version=str(version))
        if kept.features is None or kept.yield_setting is None:
            probed = probe_features(found, timeout_s=_left(deadline), stop=stop)
            if probed is not None:
                learned = replace(learned, features=probed[0], yield_setting=probed[1])
        if learned != kept:
            _facts.save(self._cache, binary, learned)
        if learned.features is None:
            raise _features_unknown(found)
        warm = _WarmCodex(found, version, features_to_disable(learned.features), files, stamps,
                          bool(learned.yield_setting))  # fmt: skip
        if None not in stamps[:-1]:  # no manifest (stamp None) is a state too
            self._warm_codex = warm
        return warm

    def _login_for(
        self, codex: Codex, version: CodexVersion, deadline: float, stop: threading.Event
    ) -> Verdict:
        files = [self._home / "auth.json", self._home / "config.toml"]
        if self.settings.profile is not None:
            problem = profile_problem(self._home, self.settings.profile, version.release)
            if problem is not None:
                raise problem
            files.append(self._home / f"{self.settings.profile}.config.toml")
        with self._state_lock:
            epoch = self._login_epoch
            warm = self._warm_login
        key = (codex.argv, version.release, *(stamp(f) for f in files))
        if warm is not None and warm.key == key:
            return warm.verdict
        verdict = check_login(
            self._codex_home, env=self._env, allow_relay=self.settings.allow_relay, codex=codex,
            codex_version=version.release, timeout_s=_left(deadline), stop=stop,
            profile=self.settings.profile,
        )  # fmt: skip
        # Only a verdict that allows is kept, and only one read from files: a refusal is read
        # again each time (the user's fix, codex login, is seen at once), and credentials in
        # the OS keyring can change without any file changing.
        from_files = verdict.store == "file" or (verdict.store == "auto" and key[2] is not None)
        with self._state_lock:
            if verdict.ok and from_files and epoch == self._login_epoch:
                self._warm_login = _WarmLogin(key, verdict)
            elif epoch == self._login_epoch:
                self._warm_login = None
        return verdict

    def _forget_login(self) -> None:
        with self._state_lock:
            self._login_epoch += 1
            self._warm_login = None


def _left(deadline: float) -> float:
    """Time for a preflight step: its own limit, cut to the call's deadline."""
    return max(0.05, min(_STEP_LIMIT_S, deadline - time.monotonic()))


def _as_request(request: ImageRequest | str, image: Mapping[str, object]) -> ImageRequest:
    if isinstance(request, str):
        return ImageRequest(request, **image)  # type: ignore[arg-type]
    if isinstance(request, ImageRequest):
        return replace(request, **image) if image else request  # type: ignore[arg-type]
    raise InputError(
        f"A {type(request).__name__} is not a request.",
        reason="invalid_request",
        hint="Pass a prompt string or an ImageRequest.",
    )


def _home_error(home: Path, exc: OSError) -> AuthError:
    where = exc.filename or home
    return AuthError(
        f"The codex home {home} cannot be read ({where}: {exc.strerror or type(exc).__name__}).",
        reason="codex_home_unreadable",
        hint="Give your user access to it and the folders above it, or point CODEX_HOME at a "
        "directory you own.",
    )


def _features_unknown(codex: Codex) -> LaunchError:
    # Without the names, the shell cannot be taken from the model: no turn is started then.
    return LaunchError(
        f"`{codex.path} features list` did not answer, so its shell and other tools cannot be "
        "turned off for the model.",
        reason="features_unknown",
        hint="Run `codex features list` by hand to see what fails; update or reinstall codex "
        "(`npm install -g @openai/codex@latest`).",
    )


def _closed_mid_run() -> TransientError:
    return TransientError(
        "The Client was closed while the image was being made; nothing was saved.",
        reason="cancelled",
        hint="Retry with a client that stays open until the call returns.",
    )

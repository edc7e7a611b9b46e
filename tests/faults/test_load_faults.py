"""Load as a fault: 50 generations in a row in one process (no growth of file descriptors,
threads or memory, measured), and 8 at once sharing one codex home (every result its own
image, attributed to its own codex thread, no cross-talk)."""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil
import pytest

from codex_cli_image import CodexImageError, ImageResult

from faultkit import PROMPT, Guard, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

# One round of outcomes: deliveries (one after stopping a codex that hangs with a helper) and
# each way of failing: quota, an invalid file, a crash, a timeout that kills a tree.
ROUND: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    *[("success", {}, {}, "ok")] * 5,
    ("hang_after_image", {"helper": True}, {}, "ok"),
    ("usage_limit", {}, {}, "usage_limit"),
    ("invalid_png", {}, {}, "invalid_image"),
    ("success", {"sigkill_at": "turn"}, {"retries": 0}, "codex_failed"),
    ("grandchild", {}, {"timeout": 1.5}, "timeout"),
]
RUNS = 50
# Bounds for 50 runs after a warm-up round. The runs leave nothing behind, so descriptors and
# threads return exactly to where they were; memory may move a little with the allocator and
# caches. Traced growth measured 16-19 KB over 50 runs, quiet and beside a full suite, once
# psutil's table of every process on the machine is left out (see _NOT_OURS). A leak grows in
# every run, so it is judged on each half of the runs: now and then one half takes a one-time
# allocation of 50-60 KB (seen twice in some ten runs beside other tests, never alone), which is
# not a leak and does not come back in the other half. The leak this guards against (a
# per-thread cache, 1.7 KB a run) grows 42 KB in each half, so 24 KB per half catches a leak of
# 1 KB a run.
RSS_GROWTH_MAX = 8 * 1024 * 1024
TRACED_GROWTH_MAX = 24 * 1024  # per half of the runs


def _one(guard: Guard, n: int, folder: Path) -> str | None:
    """One run of the round; a delivery's sha256 only: what the test keeps must not look like a
    leak (a result with its paths is ~800 B, 25 KB over the measured runs)."""
    scenario, options, call, expected = ROUND[n % len(ROUND)]
    guard.fake.configure(scenario, **options)
    kwargs: dict[str, Any] = {"output": folder, "overwrite": False, "references": (), **call}
    if expected == "ok":
        result = guard.generate(f"{PROMPT} {n}", **kwargs)
        assert result.path.parent == folder
        return result.sha256
    error: CodexImageError = guard.fails(f"{PROMPT} {n}", **kwargs)
    assert error.reason == expected, (n, error.reason, error.message)
    return None


# Not counted: psutil's table of every process on the machine (it grows and shrinks with what
# else runs there, e.g. a second test suite) and the test's own formatting of tracebacks.
_NOT_OURS = [tracemalloc.Filter(False, pattern) for pattern in (
    "*/psutil/*", "*/traceback.py", "*/linecache.py", tracemalloc.__file__)]  # fmt: skip


def _retained() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_NOT_OURS)


def _settled(measure: Any, baseline: int) -> int:
    """The value once it is back at the baseline (worker threads end a moment after a run)."""
    deadline = time.monotonic() + 5
    while measure() != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    value: int = measure()
    return value


def test_fifty_sequential_generations_in_one_process(guard: Guard, tmp_path: Path) -> None:
    me = psutil.Process()
    folder = tmp_path / "many"
    folder.mkdir()
    before = me.num_threads()
    tracemalloc.start()
    try:
        results = [_one(guard, n, folder) for n in range(len(ROUND))]  # warm-up: every path
        wait_for(lambda: me.num_threads() <= before, 5, "the warm-up's threads to end")
        gc.collect()  # what is retained, not the cycles a failed run leaves for the collector
        fds, threads, rss = me.num_fds(), me.num_threads(), me.memory_info().rss
        snapshots = [_retained()]
        for half in range(2):
            start = len(ROUND) + half * RUNS // 2
            for n in range(start, start + RUNS // 2):
                results.append(_one(guard, n, folder))
            gc.collect()
            snapshots.append(_retained())
        halves = [
            sum(s.size_diff for s in snapshots[i + 1].compare_to(snapshots[i], "filename"))
            for i in range(2)
        ]
    finally:
        tracemalloc.stop()
    assert _settled(me.num_fds, fds) == fds, "file descriptors grew"
    assert _settled(me.num_threads, threads) == threads, "threads grew"
    rss_growth = me.memory_info().rss - rss
    print(f"50 runs: fds {fds}, threads {threads}, RSS {rss_growth:+d} B, "
          f"traced {halves[0]:+d} B and {halves[1]:+d} B")  # fmt: skip
    assert rss_growth < RSS_GROWTH_MAX and min(halves) < TRACED_GROWTH_MAX

    delivered = [r for r in results if r is not None]
    assert len(delivered) == 6 * (len(ROUND) + RUNS) // len(ROUND)
    on_disk = [hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()]
    assert sorted(on_disk) == sorted(delivered) and len(set(delivered)) == len(delivered)
    assert guard.runs == len(ROUND) + RUNS
    guard.verify()


def _attributed(guard: Guard, results: list[ImageResult], prompts: list[str]) -> None:
    """Each result is its own image, made by the codex thread it names, for its own prompt."""
    assert len({r.path for r in results}) == len(results)
    assert len({r.sha256 for r in results}) == len(results)
    by_thread = {call.thread_id: call for call in guard.fake.exec_calls}
    assert sorted(by_thread) == sorted(r.thread_id for r in results)
    for result, prompt in zip(results, prompts, strict=True):
        data = result.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == result.sha256
        assert f"thread_id\x00{result.thread_id}".encode() in data  # codex's provenance chunk
        assert by_thread[result.thread_id].raw["image_sha256"] == result.sha256
        assert prompt in (by_thread[result.thread_id].stdin or "")
    assert guard.fake.generated_images() == []  # every codex copy delivered and removed


@pytest.mark.parametrize("prompts", ["distinct", "same"])
def test_eight_parallel_runs_share_one_codex_home(
    guard: Guard, tmp_path: Path, prompts: str
) -> None:
    """Threads calling the blocking API at once; with one prompt, the names collide too."""
    folder = tmp_path / "shared"
    folder.mkdir()
    guard.fake.configure("success", delay=0.5)  # long enough for all eight to overlap
    asked = [PROMPT if prompts == "same" else f"{PROMPT}, number {n}" for n in range(8)]
    results: list[ImageResult | None] = [None] * 8
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def one(n: int) -> None:
        try:
            start.wait()
            results[n] = guard.generate(asked[n], output=folder, overwrite=False)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == []
    done = [r for r in results if r is not None]
    assert len(done) == 8
    _attributed(guard, done, asked)
    assert sorted(folder.iterdir()) == sorted(r.path for r in done)
    guard.verify()


def test_eight_parallel_clis_share_one_codex_home(guard: Guard, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    guard.fake.configure("success", delay=0.5)
    asked = [f"{PROMPT}, number {n}" for n in range(8)]
    running = [guard.start_cli("generate", prompt, "-o", str(folder), "--json") for prompt in asked]
    documents = []
    for cli in running:
        code, out, err = cli.finish(timeout=120)
        assert code == 0, err
        documents.append(json.loads(out))
    results = [
        ImageResult(
            path=Path(d["path"]), bytes=d["bytes"], sha256=d["sha256"], width=d["width"],
            height=d["height"], format=d["format"], thread_id=d["thread_id"],
            codex_version=d["codex_version"], elapsed_s=d["elapsed_s"], usage=d["usage"],
            revised_prompt=d["revised_prompt"], attempts=d["attempts"],
            warnings=tuple(d["warnings"]), image_source=d["image_source"],
        )
        for d in documents
    ]  # fmt: skip
    _attributed(guard, results, asked)
    guard.verify()

"""7. Watchdog: what ending codex on our death costs. Once per host process, the start of its
``/bin/sh`` watchdog (timed in this process, a fresh watchdog each round) and the shell's memory;
per image, telling it of codex's group and forgetting it (two writes to a pipe)."""

from __future__ import annotations

import time

import psutil

from codex_cli_image._watchdog import Watchdog

from .common import Lab, Row, Section, Stat, log

TITLE = "7. Watchdog (codex ends when its caller dies)"
REPEAT = 20
START_LIMIT_US = 10_000.0
PER_RUN_LIMIT_US = 1_000.0


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("watchdog", TITLE)
    starts, per_run, rss = [], [], []
    for n in range(repeat):
        if n % 5 == 0:
            log(f"  watchdog {n}/{repeat}")
        watchdog = Watchdog()
        began = time.perf_counter()
        watchdog.start()
        starts.append((time.perf_counter() - began) * 1e6)
        began = time.perf_counter()
        for pgid in range(1_000_000, 1_000_100):  # no such groups: nothing is ever signalled
            watchdog.watch(pgid)
            watchdog.forget(pgid)
        per_run.append((time.perf_counter() - began) * 1e6 / 100)
        pid = watchdog.pid
        if pid is not None:
            time.sleep(0.05)  # let it read what it was sent
            rss.append(psutil.Process(pid).memory_info().rss / 1e6)
        watchdog.shutdown()
    start, each = Stat.of(starts), Stat.of(per_run)
    section.rows = [
        Row("start, once per host process", start, "µs",
            f"≤ {START_LIMIT_US / 1000:g} ms median", start.median <= START_LIMIT_US),
        Row("watch + forget, per image", each, "µs",
            f"≤ {PER_RUN_LIMIT_US / 1000:g} ms median", each.median <= PER_RUN_LIMIT_US),
        Row("its memory (RSS of the shell)", Stat.of(rss), "MB"),
    ]  # fmt: skip
    section.notes.append(
        "The per-image cost is two small writes to a pipe; the shell reads them while codex "
        "works. The overhead benchmark (1.) includes both."
    )
    section.raw = {"start_us": starts, "per_run_us": per_run, "rss_mb": rss}
    return section

"""6. Scaling: 1, 2, 4 and 8 concurrent generations through the library (``agenerate`` tasks in
one process, ``bench/driver.py``) against one mock that takes 2 s to make each image.

Wall time and images per minute show whether concurrency works; our own process's CPU time per
image (its threads only, not codex) shows whether our per-image cost stays flat. With 2 CPUs,
eight codex processes starting at once compete for them: that, not our process, is what grows.
"""

from __future__ import annotations

import json
import statistics
import sys

from .common import DRIVER, BenchError, Lab, Row, Section, Stat, log, run_timed

TITLE = "6. Scaling"
REPEAT = 3
LEVELS = (1, 2, 4, 8)
IMAGE_DELAY_S = 2.0


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("scaling", TITLE)
    reports: dict[int, list[dict[str, float]]] = {n: [] for n in LEVELS}
    with lab.backend("image", image_delay_s=IMAGE_DELAY_S) as mock:
        env = lab.home(mock, "scaling")
        _once(lab, env, 1)  # warm-up
        for n in range(1, repeat + 1):
            for level in LEVELS:
                log(f"  scaling: {level} concurrent, {n}/{repeat}")
                reports[level].append(_once(lab, env, level))
    ours: list[str] = []
    for level in LEVELS:
        walls = [r["wall_s"] for r in reports[level]]
        section.rows += [
            Row(f"{level} concurrent: wall time", Stat.of(walls), "s"),
            Row(
                f"{level} concurrent: images per minute",
                Stat.of([level * 60 / w for w in walls]),
                "img/min",
            ),
        ]
        cpu = statistics.median(r["cpu_s"] / level for r in reports[level]) * 1000
        latency = statistics.median(r["latency_s"] for r in reports[level])
        peak = max(r["peak_rss_mb"] for r in reports[level])
        ours.append(
            f"{level}: {cpu:.0f} ms CPU per image, {latency:.2f} s per image, {peak:.0f} MB"
        )
    section.notes.append(
        f"Image latency {IMAGE_DELAY_S:g} s at the mock. Our process (medians; peak RSS): "
        + "; ".join(ours)
        + ". CPU per image includes the process's start-up, shared by all its images."
    )
    section.raw = {str(level): runs for level, runs in reports.items()}
    return section


def _once(lab: Lab, env: dict[str, str], level: int) -> dict[str, float]:
    out = lab.folder(f"scaling-{level}")
    report = out / "report.json"
    argv = [
        sys.executable,
        str(DRIVER),
        str(report),
        "concurrent",
        str(level),
        str(out),
        str(lab.shim),
    ]
    result = run_timed(argv, env=env, cwd=out)
    data = json.loads(report.read_text("utf-8")) if report.exists() else {}
    if result.returncode != 0 or len(data.get("elapsed_s", [])) != level:
        raise BenchError(
            f"{level} concurrent generations failed: {data.get('errors')} {result.stderr[-1500:]!r}"
        )
    return {
        "wall_s": float(data["wall_s"]),
        "latency_s": statistics.median(data["elapsed_s"]),
        "cpu_s": float(data["cpu_s"]),
        "peak_rss_mb": float(data["peak_rss_mb"]),
    }

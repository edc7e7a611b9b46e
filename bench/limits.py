"""11. ``codex-image limits``: how much of the subscription is used, without an image (#32):
codex app-server asked ``account/rateLimits/read`` at the loopback mock (which answers
``/wham/usage``). Timed to the command's exit, a fresh process each time, its facts cache
warm as a user's is after the first run; beside it, the same read at 150 ms per request.
"""

from __future__ import annotations

import json

from .common import Lab, Row, Section, Stat, check, run_timed

TITLE = "11. `codex-image limits`: the usage windows, nothing spent"
REPEAT = 10
LIMIT_S = 1.5


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("limits", TITLE)
    figures: dict[str, list[float]] = {}
    for latency in (0.0, 0.15):
        with lab.backend("image", latency_s=latency) as mock:
            env = lab.home(mock, f"limits-{int(latency * 1000)}")
            folder = lab.folder(f"limits-{int(latency * 1000)}")
            argv = lab.ours("limits", "--json", "--codex", str(lab.shim), "--allow-relay")
            times = []
            for n in range(repeat + 1):
                done = check(run_timed(argv, env=env, cwd=folder), "codex-image limits")
                if json.loads(done.stdout)["primary"] is None:
                    raise AssertionError("limits read no window")
                if n:  # run 0 warms the facts cache, as a user's first run does
                    times.append(done.wall_s)
            if any(r.method == "POST" and r.path.endswith("/responses") for r in mock.requests):
                raise AssertionError("limits made a model request")
            figures[f"{int(latency * 1000)}ms"] = times
    at_zero, at_150 = Stat.of(figures["0ms"]), Stat.of(figures["150ms"])
    section.rows += [
        Row(
            "`codex-image limits --json`, loopback",
            at_zero,
            "s",
            f"< {LIMIT_S:g} s",
            at_zero.median < LIMIT_S,
        ),  # fmt: skip
        Row("the same, 150 ms per request", at_150, "s"),
    ]
    section.notes.append(
        "No model request is made (checked on every run); codex starts, asks the usage "
        "endpoint once (with --disable=plugins --disable=apps: no plugin listings), and is ended."
    )
    section.raw = figures
    return section

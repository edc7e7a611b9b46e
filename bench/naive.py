"""2. Versus a naive wrapper: ``codex exec`` through the npm shim (node + codex.js) with default
settings (analytics on), waiting for the process to exit, then finding the newest PNG under
``$CODEX_HOME/generated_images`` and copying it to the output.

Measured twice: on the plain mock turn (its closing answer is instant), and with the closing
answer delayed 5 s at the mock, as a real model's closing turn takes time. Both wrappers share
the mock, the CODEX_HOME and its config (which leaves analytics on: we turn them off per run).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .common import (
    PROMPT,
    BenchError,
    Lab,
    Row,
    Section,
    Stat,
    check,
    new_pngs,
    ratios,
    run_timed,
    side_by_side,
)

TITLE = "2. Versus a naive wrapper"
REPEAT = 5
TARGET_X = 3.0


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("naive", TITLE)
    for final_delay, label in ((0.0, "mock turn"), (5.0, "closing answer 5 s")):
        naive_s, ours_s = _measure(
            lab, repeat if final_delay == 0 else max(2, (repeat + 1) // 2), final_delay
        )
        speedup = Stat.of(ratios(naive_s, ours_s))
        plain = final_delay == 0
        section.rows += [
            Row(
                f"naive: npm shim, analytics on, to exit, find PNG ({label})", Stat.of(naive_s), "s"
            ),
            Row(f"`codex-image generate` ({label})", Stat.of(ours_s), "s"),
            Row(
                f"naive / generate (pairs, {label})",
                speedup,
                "x",
                f"≥ {TARGET_X:g}×" if plain else "",
                speedup.median >= TARGET_X if plain else None,
            ),
        ]
        section.raw[label] = {"naive_s": naive_s, "generate_s": ours_s}
    section.notes.append(
        "The naive wrapper pays codex's analytics flush at exit (~5 s), the node parent of the "
        "npm shim, and the closing model turn; ours runs the native binary with analytics off "
        "and stops codex once the PNG is verified."
    )
    return section


def _measure(lab: Lab, repeat: int, final_delay: float) -> tuple[list[float], list[float]]:
    with lab.backend("image", final_delay_s=final_delay) as mock:
        env = lab.home(mock, f"naive-{final_delay:g}", analytics=True)
        images = Path(env["CODEX_HOME"]) / "generated_images"
        workspace = lab.folder("naive-workspace")
        outputs = lab.folder("naive-out")
        naive_argv = [str(lab.shim), "exec", "--json", "--skip-git-repo-check", "-"]
        request = f"Generate an image: {PROMPT}".encode()
        naive_s: list[float] = []
        ours_s: list[float] = []

        def naive(n: int) -> None:
            before = set(images.glob("*/*.png"))
            result = check(
                run_timed(naive_argv, env=env, cwd=workspace, stdin=request), "naive codex exec"
            )
            started = time.perf_counter()  # finding and copying the file is the wrapper's time
            found = new_pngs(images, before)
            if not found:
                raise BenchError("the naive wrapper found no PNG")
            shutil.copyfile(found[-1], outputs / f"naive-{n}.png")
            if n:
                naive_s.append(result.wall_s + time.perf_counter() - started)

        def generate(n: int) -> None:
            argv = lab.generate(outputs / f"ours-{n}.png")
            result = check(run_timed(argv, env=env, cwd=outputs), "codex-image generate")
            if n:
                ours_s.append(result.wall_s)

        side_by_side(repeat, naive, generate, f"naive (closing answer {final_delay:g} s)")
    return naive_s, ours_s

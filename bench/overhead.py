"""1. Orchestration overhead: ``codex-image generate`` versus the bare ``codex exec --json`` doing
the same image turn (same native binary, same mock, same flags, same instruction on stdin).

The bare run is timed to its exit, and to the moment its PNG is complete on disk (the earliest
any wrapper could have the image). Ours includes Python's start, the preflight (version probe,
login check), the watch for the image, stopping codex and the verified delivery.
"""

from __future__ import annotations

from pathlib import Path

from codex_cli_image.prompt import build_instruction

from .common import (
    PROMPT,
    BenchError,
    Lab,
    Row,
    Section,
    Stat,
    check,
    differences,
    ratios,
    run_timed,
    side_by_side,
)

TITLE = "1. Orchestration overhead"
REPEAT = 7


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("overhead", TITLE)
    with lab.backend("image") as mock:
        env = lab.home(mock, "overhead")
        images = Path(env["CODEX_HOME"]) / "generated_images"
        workspace = lab.folder("overhead-workspace")
        outputs = lab.folder("overhead-out")
        bare_argv = lab.bare_exec(workspace)
        bare_env = lab.codex_env(env)
        instruction = build_instruction(PROMPT).encode()
        bare_exit: list[float] = []
        bare_png: list[float] = []
        ours: list[float] = []

        def bare(n: int) -> None:
            result = check(
                run_timed(bare_argv, env=bare_env, cwd=workspace, stdin=instruction, watch=images),
                "bare codex exec",
            )
            if result.png_at_s is None:
                raise BenchError("the bare codex exec produced no PNG")
            if n:
                bare_exit.append(result.wall_s)
                bare_png.append(result.png_at_s)

        def generate(n: int) -> None:
            argv = lab.generate(outputs / f"{n}.png")
            result = check(run_timed(argv, env=env, cwd=outputs), "codex-image generate")
            if n:
                ours.append(result.wall_s)

        # Run 0 warms the page cache and CODEX_HOME's first-run files.
        side_by_side(repeat, bare, generate, "overhead")

    bare_stat, ours_stat = Stat.of(bare_exit), Stat.of(ours)
    pair = ratios(ours, bare_exit)
    extra_ms = [d * 1000 for d in differences(ours, bare_exit)]
    # Judged on the side-by-side pairs: within 10 %, or within 150 ms, whichever is larger.
    within = Stat.of(pair).median <= 1.10 or Stat.of(extra_ms).median <= 150
    section.rows = [
        Row("bare `codex exec --json`, to its exit", bare_stat, "s"),
        Row("bare `codex exec --json`, PNG complete on disk", Stat.of(bare_png), "s"),
        Row("`codex-image generate`, to its exit", ours_stat, "s"),
        Row(
            "generate / bare exit (pairs)",
            Stat.of(pair),
            "x",
            "≤ max(1.10×, +150 ms)",
            within,
        ),
        Row("generate − bare exit (pairs)", Stat.of(extra_ms), "ms"),
        Row(
            "generate − bare PNG on disk (pairs)",
            Stat.of([d * 1000 for d in differences(ours, bare_png)]),
            "ms",
        ),
    ]
    section.notes.append(
        "Bare codex waits for its closing model turn (instant at the mock); ours stops codex "
        "once the PNG is verified. 'PNG on disk' is the earliest any wrapper could have the image."
    )
    section.raw = {"bare_exit_s": bare_exit, "bare_png_s": bare_png, "generate_s": ours}
    return section

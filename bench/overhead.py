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
    Run,
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
LATENCIES_S = (0.0, 0.15)
"""The mock answers each request at once (loopback), or after 150 ms (a real network)."""
LOOPBACK_LIMIT_MS = 100.0
NETWORK_LIMIT = 0.8


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("overhead", TITLE)
    raw: dict[str, object] = {}
    for latency in LATENCIES_S:
        rows, figures = _at(lab, repeat, latency)
        section.rows += rows
        raw[f"{latency * 1000:g}ms"] = figures
    section.notes.append(
        "The bare CLI is the same native binary (the npm shim resolved, as ours does), with the "
        "flags our runner passes but without --disable plugins --disable apps. Bare codex waits "
        "for its closing model turn (instant at the mock); ours stops codex once the PNG is "
        "verified. 'PNG on disk' is the earliest any wrapper could have the image; 'first "
        "model request' is when codex asked /responses for the turn, from the process start. "
        "Ours starts with what the unmeasured first run learned of the binary (its feature "
        "names, kept in the cache folder), as every call after a user's first does."
    )
    section.raw = raw
    return section


def _at(lab: Lab, repeat: int, latency: float) -> tuple[list[Row], dict[str, list[float]]]:
    label = "loopback" if latency == 0 else f"{latency * 1000:g} ms per request"
    with lab.backend("image", latency_s=latency) as mock:
        env = lab.home(mock, f"overhead-{label.split()[0]}")
        images = Path(env["CODEX_HOME"]) / "generated_images"
        workspace = lab.folder(f"overhead-workspace-{label.split()[0]}")
        outputs = lab.folder(f"overhead-out-{label.split()[0]}")
        bare_argv = lab.bare_exec(workspace)
        bare_env = lab.codex_env(env)
        instruction = build_instruction(PROMPT).encode()
        bare_exit: list[float] = []
        bare_png: list[float] = []
        ours: list[float] = []
        first: dict[str, list[float]] = {"bare": [], "ours": []}

        def first_request(run: Run, who: str) -> None:
            started = run.ended_at - run.wall_s
            times = [r.at for r in mock.requests if r.at >= started and r.method == "POST"
                     and r.path.endswith("/codex/responses")]  # fmt: skip
            if times:
                first[who].append(min(times) - started)

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
                first_request(result, "bare")

        def generate(n: int) -> None:
            argv = lab.generate(outputs / f"{n}.png")
            result = check(run_timed(argv, env=env, cwd=outputs), "codex-image generate")
            if n:
                ours.append(result.wall_s)
                first_request(result, "ours")

        # Run 0 warms the page cache and CODEX_HOME's first-run files.
        side_by_side(repeat, bare, generate, f"overhead, {label}")

    pair = ratios(ours, bare_exit)
    extra_ms = [d * 1000 for d in differences(ours, bare_exit)]
    if latency == 0:
        target = f"≤ +{LOOPBACK_LIMIT_MS:g} ms"
        met = Stat.of(extra_ms).median <= LOOPBACK_LIMIT_MS
        judged = Row(f"generate − bare exit (pairs, {label})", Stat.of(extra_ms), "ms", target,
                     met)  # fmt: skip
        other = Row(f"generate / bare exit (pairs, {label})", Stat.of(pair), "x")
    else:
        target = f"≤ {NETWORK_LIMIT:g}×"
        judged = Row(f"generate / bare exit (pairs, {label})", Stat.of(pair), "x", target,
                     Stat.of(pair).median <= NETWORK_LIMIT)  # fmt: skip
        other = Row(f"generate − bare exit (pairs, {label})", Stat.of(extra_ms), "ms")
    rows = [
        Row(f"bare `codex exec --json` (native), to its exit ({label})", Stat.of(bare_exit), "s"),
        Row(f"bare, PNG complete on disk ({label})", Stat.of(bare_png), "s"),
        Row(f"`codex-image generate`, to its exit ({label})", Stat.of(ours), "s"),
        judged,
        other,
        Row(
            f"generate − bare PNG on disk (pairs, {label})",
            Stat.of([d * 1000 for d in differences(ours, bare_png)]),
            "ms",
        ),
        Row(f"bare: first model request ({label})", Stat.of(first["bare"]), "s"),
        Row(f"generate: first model request ({label})", Stat.of(first["ours"]), "s"),
    ]
    figures = {
        "bare_exit_s": bare_exit,
        "bare_png_s": bare_png,
        "generate_s": ours,
        "bare_first_request_s": first["bare"],
        "generate_first_request_s": first["ours"],
    }
    return rows, figures

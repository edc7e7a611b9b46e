"""3. Model turns per image, counted at the mock: ours versus the "copy the file to this path"
flow other tools ask the model for (scripted at the mock as a model behaves: the image call, a
shell ``cp`` from codex's code-mode exec tool, then the closing answer).

The closing answer is delayed 5 s at the mock in both flows. A model turn is a responses request
asking for one (prewarms excluded); it was waited for when its answer was complete before the run
ended. "Image saved" is the modification time of codex's own copy of the PNG (ours runs with
``--keep-codex-copy`` so it can be read).
"""

from __future__ import annotations

from pathlib import Path

from codex_cli_image.testing.backend import MockBackend

from .common import BenchError, Lab, Row, Run, Section, Stat, check, log, run_timed

TITLE = "3. Model turns per image"
REPEAT = 3
FINAL_DELAY_S = 5.0
AFTER_SAVE_LIMIT_S = 0.5
COPY_REQUEST = b"Make an image of a red fox in the snow and save it as fox.png here."


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("turns", TITLE)
    ours: list[dict[str, float]] = []
    copy: list[dict[str, float]] = []
    for n in range(1, repeat + 1):
        log(f"  turns {n}/{repeat}")
        ours.append(_ours(lab))
        copy.append(_copy_flow(lab))

    def stat(runs: list[dict[str, float]], key: str) -> Stat:
        return Stat.of([r[key] for r in runs])

    fewer = max(r["requested"] for r in ours) <= min(r["requested"] for r in copy) - 1
    after_save = stat(ours, "after_save_s")
    section.rows = [
        Row(
            "model turns requested: `codex-image generate`",
            stat(ours, "requested"),
            "turns",
            "≥ 1 fewer than the copy flow",
            fewer,
        ),
        Row("model turns requested: copy flow", stat(copy, "requested"), "turns"),
        Row("model answers waited for: `codex-image generate`", stat(ours, "answered"), "turns"),
        Row("model answers waited for: copy flow", stat(copy, "answered"), "turns"),
        Row(
            "image saved → run ended: `codex-image generate`",
            after_save,
            "s",
            f"≤ {AFTER_SAVE_LIMIT_S:g} s, every run",
            after_save.high <= AFTER_SAVE_LIMIT_S,
        ),
        Row("image saved → run ended: copy flow", stat(copy, "after_save_s"), "s"),
        Row("whole run: `codex-image generate`", stat(ours, "wall_s"), "s"),
        Row("whole run: copy flow", stat(copy, "wall_s"), "s"),
    ]
    section.notes.append(
        f"Closing answer delayed {FINAL_DELAY_S:g} s at the mock; a fresh mock and CODEX_HOME "
        "per run. Ours stops codex once the PNG is verified, which is usually before codex's "
        "request for the closing turn reaches the mock; the copy flow needs a turn to issue the "
        "copy, then waits for the closing answer."
    )
    section.raw = {"generate": ours, "copy_flow": copy}
    return section


def _ours(lab: Lab) -> dict[str, float]:
    with lab.backend("image", final_delay_s=FINAL_DELAY_S) as mock:
        env = lab.home(mock, "turns-ours")
        out = lab.folder("turns-ours-out") / "fox.png"
        result = check(
            run_timed(lab.generate(out, "--keep-codex-copy"), env=env, cwd=out.parent),
            "codex-image generate",
        )
        return _figures(mock, result, Path(env["CODEX_HOME"]))


def _copy_flow(lab: Lab) -> dict[str, float]:
    workspace = lab.folder("turns-copy-workspace")
    target = workspace / "fox.png"
    with lab.backend("image_then_copy", final_delay_s=FINAL_DELAY_S, copy_to=str(target)) as mock:
        env = lab.home(mock, "turns-copy")
        argv = lab.bare_exec(workspace, sandbox="workspace-write")  # the copy needs to write
        result = check(
            run_timed(argv, env=lab.codex_env(env), cwd=workspace, stdin=COPY_REQUEST),
            "copy-flow codex exec",
        )
        if not target.is_file() or target.read_bytes() != mock.image:
            raise BenchError("the copy flow did not leave the image at its target")
        return _figures(mock, result, Path(env["CODEX_HOME"]))


def _figures(mock: MockBackend, run: Run, codex_home: Path) -> dict[str, float]:
    found = list(codex_home.glob("generated_images/*/*.png"))
    if len(found) != 1:
        raise BenchError(f"expected codex's one copy of the image, found {found}")
    return {
        "requested": len(mock.model_turns()),
        "answered": sum(1 for at in mock.turns_answered if at <= run.ended_at),
        "after_save_s": run.ended_at - found[0].stat().st_mtime,
        "wall_s": run.wall_s,
    }

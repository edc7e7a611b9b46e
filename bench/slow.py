"""10. A slow image in code mode: codex's exec cell hands back to the model after 30 s, and the
model must call ``wait`` (a model request each time) until the image comes (codex-facts section
12). Ours sets the cell's yield to its own timeout where the release takes it (#31).

One image that takes ``IMAGE_S`` at the mock's images endpoint, made by the bare CLI and by
``codex-image generate``, side by side; the mock counts the model requests (responses requests
that ask for a turn) and the images requests of each run.
"""

from __future__ import annotations

from codex_cli_image.prompt import build_instruction

from .common import PROMPT, Lab, Row, Section, Stat, check, run_timed, side_by_side

TITLE = "10. A 45 s image in code mode: model requests"
REPEAT = 1
IMAGE_S = 45.0


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("slow", TITLE)
    counts: dict[str, list[float]] = {"bare": [], "ours": [], "bare_images": [], "ours_images": []}
    with lab.backend("image_code_mode", cell_yield_ms=None, image_delay_s=IMAGE_S) as mock:
        env = lab.home(mock, "slow")
        workspace = lab.folder("slow-workspace")
        outputs = lab.folder("slow-out")
        instruction = build_instruction(PROMPT).encode()

        def counted(label: str, n: int, argv: list[str], run_env: dict[str, str]) -> None:
            turns, images = len(mock.model_turns()), mock.images_requests
            check(run_timed(argv, env=run_env, cwd=workspace if label == "bare" else outputs,
                            stdin=instruction if label == "bare" else b""),
                  label)  # fmt: skip
            if n:
                counts[label].append(len(mock.model_turns()) - turns)
                counts[f"{label}_images"].append(mock.images_requests - images)

        side_by_side(
            repeat,
            lambda n: counted("bare", n, lab.bare_exec(workspace), lab.codex_env(env)),
            lambda n: counted("ours", n, lab.generate(outputs / f"{n}.png"), env),
            "slow",
        )
    bare, ours = Stat.of(counts["bare"]), Stat.of(counts["ours"])
    section.rows += [
        Row(f"bare `codex exec`: model requests for a {IMAGE_S:g} s image", bare, "n"),
        Row(
            "`codex-image generate`: model requests, same image",
            ours,
            "n",
            "fewer than bare",
            ours.median < bare.median,
        ),  # fmt: skip
        Row(
            "images requests per image (both)",
            Stat.of(counts["bare_images"] + counts["ours_images"]),
            "n",
            "1",
            max(counts["bare_images"] + counts["ours_images"]) == 1,
        ),  # fmt: skip
    ]
    section.notes.append(
        'The mock\'s model answers "Script running with cell ID ..." with a wait call (its '
        "default yield, 10 s), as a model does. Ours stops codex once the image is saved, so it "
        "also skips the closing request at times. 0.125-0.142 have no code mode cell."
    )
    section.raw = counts
    return section

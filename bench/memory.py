"""5. Memory: the peak resident memory of our own process (not codex's) while it collects and
delivers a 20 MB PNG, measured inside that process (``bench/driver.py``, ``VmHWM``).

Cases: the file codex saved (real CLI; as usual codex is stopped early), the same letting codex
finish its turn (``--wait-for-turn``: the session log then holds the image's 27 MB of base64,
read for the revised prompt), and the image only in the session log (the fake codex's ``hosted``
scenario: the real 0.169 cannot receive a hosted 20 MB image, its SSE decoder gives up with "error
decoding response body"). A small PNG gives the baseline of the interpreter and libraries.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal, NamedTuple

from codex_cli_image.testing import FakeCodex, make_png

from .common import DRIVER, PROMPT, BenchError, Lab, Row, Section, Stat, log, run_timed

TITLE = "5. Memory"
REPEAT = 3
LIMIT_MB = 80.0
SIDE = 2644  # 2644 x 2644 RGB of noise, stored: 20.0 MiB


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("memory", TITLE)
    big = make_png(SIDE, SIDE, "a photo-like image", noise=True)
    big_file = lab.folder("memory-image") / "noise.png"
    big_file.write_bytes(big)
    small = make_png(96, 64, "baseline")
    cases = [
        _Case("file codex saved, 20 MB PNG", "real", big),
        _Case("file, codex let finish (`--wait-for-turn`), 20 MB", "real", big, "--wait-for-turn"),
        _Case("session log only (fake codex `hosted`), 20 MB", "fake", big),
        _Case("baseline: file codex saved, 96×64 PNG", "real", small, limited=False),
    ]
    peaks: dict[str, list[float]] = {}
    for case in cases:
        values = peaks[case.label] = []
        for n in range(1, repeat + 1):
            log(f"  memory: {case.label} {n}/{repeat}")
            values.append(_peak(lab, case, big_file))
        row = Row(f"peak RSS of our process: {case.label}", Stat.of(values), "MB")
        if case.limited:  # every run counts: a peak is a peak
            row = replace(row, target=f"≤ {LIMIT_MB:g} MB, every run", met=max(values) <= LIMIT_MB)
        section.rows.append(row)
    section.notes.append(
        f"The 20 MB image is {len(big) / 2**20:.1f} MiB ({SIDE}×{SIDE} RGB noise, uncompressed "
        "deflate); its base64 in the session log is 27 MB on one line."
    )
    section.raw = {"peak_rss_mb": peaks, "image_bytes": len(big)}
    return section


class _Case(NamedTuple):
    label: str
    codex: Literal["real", "fake"]
    image: bytes
    option: str | None = None
    limited: bool = True


def _peak(lab: Lab, case: _Case, image_file: Path) -> float:
    """One run of our CLI in the driver; its peak RSS in MB."""
    out = lab.folder("memory-out") / "image.png"
    report = out.with_name("report.json")
    prefix = [sys.executable, str(DRIVER), str(report), "cli"]
    if case.codex == "fake":
        fake = FakeCodex(lab.folder("memory-fake"))
        fake.configure("hosted", image_file=str(image_file))
        argv = [*prefix, "generate", PROMPT, "-o", str(out), "--codex", str(fake.path), "--json"]
        result = run_timed(argv, env=fake.env(lab.base_env()), cwd=out.parent)
        source = "rollout"
    else:
        with lab.backend("image", image=case.image) as mock:
            env = lab.home(mock, "memory")
            argv = [*prefix, *lab.generate_args(out, *filter(None, [case.option]))]
            result = run_timed(argv, env=env, cwd=out.parent)
        source = "file"
    if result.returncode != 0 or not out.is_file() or out.stat().st_size != len(case.image):
        raise BenchError(
            f"the memory run failed:\n{result.stdout[-1500:]!r}\n{result.stderr[-1500:]!r}"
        )
    if json.loads(result.stdout)["image_source"] != source:
        raise BenchError(f"expected the image from the {source}: {result.stdout[:500]!r}")
    return float(json.loads(report.read_text("utf-8"))["peak_rss_mb"])

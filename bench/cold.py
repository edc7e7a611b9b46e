"""4. Cold start: ``codex-image --version`` and ``python -c "import codex_cli_image"``, with the
bare interpreter's start beside them for scale. Each is a new process, timed from spawn to exit.
"""

from __future__ import annotations

import sys

from .common import Lab, Row, Section, Stat, check, log, run_timed

TITLE = "4. Cold start"
REPEAT = 20
VERSION_LIMIT_MS = 50.0
IMPORT_LIMIT_MS = 80.0


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("cold", TITLE)
    env = lab.base_env()
    cwd = lab.folder("cold")
    commands = {
        "version": lab.ours("--version"),
        "import": [sys.executable, "-c", "import codex_cli_image"],
        "python": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for n in range(repeat + 1):  # the first round warms the page cache
        if n % 5 == 0:
            log(f"  cold {n}/{repeat}")
        for name, argv in commands.items():
            result = check(run_timed(argv, env=env, cwd=cwd), " ".join(argv))
            if n:
                times[name].append(result.wall_s * 1000)
    version, imported = Stat.of(times["version"]), Stat.of(times["import"])
    section.rows = [
        Row(
            "`codex-image --version`",
            version,
            "ms",
            f"≤ {VERSION_LIMIT_MS:g} ms median",
            version.median <= VERSION_LIMIT_MS,
        ),
        Row(
            '`python -c "import codex_cli_image"`',
            imported,
            "ms",
            f"≤ {IMPORT_LIMIT_MS:g} ms median",
            imported.median <= IMPORT_LIMIT_MS,
        ),
        Row('`python -c "pass"` (the interpreter alone)', Stat.of(times["python"]), "ms"),
    ]
    if commands["version"][0] == sys.executable:
        section.notes.append("No console script was installed: --version ran as python -m.")
    section.raw = {name + "_ms": values for name, values in times.items()}
    return section

"""Runs as the measured process: our CLI, or N concurrent generations through the library.

    python bench/driver.py REPORT.json cli generate PROMPT -o OUT ...
    python bench/driver.py REPORT.json concurrent N OUTDIR CODEX

Writes REPORT.json with what only the process itself can tell: its peak resident memory
(``VmHWM``) and CPU time (``RUSAGE_SELF``, its own threads, not codex). ``ru_maxrss`` is not used:
on Linux it keeps the high-water mark of the memory image replaced by exec, which for a child
started with vfork is the parent's (the benchmark, holding the mock's 20 MB images).

Standard library and codex_cli_image only: it runs as a script, outside the bench package.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cli(args: list[str]) -> tuple[int, dict[str, Any]]:
    from codex_cli_image.cli import main

    code = main(args)
    return code, {}


def concurrent(count: int, outdir: Path, codex: str) -> tuple[int, dict[str, Any]]:
    import anyio

    from codex_cli_image import CodexImageError, agenerate

    elapsed: list[float] = []
    errors: list[str] = []

    async def one(index: int) -> None:
        try:
            result = await agenerate(
                "a red fox in the snow",
                output=outdir / f"{index}.png",
                codex=codex,
                allow_relay=True,
                timeout=120,
                retries=0,
            )
            elapsed.append(result.elapsed_s)
        except CodexImageError as error:
            errors.append(f"{error.kind}/{error.reason}: {error.message}")

    async def all_of_them() -> None:
        async with anyio.create_task_group() as tasks:
            for index in range(count):
                tasks.start_soon(one, index)

    started = time.perf_counter()
    anyio.run(all_of_them)
    wall = time.perf_counter() - started
    return (1 if errors else 0), {"wall_s": wall, "elapsed_s": elapsed, "errors": errors}


def main() -> int:
    report, mode, *rest = sys.argv[1:]
    if mode == "cli":
        code, data = cli(rest)
    elif mode == "concurrent":
        code, data = concurrent(int(rest[0]), Path(rest[1]), rest[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    data |= {"exit_code": code, "peak_rss_mb": peak_rss_mb(), "cpu_s": cpu_s()}
    Path(report).write_text(json.dumps(data), "utf-8")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

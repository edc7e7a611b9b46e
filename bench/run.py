"""``python -m bench``: run the benchmarks, print the table, keep the raw figures.

Options: ``--only overhead,cold`` picks benchmarks, ``--repeat N`` sets the runs of each (default:
per benchmark), ``--no-save`` keeps ``bench/results/`` and the README as they are. A full run
(no ``--only``) rewrites the table in the README's "Benchmarks" section.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import (
    cold,
    limits,
    mcp,
    memory,
    naive,
    overhead,
    scaling,
    serve,
    slow,
    turns,
    watchdog,
)
from .common import BenchError, Lab, Section, fmt, log, machine

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
BENCHMARKS: dict[str, Callable[..., Section]] = {
    "overhead": overhead.run,
    "naive": naive.run,
    "turns": turns.run,
    "cold": cold.run,
    "memory": memory.run,
    "scaling": scaling.run,
    "watchdog": watchdog.run,
    "serve": serve.run,
    "mcp": mcp.run,
    "slow": slow.run,
    "limits": limits.run,
}
_OFFLINE_OK = {"cold", "watchdog"}  # run no codex: need no private network
_NETNS_ENV = "CODEX_IMAGE_BENCH_NETNS"
_BEGIN, _END = "<!-- bench:begin -->", "<!-- bench:end -->"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = list(BENCHMARKS) if args.only is None else _pick(args.only)
    if set(chosen) - _OFFLINE_OK and not _private_network():
        return _reexec_offline(sys.argv[1:] if argv is None else list(argv))
    info = machine(args.codex_version)
    _byte_compile()
    root = Path(tempfile.mkdtemp(prefix="codex-image-bench-", dir=_lab_parent()))
    sections: list[Section] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up as for Ctrl-C
    lab = None
    try:
        lab = Lab(root, args.codex_version)
        for name in chosen:
            log(f"[{name}]")
            started = time.monotonic()
            kwargs = {} if args.repeat is None else {"repeat": args.repeat}
            sections.append(BENCHMARKS[name](lab, **kwargs))
            log(f"[{name}] {time.monotonic() - started:.0f} s")
        left = lab.leftovers()
        lab = None
        if left:
            raise BenchError(f"processes were left running (now killed): {left}")
    except BenchError as error:
        log(f"benchmark failed: {error}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if lab is not None:  # a failed or interrupted run: end what it started first
            lab.leftovers()
        shutil.rmtree(root, ignore_errors=True)
    info["note"] = args.note
    text = render(sections, info)
    print(text)
    if not args.no_save:
        saved = save(sections, info, text)
        log(f"raw results: {saved}")
        if args.only is None:
            update_readme(text)
            log(f"table written to {README}")
    return 0


def _byte_compile() -> None:
    """Our modules as ``pip install`` leaves them, compiled: with PYTHONDONTWRITEBYTECODE set
    (some machines set it) an editable checkout would otherwise compile every module on every
    start, which no installed copy does."""
    import compileall

    compileall.compile_dir(REPO / "codex_cli_image", quiet=1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated: {','.join(BENCHMARKS)}")
    parser.add_argument("--repeat", type=int, metavar="N", help="runs per measurement")
    parser.add_argument("--codex-version", default="0.169.0", metavar="V")
    parser.add_argument(
        "--no-save", action="store_true", help="print only: no results file, no README"
    )
    parser.add_argument("--note", default="", help="a sentence to print under the table")
    return parser


def _pick(names: str) -> list[str]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown or not chosen:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in chosen]


def _private_network() -> bool:
    """Only loopback here: checked on the namespace itself, not trusted from the environment."""
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


def _reexec_offline(args: list[str]) -> int:
    """Run again inside a new network namespace that has only loopback (unshare -n, lo up)."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None
    )
    if os.environ.get(_NETNS_ENV) == "1":
        log("refusing to run: still not in a private network namespace after unshare -n")
        return 2
    if not (sys.platform.startswith("linux") and os.geteuid() == 0 and unshare and ip):
        log(
            "refusing to run the real Codex CLI with a route out: the benchmarks run it in a "
            "private network namespace, which needs Linux, root, unshare(1) and ip(8). "
            "`--only cold` runs without one."
        )
        return 2
    env = {**os.environ, _NETNS_ENV: "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    argv = [
        unshare,
        "-n",
        "--",
        "sh",
        "-c",
        f'{ip} link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "bench",
        *args,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(unshare, argv, env)


def _lab_parent() -> str | None:
    # Not under /tmp: codex refuses to set up its helper links in a CODEX_HOME under a temporary
    # folder, which a real ~/.codex never is.
    return "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK) else None


# --- output ---


def render(sections: Sequence[Section], info: dict[str, object]) -> str:
    lines = [
        f"Measured {info['date']} on {info['cpus']} CPUs ({info['cpu_model']}), "
        f"{info['ram_gb']} GB RAM, {info['system']}, Python {info['python']}, "
        f"@openai/codex {info['codex']}; load average at start {info['load_at_start']}.",
        "",
        "| Benchmark | Measure | Median | Min | Max | Target | |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for section in sections:
        for index, row in enumerate(section.rows):
            verdict = {True: "met", False: "**missed**", None: ""}[row.met]
            lines.append(
                f"| {section.title if index == 0 else ''} | {row.measure} "
                f"| {fmt(row.stat.median, row.unit)} | {fmt(row.stat.low, row.unit)} "
                f"| {fmt(row.stat.high, row.unit)} | {row.target} | {verdict} |"
            )
    notes = [f"- {s.title.split('. ', 1)[-1]}: {note}" for s in sections for note in s.notes]
    if notes:
        lines += ["", *notes]
    if info.get("note"):
        lines += ["", f"**Note:** {info['note']}"]
    return "\n".join(lines)


def save(sections: Sequence[Section], info: dict[str, object], text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:24] or "host"
    stem = f"{time.strftime('%Y-%m-%dT%H%M')}-{host}"
    document = {
        "machine": info,
        "benchmarks": {
            s.key: {
                "title": s.title,
                "rows": [
                    {
                        "measure": r.measure,
                        "unit": r.unit,
                        "values": list(r.stat.values),
                        "median": r.stat.median,
                        "target": r.target,
                        "met": r.met,
                    }
                    for r in s.rows
                ],
                "notes": s.notes,
                "runs": s.raw,
            }
            for s in sections
        },
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n", "utf-8")
    (RESULTS / f"{stem}.txt").write_text(text + "\n", "utf-8")
    return RESULTS / f"{stem}.json"


def update_readme(text: str) -> None:
    """Put the table between the markers of the README's "Benchmarks" section."""
    readme = README.read_text("utf-8")
    block = f"{_BEGIN}\n{text}\n{_END}"
    if _BEGIN in readme and _END in readme:
        head, rest = readme.split(_BEGIN, 1)
        readme = head + block + rest.split(_END, 1)[1]
    else:
        readme = readme.rstrip("\n") + f"\n\n## Benchmarks\n\n{block}\n"
    README.write_text(readme, "utf-8")

"""9. A user with MCP servers: every ``codex exec`` starts each server of the user's config (and
offers its tools to the model); ours turns them all off by name for an image turn (#29).

The user's config holds one MCP server that takes 2 s to start (a small stdio server that
sleeps, then answers ``initialize`` and ``tools/list`` with nothing). Bare ``codex exec`` is
timed to its exit, ``codex-image generate`` too, side by side, at the loopback mock.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from codex_cli_image.prompt import build_instruction

from .common import PROMPT, Lab, Row, Section, Stat, check, ratios, run_timed, side_by_side

TITLE = "9. A user config with a slow-starting MCP server"
REPEAT = 5
START_S = 2.0
LIMIT = 0.6

_SERVER = """
import json, sys, time
time.sleep({start})
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if "id" not in message:
        continue
    method = message.get("method")
    result = {{"protocolVersion": message.get("params", {{}}).get("protocolVersion", "2025-06-18"),
              "capabilities": {{"tools": {{}}}}, "serverInfo": {{"name": "slow", "version": "1"}}}}
    if method != "initialize":
        result = {{"tools": []}} if method == "tools/list" else {{}}
    print(json.dumps({{"jsonrpc": "2.0", "id": message["id"], "result": result}}), flush=True)
"""


def run(lab: Lab, repeat: int = REPEAT) -> Section:
    section = Section("mcp", TITLE)
    with lab.backend("image") as mock:
        env = lab.home(mock, "mcp")
        home = Path(env["CODEX_HOME"])
        script = home / "slow_mcp.py"
        script.write_text(_SERVER.format(start=START_S), "utf-8")
        with (home / "config.toml").open("a", encoding="utf-8") as config:
            config.write(f"[mcp_servers.slow]\ncommand = {json.dumps(sys.executable)}\n"
                         f"args = [{json.dumps(str(script))}]\n")  # fmt: skip
        workspace = lab.folder("mcp-workspace")
        outputs = lab.folder("mcp-out")
        bare_argv = lab.bare_exec(workspace)
        bare_env = lab.codex_env(env)
        instruction = build_instruction(PROMPT).encode()
        bare: list[float] = []
        ours: list[float] = []

        def bare_run(n: int) -> None:
            result = check(run_timed(bare_argv, env=bare_env, cwd=workspace, stdin=instruction),
                           "bare codex exec")  # fmt: skip
            if n:
                bare.append(result.wall_s)

        def generate(n: int) -> None:
            result = check(run_timed(lab.generate(outputs / f"{n}.png"), env=env, cwd=outputs),
                           "codex-image generate")  # fmt: skip
            if n:
                ours.append(result.wall_s)

        side_by_side(repeat, bare_run, generate, "mcp")
    pair = Stat.of(ratios(ours, bare))
    section.rows += [
        Row(f"bare `codex exec --json`, MCP server starting in {START_S:g} s", Stat.of(bare), "s"),
        Row("`codex-image generate`, same config", Stat.of(ours), "s"),
        Row("generate / bare exit (pairs)", pair, "x", f"≤ {LIMIT:g}×", pair.median <= LIMIT),
    ]
    section.notes.append(
        "The bare CLI starts the user's MCP server for the image turn and offers its tools to "
        "the model; ours passes -c mcp_servers={slow={enabled=false}} (every server of the "
        "config and profile, by name), so codex starts none."
    )
    section.raw = {"bare_exit_s": bare, "generate_s": ours}
    return section

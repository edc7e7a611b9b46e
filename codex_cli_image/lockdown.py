"""What the model may use while it makes an image: the image tool, and nothing else (pure).

A prompt is untrusted input (a chat agent or a web form passes on whatever it was given), and the
model obeys it. Left as codex starts it, the model also gets a shell, the web, sub-agents and the
user's MCP servers: one injected prompt reads ``$CODEX_HOME/auth.json`` and sends the tokens
back as the image's prompt. So every turn we start takes those away, by the names this release
knows (codex-facts section 10):

- ``--disable=<feature>`` for each tool-giving feature that ``codex features list`` prints (codex
  refuses a name it does not know, so the list is asked, never guessed); a flag beats the user's
  own ``[features]`` table and profile;
- ``-c web_search="disabled"`` (web search is a setting, not a feature, on 0.125-0.171);
- ``-c mcp_servers={<name>={enabled=false},...}`` naming every server of the user's config and
  profile (the table is merged into the user's, so ``{}`` alone removes nothing).

What is left is :data:`ALLOWED_TOOLS`; the end-to-end suite fails when a release offers more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "ALLOWED_TOOLS",
    "SKIPPABLE_FEATURES",
    "TOOL_FEATURES",
    "features_to_disable",
    "lockdown_options",
    "toml_key",
    "unexpected_tools",
]

# Features whose start-up requests (plugin lists, suggested plugins, MCP discovery of apps) an
# image turn does not need. Seen on 0.125-0.171 with the mock: disabling them removes 11-13
# requests (0.7 s on loopback) and the image tool, references and code mode work as before.
SKIPPABLE_FEATURES = ("plugins", "apps")

# Features that hand the model a tool an image does not need: the shell (two generations), the
# JavaScript REPL, sub-agents, goals, reading local images, sleeping, tool search and
# suggestions, browsers, the standalone web search, memories and permission requests. With all
# of them off the image is made on 0.125-0.171.
TOOL_FEATURES = (
    "shell_tool", "unified_exec", "js_repl", "multi_agent", "multi_agent_v2", "goals",
    "view_image", "sleep_tool", "tool_suggest", "tool_search", "browser_use",
    "browser_use_external", "computer_use", "in_app_browser", "standalone_web_search",
    "memories", "request_permissions_tool",
)  # fmt: skip

# What codex still offers with everything above off (seen on 0.125-0.171 at the mock), by the
# names the requests carry: ``namespace.name`` for namespaced tools, ``exec>name`` for the tools
# code mode's JavaScript runner declares. None of them reads a file or reaches a network:
# - the image tool: hosted (0.125-0.143) or client-side (0.144+);
# - planning and asking the user (exec has no user: answered empty);
# - apply_patch, which cannot write in the read-only sandbox;
# - code mode's runner (``exec``, ``wait``) and its clock;
# - MCP resource listing, empty with every MCP server off;
# - ``collaboration.*`` (0.149+), which no feature or setting removes: an agent they start is
#   configured by this run and offered the same list (checked end to end on 0.149-0.171);
# - view_image before 0.149, where no feature or setting takes it away (it shows the model an
#   image file; auth.json is none).
ALLOWED_TOOLS = frozenset({
    "image_generation", "image_gen.imagegen", "exec>image_gen__imagegen",
    "update_plan", "exec>update_plan", "request_user_input", "functions.request_user_input",
    "functions.request_user_input_async", "functions.send_message_to_user_async",
    "apply_patch", "exec>apply_patch",
    "functions.exec", "functions.wait", "exec>clock__curr_time",
    "list_mcp_resources", "list_mcp_resource_templates", "read_mcp_resource",
    "exec>list_mcp_resources", "exec>list_mcp_resource_templates", "exec>read_mcp_resource",
    "collaboration.spawn_agent", "collaboration.send_message", "collaboration.followup_task",
    "collaboration.wait_agent", "collaboration.interrupt_agent", "collaboration.list_agents",
})  # fmt: skip
_ALLOWED_BEFORE_VIEW_IMAGE_FEATURE = frozenset({"view_image"})

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def features_to_disable(known: Iterable[str]) -> tuple[str, ...]:
    """The features to ``--disable`` for a codex whose ``features list`` printed ``known``."""
    names = set(known)
    return tuple(name for name in (*SKIPPABLE_FEATURES, *TOOL_FEATURES) if name in names)


def toml_key(name: str) -> str:
    """``name`` as one TOML key: bare when it can be, else a quoted string (a server named
    ``my.server`` must not become two keys)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def lockdown_options(disable: Sequence[str], mcp_servers: Sequence[str]) -> tuple[str, ...]:
    """The ``codex exec`` options that leave the model the image tool alone."""
    options = [f"--disable={feature}" for feature in disable]
    options += ["--config", 'web_search="disabled"']
    if mcp_servers:
        # One inline table, merged into the user's: codex splits a -c key path on every dot,
        # quotes or not, so `mcp_servers."a.b".enabled` would name a server "a (seen on 0.171).
        off = ",".join(f"{toml_key(server)}={{enabled=false}}" for server in mcp_servers)
        options += ["--config", f"mcp_servers={{{off}}}"]
    return tuple(options)


def unexpected_tools(offered: Iterable[str], known_features: Iterable[str]) -> set[str]:
    """Tools a codex offered beyond :data:`ALLOWED_TOOLS` (``known_features``: what its
    ``features list`` printed, which says whether view_image could be taken away)."""
    allowed = set(ALLOWED_TOOLS)
    if "view_image" not in set(known_features):
        allowed |= _ALLOWED_BEFORE_VIEW_IMAGE_FEATURE
    return set(offered) - allowed

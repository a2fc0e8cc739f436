"""Settings from the environment with blender-remote's rules, and the hand-over between
`blendwire serve` and the Blender it starts. No bpy here.

Defaults and validation of every setting live in the core (`_core.defaults()`,
`_core.check_service_settings()`, `_core.check_router_settings()`); this module only reads the
environment variables that the peer add-on defines.
"""

from __future__ import annotations

import ast
import os

from . import _core

__all__ = [
    "BLENDER_MCP_ADDON_ENV",
    "SERVE_ENV",
    "SERVE_ERROR",
    "SERVE_READY",
    "check_blender_mcp_addon",
    "default",
    "env_port",
    "env_start_now",
]

# `blendwire serve` hands its settings to its Blender child as JSON in this variable; the child
# answers with marker lines on stdout: READY {json} once commands can be served, ERROR {json}.
SERVE_ENV = "BLENDWIRE_SERVE"
SERVE_READY = "BLENDWIRE-READY"
SERVE_ERROR = "BLENDWIRE-ERROR"


def default(name: str):
    """The core's default for setting `name` (e.g. "host", "port", "watchdog_seconds")."""
    return _core.defaults()[name]


def env_port() -> int:
    """The port from `BLD_REMOTE_MCP_PORT`; not an integer or outside 1024-65535 gives the default
    (6688), as the peer add-on does."""
    fallback = default("port")
    try:
        port = int(os.environ.get("BLD_REMOTE_MCP_PORT", fallback))
    except ValueError:
        return fallback
    return port if 1024 <= port <= 65535 else fallback


def env_start_now() -> bool:
    """True when `BLD_REMOTE_MCP_START_NOW` is true/1/yes/on (any case): start at add-on load."""
    return os.environ.get("BLD_REMOTE_MCP_START_NOW", "").strip().lower() in ("true", "1", "yes", "on")


# `blendwire serve --blender-mcp-addon PATH`: the blender-mcp add-on file the served Blender hosts
# (`blendwire.blender_mcp.load_addon(PATH)`); this variable when the flag is not given.
BLENDER_MCP_ADDON_ENV = "BLENDWIRE_BLENDER_MCP_ADDON"


def check_blender_mcp_addon(path: str) -> str:
    """The absolute path of the blender-mcp add-on file `path`, checked before Blender starts: it
    must exist and look like the add-on (Python defining `class BlenderMCPServer` with an
    `execute_command` method, and `register()`), read without importing it (that needs bpy).
    ValueError says what is wrong."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ValueError(f"{path!r}: no such file (the add-on file, e.g. blender_mcp/bundled/addon.py)")
    try:
        with open(full, "rb") as f:
            tree = ast.parse(f.read(), filename=full)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path!r} is not a readable Python file: {e}") from None
    top = {node.name: node for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    server = top.get("BlenderMCPServer")
    methods = {n.name for n in getattr(server, "body", ()) if isinstance(n, ast.FunctionDef)}
    if not isinstance(server, ast.ClassDef) or "execute_command" not in methods or "register" not in top:
        raise ValueError(
            f"{path!r} does not look like the blender-mcp add-on (no class BlenderMCPServer with "
            "execute_command, or no register()); give the add-on file of blender-mcp or mcp-for-blender, "
            "e.g. <site-packages>/blender_mcp/bundled/addon.py"
        )
    return full

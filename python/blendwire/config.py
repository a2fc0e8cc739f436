"""Every environment variable the Python package reads, read here (`env_*` and the hand-over
between `blendwire serve` and the Blender it starts). No bpy here.

Defaults and validation of every setting live in the core (`_core.defaults()`,
`_core.check_service_settings()`, `_core.check_router_settings()`); the core reads its own variables
(`BLENDWIRE_WATCHDOG_SECONDS`, `BLENDWIRE_CA_FILE`, `BLENDWIRE_MCP_ADDON_PORT`). Unset and empty are
the same: not given.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from typing import Any

from . import _core

__all__ = [
    "AUDIT_LOG_ENV",
    "BLENDER_MCP_ADDON_ENV",
    "SERVE_ENV",
    "SERVE_ERROR",
    "SERVE_READY",
    "check_blender_mcp_addon",
    "default",
    "env_audit_log",
    "env_blender",
    "env_blender_mcp_addon",
    "env_cr8_auth_token",
    "env_cr8_username",
    "env_engine_url",
    "env_has_display",
    "env_log_level",
    "env_port",
    "env_port_if_set",
    "env_start_now",
    "env_token",
    "recovery_dir",
    "serve_settings",
]

# `blendwire serve` hands its settings to its Blender child as JSON in this variable; the child
# answers with marker lines on stdout: READY {json} once commands can be served, ERROR {json}.
SERVE_ENV = "BLENDWIRE_SERVE"
SERVE_READY = "BLENDWIRE-READY"
SERVE_ERROR = "BLENDWIRE-ERROR"


def default(name: str) -> Any:
    """The core's default for setting `name` (e.g. "host", "port", "watchdog_seconds")."""
    return _core.defaults()[name]


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def env_port() -> int:
    """The port from `BLD_REMOTE_MCP_PORT`; not an integer or outside 1024-65535 gives the default
    (6688), as the peer add-on does."""
    fallback: int = default("port")
    try:
        port = int(os.environ.get("BLD_REMOTE_MCP_PORT", fallback))
    except ValueError:
        return fallback
    return port if 1024 <= port <= 65535 else fallback


def env_port_if_set() -> int | None:
    """`env_port()` when `BLD_REMOTE_MCP_PORT` is set, else None (`blendwire mcp`: no port given
    means every running `blendwire serve`)."""
    return env_port() if _env("BLD_REMOTE_MCP_PORT") else None


def env_start_now() -> bool:
    """True when `BLD_REMOTE_MCP_START_NOW` is true/1/yes/on (any case): start at add-on load."""
    return os.environ.get("BLD_REMOTE_MCP_START_NOW", "").strip().lower() in ("true", "1", "yes", "on")


def env_token() -> str | None:
    """`BLENDWIRE_TOKEN`: the token the service requires and clients send (the service, the
    client, `blendwire mcp` and serve's MCP HTTP all take this one)."""
    return _env("BLENDWIRE_TOKEN")


def env_log_level() -> str | None:
    """`BLD_REMOTE_LOG_LEVEL`, as the peer add-on honours it (checked by the core)."""
    return _env("BLD_REMOTE_LOG_LEVEL")


def env_engine_url() -> str | None:
    """`WS_URL`: the cr8 engine the router connects to when no URL is given."""
    return _env("WS_URL")


def env_cr8_auth_token() -> str | None:
    """`CR8_AUTH_TOKEN`: the router's CONNECT token when no token provider is set. Unlike the
    others, an empty value is sent as given (empty), as before."""
    return os.environ.get("CR8_AUTH_TOKEN")


def env_cr8_username() -> str | None:
    """`CR8_USERNAME`: the router's username when none is set (else the login name)."""
    return _env("CR8_USERNAME")


def env_blender() -> str | None:
    """`BLENDER`: the Blender executable `blendwire serve` runs when `--blender` is not given."""
    return _env("BLENDER")


def env_has_display() -> bool:
    """Whether `DISPLAY` or `WAYLAND_DISPLAY` is set (else `serve --gui` runs under xvfb-run)."""
    return bool(_env("DISPLAY") or _env("WAYLAND_DISPLAY"))


def recovery_dir() -> str:
    """Where the router's watchdog saves a never-saved .blend: `BLENDWIRE_RECOVERY_DIR`, else
    `<temp dir>/blendwire-recovery`."""
    return _env("BLENDWIRE_RECOVERY_DIR") or os.path.join(tempfile.gettempdir(), "blendwire-recovery")


def serve_settings() -> dict[str, Any]:
    """In the Blender child of `blendwire serve`: the settings its parent handed over in `SERVE_ENV`
    (JSON; {} when unset)."""
    settings: dict[str, Any] = json.loads(os.environ.get(SERVE_ENV) or "{}")
    return settings


# `blendwire serve --blender-mcp-addon PATH`: the blender-mcp add-on file the served Blender hosts
# (`blendwire.blender_mcp.load_addon(PATH)`); this variable when the flag is not given.
BLENDER_MCP_ADDON_ENV = "BLENDWIRE_BLENDER_MCP_ADDON"


def env_blender_mcp_addon() -> str | None:
    """`BLENDWIRE_BLENDER_MCP_ADDON`: the add-on file when `--blender-mcp-addon` is not given."""
    return _env(BLENDER_MCP_ADDON_ENV)


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


# ---- the audit log ----

AUDIT_LOG_ENV = "BLENDWIRE_AUDIT_LOG"


def env_audit_log() -> str | None:
    """The audit log's file (or `off`) from `BLENDWIRE_AUDIT_LOG`, for a `blendwire.blender.start`
    given none (the add-on's); None: the core's default (the state directory's `audit.jsonl`)."""
    return _env(AUDIT_LOG_ENV)

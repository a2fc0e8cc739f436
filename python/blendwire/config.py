"""Settings from the environment with blender-remote's rules, and the hand-over between
`blendwire serve` and the Blender it starts. No bpy here.

Defaults and validation of every setting live in the core (`_core.defaults()`,
`_core.check_service_settings()`, `_core.check_router_settings()`); this module only reads the
environment variables that the peer add-on defines.
"""

from __future__ import annotations

import os

from . import _core

__all__ = ["SERVE_ENV", "SERVE_ERROR", "SERVE_READY", "default", "env_port", "env_start_now"]

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

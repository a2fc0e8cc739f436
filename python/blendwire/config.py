"""Settings from the environment, with blender-remote's rules (no bpy needed here)."""

import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6688


def env_port():
    """The port from `BLD_REMOTE_MCP_PORT`; not an integer or outside 1024-65535 gives 6688."""
    try:
        port = int(os.environ.get("BLD_REMOTE_MCP_PORT", DEFAULT_PORT))
    except ValueError:
        return DEFAULT_PORT
    return port if 1024 <= port <= 65535 else DEFAULT_PORT


def env_start_now():
    """True when `BLD_REMOTE_MCP_START_NOW` is true/1/yes/on (any case): start at add-on load."""
    return os.environ.get("BLD_REMOTE_MCP_START_NOW", "").strip().lower() in ("true", "1", "yes", "on")

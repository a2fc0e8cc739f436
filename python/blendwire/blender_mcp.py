"""The blender-mcp dialect's command table (placeholder, to be replaced by the full table).

`dispatch(command_type, params)` is the main-thread handler of the MCP add-on listener's
blender-mcp connections (`_core.set_dispatcher(dispatch, dialect="blender_mcp")`): it returns the
WHOLE response dict, `{"status": "success", "result": ...}` or `{"status": "error", "message": ...}`,
which is sent as is.
"""

__all__ = ["dispatch"]


def dispatch(command_type, params):
    return {"status": "error", "message": f"Unknown command type: {command_type}"}

"""BLD Remote's command table: the dispatcher of the BLD-Remote-compatible service.

`dispatch(type, params)` is the callable given to `_core.set_dispatcher`; the Rust core calls it on
Blender's main thread only, so handlers may use bpy freely. Result fields follow blender-remote 1.3.3
(`bld_remote_mcp`) exactly, so its clients and LLM tools keep working. Scene and object info are
`scene`'s, the screenshot `screenshot`'s, running code `code`'s; here: execute_code's wire form,
the persist and status commands, `undo_last` (`undo`'s), and the peer's legacy `{"code"}`/`{"message"}` forms.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Hashable
from typing import Any

from .. import _core, persist
from ..errors import CommandError
from . import checkpoints
from . import code as code_runner
from .inflight import HANDLER
from .scene import get_object_info, get_scene_info
from .screenshot import get_viewport_screenshot
from .undo import UNDO_LAST, undo_last

__all__ = ["COMMANDS", "dispatch"]

Params = dict[str, Any]


def _invalid(message: str) -> CommandError:
    return CommandError(message, "invalid_params")


def _shutdown_requested(reason: str) -> None:
    # The main-thread loop (blendwire.runtime) sees the request after this job is answered.
    _core.stop_pump(reason)


def execute_code(params: Params) -> dict[str, Any]:
    code = params.get("code")
    if not isinstance(code, str) or not code:
        raise _invalid(
            'execute_code needs params.code, the Python source as a string, e.g. {"code": "print(1)"} '
            '(base64-encoded with "code_is_base64": true)'
        )
    if params.get("code_is_base64"):
        try:
            code = base64.b64decode(code.encode("ascii")).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError) as e:
            raise _invalid(f"Failed to decode base64 code: {e}; send the UTF-8 source base64-encoded") from None
    out = code_runner.run_code(code)
    if out.error is not None:
        raise CommandError(f"Code execution error: {out.error}\n{out.traceback}", "execution_error")
    if out.exit_requested:
        _shutdown_requested("shutdown")
    result: dict[str, Any] = {
        "executed": True,
        "result": out.stdout,
        "output": {"stdout": out.stdout, "stderr": out.stderr},
        "duration": out.duration,
    }
    # As the peer: the flag is only present when base64 was asked for, and true only if non-empty.
    if params.get("return_as_base64"):
        result["result_is_base64"] = bool(out.stdout)
        if out.stdout:
            result["result"] = base64.b64encode(out.stdout.encode("utf-8")).decode("ascii")
    return result


def get_polyhaven_status(params: Params) -> dict[str, Any]:
    return {"enabled": False, "reason": "Asset providers not supported"}


def _persist_key(params: Params, command: str) -> Hashable:
    key = params.get("key")
    if key is None:
        raise _invalid(f'{command} needs params.key, e.g. {{"key": "my_key"}}')
    if isinstance(key, (list, dict)):
        raise _invalid(f"{command}: key must be a string or number, got a JSON {type(key).__name__}")
    return key


def put_persist_data(params: Params) -> str:
    key = _persist_key(params, "put_persist_data")
    if params.get("data") is None:
        raise _invalid('put_persist_data needs params.data (any JSON value except null), e.g. {"key": "k", "data": 1}')
    persist.put(key, params["data"])
    return f"Data stored under key '{key}'"


def get_persist_data(params: Params) -> dict[str, Any]:
    key = _persist_key(params, "get_persist_data")
    data = persist.get(key, params.get("default"))
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        # Scripts inside Blender may store any object; only JSON can go back over the wire.
        raise CommandError(
            f"The value stored under key {key!r} is a {type(data).__name__}, not JSON-serialisable; "
            "store plain JSON data (dict, list, str, number, bool) to read it remotely",
            "unserializable_result",
        ) from None
    return {"data": data, "found": persist.contains(key)}


def remove_persist_data(params: Params) -> dict[str, Any]:
    return {"removed": persist.remove(_persist_key(params, "remove_persist_data"))}


def get_status(params: Params) -> dict[str, Any]:
    """blendwire's own (not in the peer): `_core.status()`, service, queue and router
    (state, attempts, watchdog countdown); what `blendwire status` prints."""
    return _core.status()


def _legacy(params: Params) -> dict[str, Any]:
    """The peer's legacy `{"code": ...}` / `{"message": ...}` requests. The returned dict is sent as
    the whole response (no status/result wrapper)."""
    address = _core.service_address() or ("127.0.0.1", 0)
    response = {"response": "OK", "message": "Task received", "source": f"tcp://{address[0]}:{address[1]}"}
    if "message" in params:
        response["message"] = f"Printed message: {params['message']}"
    if "code" in params:
        code = params["code"]
        if not isinstance(code, str):
            response["response"] = "FAILED"
            response["message"] = "Error executing code: code must be a string of Python source"
        elif "quit_blender" in code:
            # The peer treats any code mentioning quit_blender as a request to end the server.
            _shutdown_requested("shutdown")
            response["message"] = "Shutdown requested by client"
        else:
            out = code_runner.run_code(code)
            if out.error is not None:
                response["response"] = "FAILED"
                response["message"] = f"Error executing code: {out.error}"
            else:
                response["message"] = "Code executed successfully"
                if out.stdout:
                    response["output"] = out.stdout
                if out.exit_requested:
                    _shutdown_requested("shutdown")
    return response


_HANDLERS: dict[str, Callable[[Params], Any]] = {
    "get_scene_info": get_scene_info,
    "get_object_info": get_object_info,
    "get_viewport_screenshot": get_viewport_screenshot,
    "execute_code": execute_code,
    "get_polyhaven_status": get_polyhaven_status,
    "put_persist_data": put_persist_data,
    "get_persist_data": get_persist_data,
    "remove_persist_data": remove_persist_data,
    "get_status": get_status,
    UNDO_LAST: undo_last,
    "_legacy": _legacy,
    # Checkpoints (issue 22): kept before every job that may change data (see `checkpoints`).
    "list_checkpoints": checkpoints.list_checkpoints,
    "restore_checkpoint": checkpoints.restore_checkpoint,
}

# The command types clients may send, for `_core.start_service(commands=...)` (`server_shutdown` is
# built into the core). `_legacy` is left out: the core routes `{"code"}`/`{"message"}` requests to
# it by itself, and it must not be callable (or listed) as a command type.
COMMANDS = tuple(name for name in _HANDLERS if not name.startswith("_"))


def dispatch(command_type: str, params: Any) -> Any:
    """Run `command_type` with `params` (a dict) and return its JSON-serialisable result."""
    handler = _HANDLERS.get(command_type)
    if handler is None:
        known = ", ".join(sorted(n for n in _HANDLERS if not n.startswith("_")))
        raise CommandError(f"Unknown command type {command_type!r}; known commands: {known}", "unknown_rpc_command")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _invalid(f"params must be a JSON object, got {type(params).__name__}")
    with HANDLER:
        return handler(params)

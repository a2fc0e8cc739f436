"""The command handlers of the BLD-Remote-compatible service.

`dispatch(type, params)` is the callable given to `_core.set_dispatcher`; the Rust core calls it on
Blender's main thread only, so handlers may use bpy freely. Result fields follow blender-remote 1.3.3
(`bld_remote_mcp`) exactly, so its clients and LLM tools keep working.
"""

import base64
import binascii
import builtins
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
import uuid

import bpy

from . import _core, persist
from .errors import CommandError

__all__ = ["COMMANDS", "captured_output", "dispatch", "running", "scene_objects"]

# The peer only says "not available in background mode"; this also says what to do instead.
_NO_SCREENSHOT_IN_BACKGROUND = (
    "Viewport screenshots are not available in background mode (blender -b / bpy module); "
    "run Blender with a UI, e.g. `blendwire serve --gui`"
)
_SCREENSHOT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


def _invalid(message):
    return CommandError(message, "invalid_params")


def _shutdown_requested(reason):
    # The main-thread loop (blendwire.runtime) sees the request after this job is answered.
    _core.stop_pump(reason)


# ---- code execution (shared by execute_code and the legacy {"code": ...} form) ------------------


class _Outcome:
    __slots__ = ("stdout", "stderr", "duration", "error", "traceback", "exit_requested")

    def __init__(self):
        self.stdout = self.stderr = ""
        self.duration = 0.0
        self.error = self.traceback = None
        self.exit_requested = False


class _StreamedOutput(io.TextIOBase):
    """Captures like StringIO, and hands the job's client each write as it is printed (for requests
    with `"progress": true`; the answer still carries all of it). `write` is the core's own
    (`_core.JobOutput`), not a Python method, so streaming costs a job that prints a lot next to
    nothing."""

    def __init__(self):
        super().__init__()
        self._sink = _core.JobOutput()
        self.write = self._sink.write

    def writable(self):
        return True

    def getvalue(self):
        return self._sink.getvalue()


# Cycles: "... | Sample 12/128"; EEVEE: "Rendering 3 / 64 samples".
_SAMPLES = re.compile(r"(?:Sample|Rendering)\s+(\d+)\s*/\s*(\d+)")


def _render_stats(stats, *_):
    # Blender 4+ passes the stats line; 3.4 passes None (then the frame handler below speaks).
    if isinstance(stats, str) and stats:
        m = _SAMPLES.search(stats)
        done, total = (int(m[1]), int(m[2])) if m else (0, 0)
        _core.report_progress(min(1.0, done / total) if total else None, stats)


def _render_frame(scene, *_):
    frame = getattr(scene, "frame_current", None)
    _core.report_progress(None, "rendering" if frame is None else f"rendering frame {frame}")


# Blender's render handlers, reporting as the job's progress while a streaming job runs.
_RENDER_HANDLERS = (("render_stats", _render_stats), ("render_pre", _render_frame))


def _hook_renders(on):
    for name, fn in _RENDER_HANDLERS:
        handlers = getattr(bpy.app.handlers, name, None)
        if handlers is None:
            continue
        if on and fn not in handlers:
            handlers.append(fn)
        elif not on and fn in handlers:
            handlers.remove(fn)


@contextlib.contextmanager
def captured_output():
    """While sent code runs: its stdout and stderr captured (yielded as two text streams with
    `getvalue()`); when its client asked for progress, stdout also streamed as printed and Blender's
    render handlers report the job's progress. Used by every dialect that runs sent code."""
    streaming = _core.job_streams()
    stdout, stderr = (_StreamedOutput() if streaming else io.StringIO()), io.StringIO()
    saved = sys.stdout, sys.stderr
    if streaming:
        _hook_renders(True)
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield stdout, stderr
    finally:
        sys.stdout, sys.stderr = saved
        if streaming:
            _hook_renders(False)


def _run_code(code):
    """exec `code` with fresh globals, capturing stdout/stderr. Never raises for errors in `code`."""
    out = _Outcome()
    globs = {"__builtins__": builtins, "bpy": bpy}
    start = time.time()
    with captured_output() as (stdout, stderr):
        try:
            exec(compile(code, "<string>", "exec"), globs)
        except SystemExit:
            # `sys.exit()` in sent code is how blender-remote's client asks the server to exit
            # (send_exit_request); treat it as a shutdown request instead of killing Blender mid-call.
            out.exit_requested = True
        except Exception as e:
            out.error = str(e) or type(e).__name__
            # Skip our own frame: the traceback should start in the user's code.
            out.traceback = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
    out.duration = time.time() - start
    out.stdout, out.stderr = stdout.getvalue(), stderr.getvalue()
    return out


# ---- handlers: each takes the params dict --------------------------------------------------------


def scene_objects(scene, visible=True, limit=10):
    """The scene info's `objects`: the first `limit` objects' name, type and location (to 2 places),
    and with `visible` whether each is visible (blender-mcp's shape leaves that out)."""
    objects = []
    for obj in list(scene.objects)[:limit]:
        loc = obj.location
        entry = {
            "name": obj.name,
            "type": obj.type,
            "location": [round(float(loc.x), 2), round(float(loc.y), 2), round(float(loc.z), 2)],
        }
        if visible:
            entry["visible"] = obj.visible_get()
        objects.append(entry)
    return objects


def get_scene_info(params):
    scene = bpy.context.scene
    objects = scene_objects(scene)
    return {
        "name": scene.name,
        "object_count": len(scene.objects),
        "objects": objects,
        "materials_count": len(bpy.data.materials),
        "frame_current": scene.frame_current,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
    }


def get_object_info(params):
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid('get_object_info needs params.name, the object name, e.g. {"name": "Cube"}')
    obj = bpy.data.objects.get(name)
    if obj is None:
        raise CommandError(f"Object not found: {name}", "not_found")
    info = {
        "name": obj.name,
        "type": obj.type,
        "location": list(obj.location),
        "rotation": list(obj.rotation_euler),
        "scale": list(obj.scale),
        "visible": obj.visible_get(),
        "dimensions": list(obj.dimensions),
        "materials": [slot.material.name for slot in obj.material_slots if slot.material],
    }
    if obj.type == "MESH" and obj.data:
        mesh = obj.data
        info["mesh"] = {
            "vertices": len(mesh.vertices),
            "edges": len(mesh.edges),
            "polygons": len(mesh.polygons),
        }
    return info


def _find_view3d():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                return window, area
    raise CommandError("No 3D viewport found: open a 3D Viewport area in Blender", "not_found")


def get_viewport_screenshot(params):
    if bpy.app.background:
        raise CommandError(_NO_SCREENSHOT_IN_BACKGROUND, "unavailable_in_background")
    max_size = params.get("max_size", 800)
    fmt = str(params.get("format", "png")).lower()
    filepath = params.get("filepath")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise _invalid("max_size must be a positive integer (pixels of the longest side), e.g. 800")
    if fmt not in _SCREENSHOT_FORMATS:
        raise _invalid(f"format must be one of {sorted(_SCREENSHOT_FORMATS)}, got {fmt!r}")
    if filepath is not None and not isinstance(filepath, str):
        raise _invalid("filepath must be a string (a path on the Blender machine) or omitted")
    inline = params.get("inline", False)
    if not isinstance(inline, bool) or (inline and filepath):
        raise _invalid("inline must be true or false, and true only without filepath (the image comes as data)")
    if not filepath:
        filepath = os.path.join(tempfile.gettempdir(), f"blender_screenshot_{uuid.uuid4().hex}.{fmt}")
    filepath = os.path.abspath(filepath)  # Blender rejects relative paths

    window, area = _find_view3d()
    if hasattr(bpy.context, "temp_override"):
        with bpy.context.temp_override(window=window, screen=window.screen, area=area):
            bpy.ops.screen.screenshot_area(filepath=filepath)
    else:  # Blender < 3.2: context-override dict
        override = {"window": window, "screen": window.screen, "area": area}
        bpy.ops.screen.screenshot_area(override, filepath=filepath)

    img = bpy.data.images.load(filepath)
    try:
        width, height = img.size
        resize = max(width, height) > max_size
        if resize:
            scale = max_size / max(width, height)
            width, height = int(width * scale), int(height * scale)
            img.scale(width, height)
        if resize or fmt != "png":  # screenshot_area always writes PNG
            img.file_format = _SCREENSHOT_FORMATS[fmt]
            img.save()
    finally:
        bpy.data.images.remove(img)
    if inline:
        # The bytes in the answer: a client on another machine, in WSL or in a container cannot
        # read a path on this one.
        try:
            with open(filepath, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
        finally:
            os.remove(filepath)
        return {"success": True, "width": width, "height": height, "format": fmt, "data": data}
    return {"success": True, "width": width, "height": height, "filepath": filepath}


def execute_code(params):
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
    out = _run_code(code)
    if out.error is not None:
        raise CommandError(f"Code execution error: {out.error}\n{out.traceback}", "execution_error")
    if out.exit_requested:
        _shutdown_requested("shutdown")
    result = {
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


def get_polyhaven_status(params):
    return {"enabled": False, "reason": "Asset providers not supported"}


def _persist_key(params, command):
    key = params.get("key")
    if key is None:
        raise _invalid(f'{command} needs params.key, e.g. {{"key": "my_key"}}')
    if isinstance(key, (list, dict)):
        raise _invalid(f"{command}: key must be a string or number, got a JSON {type(key).__name__}")
    return key


def put_persist_data(params):
    key = _persist_key(params, "put_persist_data")
    if params.get("data") is None:
        raise _invalid('put_persist_data needs params.data (any JSON value except null), e.g. {"key": "k", "data": 1}')
    persist.put(key, params["data"])
    return f"Data stored under key '{key}'"


def get_persist_data(params):
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


def remove_persist_data(params):
    return {"removed": persist.remove(_persist_key(params, "remove_persist_data"))}


def get_status(params):
    """blendwire's own (not in the peer): `_core.status()`, service, queue and router
    (state, attempts, watchdog countdown); what `blendwire status` prints."""
    return _core.status()


def _legacy(params):
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
            out = _run_code(code)
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


_HANDLERS = {
    "get_scene_info": get_scene_info,
    "get_object_info": get_object_info,
    "get_viewport_screenshot": get_viewport_screenshot,
    "execute_code": execute_code,
    "get_polyhaven_status": get_polyhaven_status,
    "put_persist_data": put_persist_data,
    "get_persist_data": get_persist_data,
    "remove_persist_data": remove_persist_data,
    "get_status": get_status,
    "_legacy": _legacy,
}

# The command types clients may send, for `_core.start_service(commands=...)` (`server_shutdown` is
# built into the core). `_legacy` is left out: the core routes `{"code"}`/`{"message"}` requests to
# it by itself, and it must not be callable (or listed) as a command type.
COMMANDS = tuple(name for name in _HANDLERS if not name.startswith("_"))


def dispatch(command_type, params):
    """Run `command_type` with `params` (a dict) and return its JSON-serialisable result."""
    handler = _HANDLERS.get(command_type)
    if handler is None:
        known = ", ".join(sorted(n for n in _HANDLERS if not n.startswith("_")))
        raise CommandError(f"Unknown command type {command_type!r}; known commands: {known}", "unknown_rpc_command")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _invalid(f"params must be a JSON object, got {type(params).__name__}")
    global running
    running += 1
    try:
        return handler(params)
    finally:
        running -= 1


# How many handlers are executing right now (a signal handler uses it to break a stuck command).
running = 0

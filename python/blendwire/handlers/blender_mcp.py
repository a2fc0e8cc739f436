"""blender-mcp's command table on Blender's main thread (ahujasid's add-on: the MCP servers
`blender-mcp` 1.x and `mcp-for-blender` 2.x talk to it on port 9876).

`dispatch(type, params)` answers one request of blender-mcp's wire dialect with the WHOLE response
dict, `{"status": "success", "result": ...}` or `{"status": "error", "message": ...}`, sent to the
client as is. The core calls it on Blender's main thread only.

Where the commands come from (resolved at the first request, again after `reset()`):

1. an add-on file given with `load_addon(path)` (`blendwire serve --blender-mcp-addon PATH`);
2. the add-on enabled in Blender (a module of `preferences.addons` with a `BlenderMCPServer`);
3. the bundled add-on (`blender_mcp/bundled/addon.py`) of an importable `blender_mcp` package, the
   PyPI wheels `blender-mcp` and `mcp-for-blender`, found without importing the package;
4. else blendwire's own answers (`BlenderMCPServer` here): the core commands in the add-on's
   result shapes, and its status/version commands saying that the integrations are off and what
   to install.

A hosted add-on is loaded as Blender loads one (module import, then its `register()`), but its
transport never runs: the auto-start timer, the update check and the load handler that its
`register()` schedules are cancelled, and its `BlenderMCPServer` is instantiated (its `__init__`
only sets fields) and never started, so no socket, thread or timer of its own exists. Its
`execute_command(command_dict)` is the command table. `execute_code` always runs through
blendwire's code runner (`code.run_code`: captured and streamed stdout, interruptible), in the
add-on's result shape. What an add-on command does on the main thread (asset downloads) is its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import logging
import os
import sys
import types
from typing import Any

import bpy

from .. import _core
from ..errors import CommandError
from . import checkpoints
from . import code as code_runner
from .inflight import HANDLER
from .scene import scene_objects
from .screenshot import get_viewport_screenshot

__all__ = [
    "BUILTIN_COMMANDS",
    "BUILTIN_PROTOCOL_VERSION",
    "BlenderMCPServer",
    "dispatch",
    "find_bundled_addon",
    "hosted",
    "load_addon",
    "reset",
    "unload_addon",
]

log = logging.getLogger("blendwire.blender_mcp")

# What get_addon_info reports without the add-on: the newest add-on protocol of the pinned MCP
# servers (blender-mcp 1.9.4 expects >= 7, mcp-for-blender 2.2.4 >= 15). The commands behind it that
# blendwire does not serve answer "Unknown command type", which both servers take as "this add-on
# lacks it" and fall back (e.g. get_world_state_snapshot).
BUILTIN_PROTOCOL_VERSION = 15

# The module name a hosted add-on file is imported under (Blender would use the file's stem; a
# name of our own cannot collide with an add-on enabled in Blender).
_MODULE_NAME = "blendwire_hosted_blender_mcp"

_INSTALL = (
    "blendwire is answering blender-mcp's commands itself: the blender-mcp add-on is not loaded. "
    "To use it, install the add-on where Blender finds it (`pip install mcp-for-blender`, or "
    "blender-mcp, into Blender's Python; or enable its addon.py in Blender), or give its file to "
    "`blendwire serve --blender-mcp-addon PATH`, then switch the integration on in the add-on's "
    "sidebar panel (MCP for Blender)."
)

_INTEGRATIONS = {
    "get_polyhaven_status": "Poly Haven",
    "get_hyper3d_status": "Hyper3D Rodin",
    "get_sketchfab_status": "Sketchfab",
    "get_polypizza_status": "Poly Pizza",
    "get_hunyuan3d_status": "Hunyuan3D",
    "get_meshy_status": "Meshy",
    "get_tripo_status": "Tripo",
}


class BlenderMCPAddonError(Exception):
    """The blender-mcp add-on could not be loaded (not found, import or register() failed)."""


# ---- blendwire's own answers, in the add-on's result shapes -------------------------------------


def _no_addon_status(label: str) -> dict[str, Any]:
    return {"enabled": False, "message": f"{label} integration is not available. {_INSTALL}"}


def _execute_code(code: str) -> dict[str, Any]:
    """The add-on's execute_code through blendwire's runner: `{"executed": True, "result": stdout}`;
    a failure raises an Exception whose message is the add-on's JSON (exception_type, message,
    traceback)."""
    out = code_runner.run_code(code)
    if out.exit_requested:
        out.error, out.traceback = "sys.exit() ends the sent code only; Blender keeps running", "SystemExit\n"
    if out.error is not None:
        tb = out.traceback or ""
        last = tb.rstrip("\n").rsplit("\n", 1)[-1]  # "pkg.TypeName: message" (format_exception's last line)
        exception_type = last.split(":", 1)[0].rsplit(".", 1)[-1].strip() or "Exception"
        raise Exception(json.dumps({"exception_type": exception_type, "message": out.error, "traceback": tb}))
    return {"executed": True, "result": out.stdout}


class BlenderMCPServer:
    """blendwire's answers to the add-on's core commands when no add-on is hosted.

    Named and called as the add-on's class (`execute_command`, handlers called with `**params`), so
    results, argument errors ("BlenderMCPServer.get_object_info() missing 1 required positional
    argument: 'name'") and the unknown-command error read exactly as the add-on's.
    """

    def execute_command(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd_type = command.get("type")
        params = command.get("params", {})
        if cmd_type == "ping":
            return {"status": "success", "result": {"pong": True}}
        label = _INTEGRATIONS.get(cmd_type) if isinstance(cmd_type, str) else None
        handler = getattr(self, cmd_type, None) if cmd_type in BUILTIN_COMMANDS and label is None else None
        if label is not None:
            return {"status": "success", "result": _no_addon_status(label)}
        if handler is None:
            return {"status": "error", "message": f"Unknown command type: {cmd_type}"}
        try:
            return {"status": "success", "result": handler(**params)}
        except Exception as e:
            return {"status": "error", "message": str(e)}

    def get_addon_info(self) -> dict[str, Any]:
        version = []
        for part in _core.__version__.split(".")[:3]:
            digits = "".join(c for c in part if c.isdigit())
            version.append(int(digits) if digits else 0)
        return {
            "name": "blendwire",
            "addon_version": version,
            "protocol_version": BUILTIN_PROTOCOL_VERSION,
            "capabilities": sorted(c for c in BUILTIN_COMMANDS if c not in _INTEGRATIONS),
            "blender_version": bpy.app.version_string,
            "premium_generators": [],
            "message": _INSTALL,
        }

    def get_telemetry_consent(self) -> dict[str, Any]:
        # The add-on reads its preferences and fails closed; without it there is no consent.
        return {"consent": False}

    def set_telemetry_consent(self, consent: bool = False) -> dict[str, Any]:
        # disable_telemetry sends consent False: that is what get_telemetry_consent reports here.
        # Opting in is the add-on's preference, which exists only for an add-on enabled in Blender.
        if consent:
            return {
                "error": "Telemetry consent is a preference of the blender-mcp add-on enabled in Blender; "
                "blendwire records no consent (it stays off)"
            }
        return {"consent": False}

    def get_scene_info(self) -> dict[str, Any]:
        try:
            scene = bpy.context.scene
            objects = scene_objects(scene, visible=False)
            return {
                "name": scene.name,
                "object_count": len(scene.objects),
                "objects": objects,
                "materials_count": len(bpy.data.materials),
            }
        except Exception as e:
            return {"error": str(e)}

    def get_object_info(self, name: str) -> dict[str, Any]:
        obj = bpy.data.objects.get(name)
        if not obj:
            raise ValueError(f"Object not found: {name}")
        info: dict[str, Any] = {
            "name": obj.name,
            "type": obj.type,
            "location": [obj.location.x, obj.location.y, obj.location.z],
            "rotation": [obj.rotation_euler.x, obj.rotation_euler.y, obj.rotation_euler.z],
            "scale": [obj.scale.x, obj.scale.y, obj.scale.z],
            "visible": obj.visible_get(),
            "materials": [],
        }
        if obj.type == "MESH":
            world = [obj.matrix_world @ _vector(corner) for corner in obj.bound_box]
            info["world_bounding_box"] = [
                [min(c[i] for c in world) for i in range(3)],
                [max(c[i] for c in world) for i in range(3)],
            ]
        for slot in obj.material_slots:
            if slot.material:
                info["materials"].append(slot.material.name)
        if obj.type == "MESH" and obj.data:
            mesh = obj.data
            info["mesh"] = {"vertices": len(mesh.vertices), "edges": len(mesh.edges), "polygons": len(mesh.polygons)}
        return info

    def list_scene_items(self, query: str = "", limit: int = 30) -> dict[str, Any]:
        # mcp-for-blender asks this (not get_scene_info) of add-ons with protocol >= 12.
        needle = (query or "").strip().lower()
        limit = max(1, min(int(limit or 30), 100))
        candidates = [("object", o.name, f"{o.type.title()} object") for o in bpy.context.scene.objects]
        candidates += [("material", m.name, "Material") for m in bpy.data.materials]
        candidates += [
            ("collection", c.name, f"Collection with {len(c.all_objects)} objects") for c in bpy.data.collections
        ]
        matches = []
        for order, (kind, name, detail) in enumerate(candidates):
            lowered = name.lower()
            if needle and needle not in lowered:
                continue
            rank = 0 if not needle or lowered.startswith(needle) else 1
            matches.append((rank, order, {"kind": kind, "name": name, "detail": detail}))
        matches.sort(key=lambda m: (m[0], m[1]))
        return {"items": [m[2] for m in matches[:limit]], "total": len(matches)}

    def get_viewport_screenshot(
        self, max_size: int = 800, filepath: str | None = None, format: str = "png"
    ) -> dict[str, Any]:
        if not filepath:
            return {"error": "No filepath provided"}
        try:
            # blendwire's screenshot (the window grab, which the add-on falls back to).
            result = get_viewport_screenshot({"max_size": max_size, "filepath": filepath, "format": format})
        except Exception as e:
            return {"error": str(e)}
        return {**result, "method": "window_grab"}

    def execute_code(self, code: str) -> dict[str, Any]:
        return _execute_code(code)


def _vector(values: Any) -> Any:
    import mathutils  # Blender's; imported here as the add-on does, only for meshes

    return mathutils.Vector(values)


# The commands blendwire answers without the add-on (plus "ping", as the add-on).
BUILTIN_COMMANDS = (
    "get_addon_info",
    "get_telemetry_consent",
    "set_telemetry_consent",
    "get_scene_info",
    "get_object_info",
    "list_scene_items",
    "get_viewport_screenshot",
    "execute_code",
    *_INTEGRATIONS,
)

_BUILTIN = BlenderMCPServer()


# ---- hosting the add-on ------------------------------------------------------------------------


class _Hosted:
    __slots__ = ("module", "server", "path", "source", "loaded_here", "cancelled")

    def __init__(self, module: types.ModuleType, source: str, loaded_here: bool, cancelled: list[str]):
        self.module = module
        self.server = module.BlenderMCPServer()  # never started: __init__ only sets fields
        self.path = getattr(module, "__file__", None)
        self.source = source
        self.loaded_here = loaded_here
        self.cancelled = cancelled


_hosted: _Hosted | None = None
_resolved = False  # whether the source was looked for since the last reset()


def find_bundled_addon() -> str | None:
    """The bundled add-on file of an importable `blender_mcp` package (`blender-mcp` /
    `mcp-for-blender` wheels), found without importing the package (its MCP server's deps)."""
    try:
        spec = importlib.util.find_spec("blender_mcp")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, "bundled", "addon.py")
        if os.path.isfile(path):
            return path
    return None


def _enabled_addon() -> types.ModuleType | None:
    """The blender-mcp add-on module enabled in Blender, if any."""
    try:
        names = list(bpy.context.preferences.addons.keys())
    except Exception:  # no preferences (e.g. while Blender starts)
        return None
    for name in names:
        module = sys.modules.get(name)
        if module is not None and module.__name__ != _MODULE_NAME and _is_addon(module):
            return module
    return None


def _is_addon(module: types.ModuleType) -> bool:
    server = getattr(module, "BlenderMCPServer", None)
    return inspect.isclass(server) and callable(getattr(server, "execute_command", None))


def _handler_lists() -> dict[str, list]:
    return {n: h for n in dir(bpy.app.handlers) if isinstance(h := getattr(bpy.app.handlers, n), list)}


def _cancel_transport(module: types.ModuleType, handlers_before: dict[str, list]) -> list[str]:
    """Undo what the add-on's register() scheduled for its own transport: its timers (auto-start
    of its socket server, the update check) and the app handlers it added (the load_post that
    re-schedules the auto-start). Returns what was cancelled."""
    cancelled = []
    for name, value in vars(module).items():
        if inspect.isfunction(value) and getattr(value, "__module__", None) == module.__name__:
            try:
                if bpy.app.timers.is_registered(value):
                    bpy.app.timers.unregister(value)
                    cancelled.append(f"timer {name}")
            except Exception:
                pass
    for list_name, handlers in _handler_lists().items():
        before = handlers_before.get(list_name, [])
        for fn in list(handlers):
            if getattr(fn, "__module__", None) == module.__name__ and not any(fn is b for b in before):
                handlers.remove(fn)
                cancelled.append(f"handler {list_name}.{getattr(fn, '__name__', fn)}")
    return cancelled


def _load_file(path: str, source: str) -> _Hosted:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise BlenderMCPAddonError(f"blender-mcp add-on file not found: {path}")
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise BlenderMCPAddonError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(_MODULE_NAME, None)
        raise BlenderMCPAddonError(f"importing the blender-mcp add-on {path} failed: {type(e).__name__}: {e}") from e
    if not _is_addon(module) or not callable(getattr(module, "register", None)):
        sys.modules.pop(_MODULE_NAME, None)
        raise BlenderMCPAddonError(
            f"{path} is not the blender-mcp add-on (no BlenderMCPServer.execute_command / register)"
        )
    before = {n: list(h) for n, h in _handler_lists().items()}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            module.register()
    except Exception as e:
        _cancel_transport(module, before)
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            module.unregister()
        sys.modules.pop(_MODULE_NAME, None)
        raise BlenderMCPAddonError(
            f"the blender-mcp add-on's register() failed ({path}): {type(e).__name__}: {e}"
        ) from e
    cancelled = _cancel_transport(module, before)
    hosted = _Hosted(module, source, True, cancelled)
    log.info(
        "hosting the blender-mcp add-on %s (%s); cancelled its %s", path, source, ", ".join(cancelled) or "nothing"
    )
    return hosted


def _unload() -> None:
    global _hosted
    hosted, _hosted = _hosted, None
    if hosted is not None and hosted.loaded_here:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                hosted.module.unregister()
        except Exception as e:
            log.warning("the blender-mcp add-on's unregister() failed: %s: %s", type(e).__name__, e)
        if sys.modules.get(_MODULE_NAME) is hosted.module:
            del sys.modules[_MODULE_NAME]


def load_addon(path: str) -> dict[str, Any]:
    """Host the blender-mcp add-on file at `path` (`--blender-mcp-addon PATH`): import it, run its
    register() with its transport cancelled, and serve its command table from now on (a previously
    hosted add-on is unregistered first). Returns `hosted()`. Raises BlenderMCPAddonError."""
    global _hosted, _resolved
    _unload()
    _resolved = True  # an explicit choice: no discovery afterwards, even if this fails
    _hosted = _load_file(path, "path")
    return hosted()  # type: ignore[return-value]


def unload_addon() -> None:
    """Stop hosting the add-on (unregister it if blendwire loaded it) and answer with blendwire's
    own commands from now on, without looking for an add-on again until `reset()`."""
    global _resolved
    _unload()
    _resolved = True


def reset() -> None:
    """Stop hosting, and look for the add-on again at the next request."""
    global _resolved
    _unload()
    _resolved = False


def hosted() -> dict[str, Any] | None:
    """What is served: None for blendwire's own answers, else the add-on's source ("path",
    "enabled" or "bundled"), file, module, protocol and version, and what of its transport was
    cancelled."""
    host = _current()
    if host is None:
        return None
    info = getattr(host.module, "bl_info", {}) or {}
    return {
        "source": host.source,
        "path": host.path,
        "module": host.module.__name__,
        "protocol_version": getattr(host.module, "ADDON_PROTOCOL_VERSION", None),
        "addon_version": list(info.get("version", ())),
        "cancelled": list(host.cancelled),
    }


def _current() -> _Hosted | None:
    global _hosted, _resolved
    if not _resolved:
        _resolved = True
        module = _enabled_addon()
        if module is not None:
            _hosted = _Hosted(module, "enabled", False, [])
            log.info("serving the blender-mcp add-on enabled in Blender (%s)", module.__name__)
        else:
            path = find_bundled_addon()
            if path is not None:
                try:
                    _hosted = _load_file(path, "bundled")
                except BlenderMCPAddonError as e:
                    log.warning("%s; answering blender-mcp's core commands without it", e)
    return _hosted


# ---- dispatch ------------------------------------------------------------------------------


def dispatch(command_type: str, params: Any) -> dict[str, Any]:
    """Answer the blender-mcp request `{"type": command_type, "params": params}`: the whole
    response dict (`status` success/error, `result` or `message`)."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return {"status": "error", "message": f"params must be a JSON object, got {type(params).__name__}"}
    if command_type in _CHECKPOINT_COMMANDS:
        return _checkpoint_command(command_type, params)
    host = _current()
    with HANDLER:  # a signal in -b / the bpy module breaks a running command (runtime)
        if command_type == "execute_code":
            return _hosted_execute_code(host, params)
        if (
            host is None
            or (command_type in _PREFERENCE_COMMANDS and not _has_preferences(host))
            or (command_type == "get_viewport_screenshot" and bpy.app.background)
        ):
            # Without a UI the add-on's screenshot fails on an operator's poll ("context is
            # incorrect"); blendwire's says why and what to run instead.
            return _BUILTIN.execute_command({"type": command_type, "params": params})
        # The add-on logs every command to stdout ("Executing handler for ..."): not ours to relay.
        with contextlib.redirect_stdout(io.StringIO()):
            return host.server.execute_command({"type": command_type, "params": params})


# blendwire's checkpoints, in this dialect too (the add-on has no such commands): a blender-mcp
# client's changing jobs are checkpointed, and it can list and restore them.
_CHECKPOINT_COMMANDS = ("list_checkpoints", "restore_checkpoint")


def _checkpoint_command(command_type: str, params: dict[str, Any]) -> dict[str, Any]:
    run = checkpoints.list_checkpoints if command_type == "list_checkpoints" else checkpoints.restore_checkpoint
    try:
        with HANDLER:
            return {"status": "success", "result": run(params)}
    except CommandError as e:
        return {"status": "error", "message": str(e)}


# Commands of the add-on that read or write its preferences (`preferences.addons[__name__]`), which
# a hosted add-on file does not have (it is not enabled in Blender): its get_telemetry_consent
# fails closed (no consent) and its set_telemetry_consent fails ("Could not read addon
# preferences"), so disable_telemetry would report an error. blendwire's answers say the same
# truthfully: consent off, and switching it off succeeds.
_PREFERENCE_COMMANDS = ("set_telemetry_consent",)


def _has_preferences(host: _Hosted) -> bool:
    try:
        return bpy.context.preferences.addons.get(host.module.__name__) is not None
    except Exception:
        return False


def _hosted_execute_code(host: _Hosted | None, params: dict[str, Any]) -> dict[str, Any]:
    recorder = getattr(host.module, "get_edit_recorder", None) if host is not None else None
    # The add-on marks its commands as the agent's, so its edit capture does not record them as
    # the user's; do the same around the code it would have run.
    scope = recorder().agent_command() if callable(recorder) else contextlib.nullcontext()
    try:
        with scope:
            return {"status": "success", "result": _BUILTIN.execute_code(**params)}
    except Exception as e:
        return {"status": "error", "message": str(e)}

"""The cr8 handler registry: which add-on serves which command, and how add-ons are found.

Handlers come from three places:
1. capability add-ons: a package with `addon_ai.json` beside its `__init__.py` and a module-level
   `AI_COMMAND_HANDLERS = {command: fn(**params)}`; enabled Blender add-ons are scanned, and
   `register_addon_module(module)` / `load_addon_path(folder)` add ones loaded another way
   (e.g. `blendwire serve --addon-path`);
2. `register_handler(addon_id, command, fn)` from Python;
3. the router's own, under addon_id "cr8_router": get_available_addons, get_addon_info {addon_id},
   refresh_addons.

`find_handler(addon_id, command)` is what the router's dispatcher asks. Main thread only (add-on
modules may use bpy); bpy itself is only imported to list the enabled add-ons.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..errors import CommandError, require_main_thread

__all__ = [
    "MANIFEST",
    "ROUTER_ADDON_ID",
    "find_handler",
    "load_addon_path",
    "refresh",
    "register_addon_module",
    "register_handler",
    "registry_payload",
    "unregister_handler",
]

log = logging.getLogger("blendwire.router")

ROUTER_ADDON_ID = "cr8_router"
MANIFEST = "addon_ai.json"

Handler = Callable[..., Any]


class _Addon:
    __slots__ = ("addon_id", "handlers", "manifest", "module", "name", "source")

    def __init__(
        self, addon_id: str, name: str, module: ModuleType | None, manifest: dict, handlers: dict, source: str | None
    ):
        self.addon_id, self.name, self.module = addon_id, name, module
        self.manifest, self.handlers, self.source = manifest, handlers, source

    def tools(self) -> list[dict]:
        ai = self.manifest.get("ai_integration") or {}
        tools = ai.get("tools", self.manifest.get("tools")) or []
        out = []
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            spec = dict(tool)
            spec["addon_id"] = self.addon_id
            spec["addon_name"] = self.name
            out.append(spec)
        # Handlers without a tool spec are still callable: announce them with a bare spec.
        described = {t.get("name") for t in out}
        for command in sorted(self.handlers):
            if command not in described:
                out.append(
                    {
                        "name": command,
                        "description": "",
                        "parameters": [],
                        "addon_id": self.addon_id,
                        "addon_name": self.name,
                    }
                )
        return out

    def info(self) -> dict:
        info = self.manifest.get("addon_info") or {}
        return {
            "addon_id": self.addon_id,
            "name": self.name,
            "version": info.get("version"),
            "author": info.get("author"),
            "category": info.get("category"),
            "description": info.get("description", ""),
            "source": self.source,
            "commands": sorted(self.handlers),
            "tools": self.tools(),
        }


class _Registry:
    explicit_modules: dict[str, ModuleType] = {}  # addon_id -> module, from register_addon_module
    python_handlers: dict[str, dict[str, Handler]] = {}  # addon_id -> {command: fn}, register_handler
    addons: dict[str, _Addon] = {}  # addon_id -> _Addon, the last scan


def _read_manifest(module: ModuleType) -> dict | None:
    """The parsed addon_ai.json beside the module's __init__.py, or None if it has none."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    manifest = os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST)
    if not os.path.isfile(manifest):
        return None
    try:
        with open(manifest, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: %s", manifest, e)
        return None
    if not isinstance(data, dict):
        log.warning("ignoring %s: not a JSON object", manifest)
        return None
    return data


def _addon_from_module(module: ModuleType, source: str) -> _Addon | None:
    manifest = _read_manifest(module)
    if manifest is None:
        return None
    handlers = getattr(module, "AI_COMMAND_HANDLERS", None)
    if not isinstance(handlers, dict):
        log.warning("add-on %s ships %s but no AI_COMMAND_HANDLERS dict; skipped", module.__name__, MANIFEST)
        return None
    info = manifest.get("addon_info") or {}
    addon_id = str(info.get("id") or module.__name__)
    name = str(info.get("name") or addon_id)
    handlers = {str(k): v for k, v in handlers.items() if callable(v)}
    return _Addon(addon_id, name, module, manifest, handlers, source)


def _enabled_addon_modules() -> list[ModuleType]:
    try:
        import bpy
    except ImportError:
        return []
    try:
        names = [a.module for a in bpy.context.preferences.addons]
    except Exception:  # no preferences (e.g. very early in start-up)
        names = []
    return [sys.modules[name] for name in names if name in sys.modules]


def refresh() -> int:
    """Rescan: enabled add-ons, explicitly registered modules, Python-registered handlers.
    Returns the number of add-ons with handlers."""
    addons = {}
    for module in _enabled_addon_modules():
        try:
            addon = _addon_from_module(module, "enabled add-on")
        except Exception:
            log.warning("scanning add-on %s failed:\n%s", getattr(module, "__name__", module), traceback.format_exc())
            continue
        if addon is not None:
            addons[addon.addon_id] = addon
    for addon_id, module in _Registry.explicit_modules.items():
        addon = _addon_from_module(module, "registered module")
        if addon is not None:
            addons[addon_id] = addon
    for addon_id, handlers in _Registry.python_handlers.items():
        if not handlers:
            continue
        existing = addons.get(addon_id)
        if existing is not None:
            existing.handlers = {**existing.handlers, **handlers}
        else:
            addons[addon_id] = _Addon(addon_id, addon_id, None, {}, dict(handlers), "python")
    _Registry.addons = addons
    return len(addons)


def register_addon_module(module: ModuleType, addon_id: str | None = None) -> str:
    """Make a capability add-on's module known even if it is not an enabled Blender add-on (it
    must ship addon_ai.json beside its __init__.py and define AI_COMMAND_HANDLERS). Returns its
    addon_id. Raises ValueError when the module has no manifest or handlers."""
    addon = _addon_from_module(module, "registered module")
    if addon is None:
        raise ValueError(
            f"{getattr(module, '__name__', module)!r} is not a capability add-on: it needs "
            f"{MANIFEST} beside its __init__.py and a module-level AI_COMMAND_HANDLERS dict"
        )
    addon_id = addon_id or addon.addon_id
    _Registry.explicit_modules[addon_id] = module
    refresh()
    return addon_id


def register_handler(addon_id: str, command: str, fn: Handler) -> None:
    """Serve `command` of `addon_id` with `fn(**params)` (overrides an add-on's handler of the
    same name)."""
    if not isinstance(addon_id, str) or not addon_id or not isinstance(command, str) or not command:
        raise ValueError("register_handler needs a non-empty addon_id and command (strings)")
    if not callable(fn):
        raise TypeError(f"register_handler: fn must be callable, got {type(fn).__name__}")
    if addon_id == ROUTER_ADDON_ID:
        raise ValueError(f"addon_id {ROUTER_ADDON_ID!r} is reserved for the router's own commands")
    _Registry.python_handlers.setdefault(addon_id, {})[command] = fn
    refresh()


def unregister_handler(addon_id: str, command: str | None = None) -> bool:
    """Remove one Python-registered handler, or all of `addon_id`'s when `command` is None.
    Returns True if something was removed."""
    handlers = _Registry.python_handlers.get(addon_id)
    if not handlers:
        return False
    if command is None:
        removed = bool(_Registry.python_handlers.pop(addon_id, None))
    else:
        removed = handlers.pop(command, None) is not None
    refresh()
    return removed


def load_addon_path(folder: str) -> list[str]:
    """Import every capability add-on package directly inside `folder` (a package with
    addon_ai.json), call its `register()` if it has one, and register it. `folder` is appended to
    sys.path. Returns the addon_ids. Raises ValueError for a missing folder."""
    require_main_thread("blendwire.router.load_addon_path")
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"add-on path {folder!r} is not a directory")
    if folder not in sys.path:
        sys.path.append(folder)
    loaded = []
    for name in sorted(os.listdir(folder)):
        pkg = os.path.join(folder, name)
        if not (os.path.isfile(os.path.join(pkg, "__init__.py")) and os.path.isfile(os.path.join(pkg, MANIFEST))):
            continue
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if callable(register):
            register()
        loaded.append(register_addon_module(module))
        log.info("capability add-on %s loaded from %s", loaded[-1], pkg)
    return loaded


def registry_payload() -> dict:
    """The `registry_update` event's payload, from a fresh scan."""
    refresh()
    tools = [tool for addon in _Registry.addons.values() for tool in addon.tools()]
    return {"type": "registry_updated", "total_addons": len(_Registry.addons), "available_tools": tools}


# ---- the router's own commands (addon_id "cr8_router") ----------------------------------------


def _get_available_addons() -> dict:
    refresh()
    return {"addons": [a.info() for a in _Registry.addons.values()], "total_addons": len(_Registry.addons)}


def _get_addon_info(addon_id: str | None = None) -> dict:
    if not isinstance(addon_id, str) or not addon_id:
        raise CommandError('get_addon_info needs params.addon_id, e.g. {"addon_id": "my_addon"}', "INVALID_PARAMS")
    refresh()
    addon = _Registry.addons.get(addon_id)
    if addon is None:
        raise CommandError(f"No add-on {addon_id!r}; known: {sorted(_Registry.addons)}", "NO_HANDLERS")
    return addon.info()


def _refresh_addons() -> dict:
    n = refresh()
    return {"refreshed": True, "total_addons": n, "addons": sorted(_Registry.addons)}


_ROUTER_COMMANDS: dict[str, Handler] = {
    "get_available_addons": _get_available_addons,
    "get_addon_info": _get_addon_info,
    "refresh_addons": _refresh_addons,
}


def find_handler(addon_id: str, command: str) -> Handler:
    """The handler of `command` of `addon_id`; CommandError NO_HANDLERS / COMMAND_NOT_FOUND."""
    if addon_id == ROUTER_ADDON_ID:
        handlers = _ROUTER_COMMANDS
    else:
        addon = _Registry.addons.get(addon_id)
        if addon is None:
            refresh()  # an add-on enabled since the last scan
            addon = _Registry.addons.get(addon_id)
        if addon is None:
            raise CommandError(
                f"No handlers for add-on {addon_id!r}; available add-ons: "
                f"{sorted(_Registry.addons) + [ROUTER_ADDON_ID]}",
                "NO_HANDLERS",
            )
        handlers = addon.handlers
    fn = handlers.get(command)
    if fn is None:
        raise CommandError(
            f"Add-on {addon_id!r} has no command {command!r}; its commands: {sorted(handlers)}", "COMMAND_NOT_FOUND"
        )
    return fn

"""The Blender side of the cr8_engine router (protocols.md §3): handler registry, the router
dispatcher, and the watchdog's save-and-quit.

The Rust core owns the Socket.IO connection, retries, the outbox and the watchdog clock; it calls
`dispatch(op, params)` on Blender's main thread only (in `_core.tick` / `_core.pump`), so
everything here may use bpy. Ops:

- "auth"     -> {"token", "username", "blend_file_path"}, read fresh before every connect attempt
                (token: `set_token_provider(fn)` / `set_token(str)`, else env CR8_AUTH_TOKEN;
                username: `start(username=...)`, else env CR8_USERNAME, else the login name).
- "registry" -> {"type": "registry_updated", "total_addons", "available_tools"} (rescans add-ons).
- "command"  {addon_id, command, params, message_id} -> the handler's result data.
- "poll"     {handle, cancel} -> the final data of a long-running result, or the pending marker.

Handlers come from three places:
1. capability add-ons: a package with `addon_ai.json` beside its `__init__.py` and a module-level
   `AI_COMMAND_HANDLERS = {command: fn(**params)}`; enabled add-ons are scanned, and
   `register_addon_module(module)` adds one that was loaded another way (e.g. `serve --addon-path`);
2. `register_handler(addon_id, command, fn)` from Python;
3. the router's own, under addon_id "cr8_router": get_available_addons, get_addon_info {addon_id},
   refresh_addons.

A handler returns a JSON-serialisable value (a dict becomes payload.data; anything else is wrapped
as {"result": value} by the core). A handler may instead return a long-running object with
`check_is_finished()`: the core polls it every 100 ms on the main thread (never blocking it). Once
it reports True, its final data is `obj.get_result()` if it has that method, else `obj.result` if it
has that attribute, else {}; if `get_result()` raises, or the object has a truthy `error` attribute,
the command fails with EXECUTION_FAILED. A poll with cancel=True (poll limit reached) drops it, and
calls its `cancel()` if it has one.

Errors are `CommandError(message, CODE)`: NO_HANDLERS (unknown addon_id), COMMAND_NOT_FOUND,
INVALID_PARAMS (params that do not fit the handler's signature), EXECUTION_FAILED (the handler
raised; the traceback is in the message), UNSERIALIZABLE_RESULT.
"""

import getpass
import inspect
import itertools
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback

from . import _core
from .errors import CommandError, ServiceError

log = logging.getLogger("blendwire.router")

ROUTER_ADDON_ID = "cr8_router"
PENDING = "__blendwire_pending__"
MANIFEST = "addon_ai.json"
DEFAULT_WATCHDOG_SECONDS = 300.0

# Exit status of `blendwire serve`'s Blender when the watchdog fired but the save failed.
EXIT_SAVE_FAILED = 3


class _State:
    token_provider = None  # callable -> str, or None: env CR8_AUTH_TOKEN
    username = None  # None: env CR8_USERNAME, else the login name
    explicit_modules = {}  # addon_id -> module, from register_addon_module
    python_handlers = {}  # addon_id -> {command: fn}, from register_handler
    addons = {}  # addon_id -> _Addon, the last scan
    pending = {}  # handle -> long-running handler result
    handles = itertools.count(1)
    last_save = None  # {"ok", "path", "error"} of the last save_after_watchdog()


class _Addon:
    __slots__ = ("addon_id", "name", "module", "manifest", "handlers", "source")

    def __init__(self, addon_id, name, module, manifest, handlers, source):
        self.addon_id, self.name, self.module = addon_id, name, module
        self.manifest, self.handlers, self.source = manifest, handlers, source

    def tools(self):
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

    def info(self):
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


# ---- the registry ---------------------------------------------------------------------------------


def _require_main_thread(what):
    if threading.current_thread() is not threading.main_thread():
        raise ServiceError(f"blendwire.router.{what}() must be called on Blender's main thread")


def _read_manifest(module):
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


def _addon_from_module(module, source):
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


def _enabled_addon_modules():
    try:
        import bpy
    except ImportError:
        return []
    modules = []
    try:
        names = [a.module for a in bpy.context.preferences.addons]
    except Exception:  # no preferences (e.g. very early in start-up)
        names = []
    for name in names:
        module = sys.modules.get(name)
        if module is not None:
            modules.append(module)
    return modules


def refresh():
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
    for addon_id, module in _State.explicit_modules.items():
        addon = _addon_from_module(module, "registered module")
        if addon is not None:
            addons[addon_id] = addon
    for addon_id, handlers in _State.python_handlers.items():
        if not handlers:
            continue
        existing = addons.get(addon_id)
        if existing is not None:
            existing.handlers = {**existing.handlers, **handlers}
        else:
            addons[addon_id] = _Addon(addon_id, addon_id, None, {}, dict(handlers), "python")
    _State.addons = addons
    return len(addons)


def register_addon_module(module, addon_id=None):
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
    _State.explicit_modules[addon_id] = module
    refresh()
    return addon_id


def register_handler(addon_id, command, fn):
    """Serve `command` of `addon_id` with `fn(**params)` (overrides an add-on's handler of the
    same name)."""
    if not isinstance(addon_id, str) or not addon_id or not isinstance(command, str) or not command:
        raise ValueError("register_handler needs a non-empty addon_id and command (strings)")
    if not callable(fn):
        raise TypeError(f"register_handler: fn must be callable, got {type(fn).__name__}")
    if addon_id == ROUTER_ADDON_ID:
        raise ValueError(f"addon_id {ROUTER_ADDON_ID!r} is reserved for the router's own commands")
    _State.python_handlers.setdefault(addon_id, {})[command] = fn
    refresh()


def unregister_handler(addon_id, command=None):
    """Remove one Python-registered handler, or all of `addon_id`'s when `command` is None.
    Returns True if something was removed."""
    handlers = _State.python_handlers.get(addon_id)
    if not handlers:
        return False
    if command is None:
        removed = bool(_State.python_handlers.pop(addon_id, None))
    else:
        removed = handlers.pop(command, None) is not None
    refresh()
    return removed


def registry_payload():
    refresh()
    tools = []
    for addon in _State.addons.values():
        tools.extend(addon.tools())
    return {"type": "registry_updated", "total_addons": len(_State.addons), "available_tools": tools}


# ---- the router's own commands (addon_id "cr8_router") --------------------------------------------


def _get_available_addons():
    refresh()
    return {"addons": [a.info() for a in _State.addons.values()], "total_addons": len(_State.addons)}


def _get_addon_info(addon_id=None):
    if not isinstance(addon_id, str) or not addon_id:
        raise CommandError('get_addon_info needs params.addon_id, e.g. {"addon_id": "my_addon"}', "INVALID_PARAMS")
    refresh()
    addon = _State.addons.get(addon_id)
    if addon is None:
        raise CommandError(f"No add-on {addon_id!r}; known: {sorted(_State.addons)}", "NO_HANDLERS")
    return addon.info()


def _refresh_addons():
    n = refresh()
    return {"refreshed": True, "total_addons": n, "addons": sorted(_State.addons)}


_ROUTER_COMMANDS = {
    "get_available_addons": _get_available_addons,
    "get_addon_info": _get_addon_info,
    "refresh_addons": _refresh_addons,
}


# ---- running commands --------------------------------------------------------------------------------


def _find_handler(addon_id, command):
    if addon_id == ROUTER_ADDON_ID:
        handlers = _ROUTER_COMMANDS
    else:
        addon = _State.addons.get(addon_id)
        if addon is None:
            refresh()  # an add-on enabled since the last scan
            addon = _State.addons.get(addon_id)
        if addon is None:
            raise CommandError(
                f"No handlers for add-on {addon_id!r}; available add-ons: {sorted(_State.addons) + [ROUTER_ADDON_ID]}",
                "NO_HANDLERS",
            )
        handlers = addon.handlers
    fn = handlers.get(command)
    if fn is None:
        raise CommandError(
            f"Add-on {addon_id!r} has no command {command!r}; its commands: {sorted(handlers)}", "COMMAND_NOT_FOUND"
        )
    return fn


def _check_params(addon_id, command, fn, params):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        sig.bind(**params)
    except TypeError as e:
        raise CommandError(
            f"Invalid params for {addon_id}.{command}: {e}; the handler takes {sig}", "INVALID_PARAMS"
        ) from None


def _check_serializable(addon_id, command, result):
    try:
        json.dumps(result)
    except (TypeError, ValueError) as e:
        raise CommandError(
            f"{addon_id}.{command} returned a result that is not JSON-serialisable "
            f"({type(result).__name__}: {e}); return plain JSON data",
            "UNSERIALIZABLE_RESULT",
        ) from None
    return result


def _run_command(addon_id, command, params):
    if not isinstance(addon_id, str) or not isinstance(command, str):
        raise CommandError("command_received needs string addon_id and command", "INVALID_PARAMS")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CommandError(f"params must be a JSON object, got {type(params).__name__}", "INVALID_PARAMS")
    fn = _find_handler(addon_id, command)
    _check_params(addon_id, command, fn, params)
    try:
        result = fn(**params)
    except CommandError:
        raise
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        raise CommandError(f"{addon_id}.{command} failed: {type(e).__name__}: {e}\n{tb}", "EXECUTION_FAILED") from None
    if callable(getattr(result, "check_is_finished", None)):
        handle = next(_State.handles)
        _State.pending[handle] = (addon_id, command, result)
        return _poll(handle, False)  # already finished: answer now
    return _check_serializable(addon_id, command, result)


def _poll(handle, cancel):
    entry = _State.pending.get(handle)
    if entry is None:
        raise CommandError(
            f"No long-running command with handle {handle!r} (already finished or cancelled)", "EXECUTION_FAILED"
        )
    addon_id, command, obj = entry
    if cancel:
        _State.pending.pop(handle, None)
        cancel_fn = getattr(obj, "cancel", None)
        if callable(cancel_fn):
            try:
                cancel_fn()
            except Exception:
                log.warning("cancel() of %s.%s raised:\n%s", addon_id, command, traceback.format_exc())
        raise CommandError(f"{addon_id}.{command} did not finish within the poll limit; cancelled", "TIMEOUT")
    try:
        finished = obj.check_is_finished()
    except Exception as e:
        _State.pending.pop(handle, None)
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        raise CommandError(f"{addon_id}.{command} failed in check_is_finished: {e}\n{tb}", "EXECUTION_FAILED") from None
    if not finished:
        return {PENDING: handle}
    _State.pending.pop(handle, None)
    error = getattr(obj, "error", None)
    if error:
        raise CommandError(f"{addon_id}.{command} failed: {error}", "EXECUTION_FAILED")
    try:
        if callable(getattr(obj, "get_result", None)):
            result = obj.get_result()
        else:
            result = getattr(obj, "result", {})
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        raise CommandError(f"{addon_id}.{command} failed: {type(e).__name__}: {e}\n{tb}", "EXECUTION_FAILED") from None
    return _check_serializable(addon_id, command, {} if result is None else result)


def _auth():
    token = None
    if _State.token_provider is not None:
        try:
            token = _State.token_provider()
        except Exception:
            log.warning("the token provider raised; connecting without a token:\n%s", traceback.format_exc())
    if token is None:
        token = os.environ.get("CR8_AUTH_TOKEN")
    username = _State.username or os.environ.get("CR8_USERNAME")
    if not username:
        try:
            username = getpass.getuser()
        except Exception:
            username = ""
    try:
        import bpy

        blend_file_path = bpy.data.filepath
    except ImportError:
        blend_file_path = ""
    return {"token": token, "username": username, "blend_file_path": blend_file_path}


def dispatch(op, params):
    """The router dispatcher (`_core.set_router_dispatcher`); main thread only."""
    if op == "auth":
        return _auth()
    if op == "registry":
        return registry_payload()
    if op == "command":
        return _run_command(params.get("addon_id"), params.get("command"), params.get("params"))
    if op == "poll":
        return _poll(params.get("handle"), bool(params.get("cancel")))
    raise CommandError(f"unknown router op {op!r}", "INVALID_PARAMS")


# ---- token / user ----------------------------------------------------------------------------------


def set_token_provider(fn):
    """`fn()` -> the auth token, asked before every connect attempt (None: env CR8_AUTH_TOKEN)."""
    if fn is not None and not callable(fn):
        raise TypeError("set_token_provider needs a callable returning the token, or None")
    _State.token_provider = fn


def set_token(token):
    """A fixed token for the next connect attempts (None: back to env CR8_AUTH_TOKEN)."""
    set_token_provider(None if token is None else (lambda: token))


def set_username(username):
    _State.username = username or None


# ---- start / stop / status ------------------------------------------------------------------------


def _env_float(name):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"env {name} must be a number of seconds, got {value!r}") from None


def start(url=None, *, watchdog_seconds=None, username=None, **settings):
    """Start the router: connect to the engine at `url` (default: env WS_URL) and keep connected.

    `watchdog_seconds`: default env BLENDWIRE_WATCHDOG_SECONDS, else 300; 0 disables the watchdog.
    Other settings go to `_core.start_router` (backoff_initial, backoff_max, backoff_jitter,
    watchdog_after_failures, poll_limit, outbox_max_count, ...). In the GUI a timer must run the
    router's jobs: `blender.start()` registers it; without the service, this registers it too.
    Raises ValueError (bad url/settings), ServiceError (already running)."""
    _require_main_thread("start")
    url = url or os.environ.get("WS_URL")
    if not url:
        raise ValueError(
            "no engine URL: pass url= (blendwire serve --engine-url) or set env WS_URL, e.g. http://127.0.0.1:8000"
        )
    if not url.startswith(("http://", "https://", "ws://", "wss://")):
        raise ValueError(f"engine URL must start with http:// or https://, got {url!r}")
    if watchdog_seconds is None:
        watchdog_seconds = _env_float("BLENDWIRE_WATCHDOG_SECONDS")
    if watchdog_seconds is None:
        watchdog_seconds = DEFAULT_WATCHDOG_SECONDS
    watchdog_seconds = float(watchdog_seconds)
    if watchdog_seconds < 0:
        raise ValueError(f"watchdog_seconds must be >= 0 (0 disables it), got {watchdog_seconds}")
    if username is not None:
        set_username(username)
    settings = {k: v for k, v in settings.items() if v is not None}
    refresh()
    _core.set_router_dispatcher(dispatch)
    try:
        _core.start_router(url, watchdog_seconds=watchdog_seconds, **settings)
    except Exception:
        _core.set_router_dispatcher(None)
        raise
    log.info("router started: engine %s, watchdog %s", url, f"{watchdog_seconds:g} s" if watchdog_seconds else "off")
    try:
        from . import blender

        if blender.mode() == "gui":
            blender.ensure_timer()
    except ImportError:
        pass


def stop(timeout=2.0):
    """Stop the router; long-running results still pending are dropped. True if it was running."""
    was = bool(_core.stop_router(timeout))
    _State.pending.clear()
    return was


def is_running():
    return bool(_core.router_running())


def status():
    """The router part of `_core.status()` (state, attempts, watchdog_s, counters)."""
    return _core.status().get("router") or {"state": "stopped"}


# ---- the watchdog's save-and-quit -------------------------------------------------------------------


def recovery_dir():
    return os.environ.get("BLENDWIRE_RECOVERY_DIR") or os.path.join(tempfile.gettempdir(), "blendwire-recovery")


def save_after_watchdog():
    """Save the open .blend (main thread): `save_mainfile` when it has a path, else
    `save_as_mainfile` into `recovery_dir()`. Never raises; returns (ok, path, error)."""
    import bpy

    _require_main_thread("save_after_watchdog")
    path = bpy.data.filepath
    try:
        if path:
            log.warning("watchdog: the engine is gone; saving %s", path)
            bpy.ops.wm.save_mainfile()
        else:
            folder = recovery_dir()
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, time.strftime("recovery-%Y%m%d-%H%M%S") + f"-{os.getpid()}.blend")
            log.warning("watchdog: the engine is gone; the file was never saved, saving it to %s", path)
            bpy.ops.wm.save_as_mainfile(filepath=path)
        if not os.path.isfile(path):
            raise RuntimeError(f"Blender reported success but {path} does not exist")
    except Exception as e:
        error = f"{type(e).__name__}: {e}".strip()
        log.error("watchdog: saving %s FAILED: %s", path or "the file", error)
        _State.last_save = {"ok": False, "path": path, "error": error}
        return False, path, error
    log.warning("watchdog: saved %s", path)
    _State.last_save = {"ok": True, "path": path, "error": None}
    return True, path, None


def save_and_quit_exit_code():
    """For `blender -b` / bpy after the pump returned "watchdog": stop the router, save, and return
    the process exit status (0 saved, EXIT_SAVE_FAILED otherwise). The caller exits with it."""
    try:
        stop()
    except Exception:
        log.warning("stopping the router failed:\n%s", traceback.format_exc())
    ok, path, error = save_after_watchdog()
    code = 0 if ok else EXIT_SAVE_FAILED
    log.warning("watchdog: closing Blender (exit status %d)", code)
    _flush_logging()
    return code


def _flush_logging():
    try:
        _core.flush_logs()
    except Exception:
        pass
    for handler in logging.getLogger().handlers + logging.getLogger("blendwire").handlers:
        try:
            handler.flush()
        except Exception:
            pass
    sys.stdout.flush()
    sys.stderr.flush()


def setup_logging(level=logging.INFO):
    """Send `blendwire.*` records to stderr (the serve child has no logging set up otherwise, and
    the router's arming/disarming/saving lines are INFO/WARNING)."""
    logger = logging.getLogger("blendwire")
    if not any(getattr(h, "_blendwire", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("blendwire: %(name)s %(levelname)s: %(message)s"))
        handler._blendwire = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def load_addon_path(folder):
    """Import every capability add-on package directly inside `folder` (a package with
    addon_ai.json), call its `register()` if it has one, and register it with the router.
    `folder` is appended to sys.path. Returns the addon_ids. Raises ValueError for a missing folder."""
    _require_main_thread("load_addon_path")
    import importlib

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


# Settings `blendwire serve` passes through (its flags), besides url/watchdog_seconds/username.
SERVE_SETTINGS = ("backoff_initial", "backoff_max", "backoff_jitter", "watchdog_after_failures", "poll_limit")


def start_from_serve_settings(settings):
    """Start the router from `blendwire serve`'s settings dict (keys: engine_url, watchdog_seconds,
    username, addon_paths, and SERVE_SETTINGS). Does nothing without engine_url."""
    for folder in settings.get("addon_paths") or ():
        load_addon_path(folder)
    url = settings.get("engine_url")
    if not url:
        return False
    start(
        url,
        watchdog_seconds=settings.get("watchdog_seconds"),
        username=settings.get("username"),
        **{k: settings[k] for k in SERVE_SETTINGS if settings.get(k) is not None},
    )
    return True

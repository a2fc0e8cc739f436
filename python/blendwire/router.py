"""The Blender side of the cr8_engine router: its dispatcher and its start/stop.

The Rust core owns the Socket.IO connection, retries, the outbox and the watchdog clock; it calls
`dispatch(op, params)` on Blender's main thread only (in `_core.tick` / `_core.pump`), so
everything here may use bpy. Ops:

- "auth"     -> {"token", "username", "blend_file_path"}, read fresh before every connect attempt
                (token: `set_token_provider(fn)` / `set_token(str)`, else env CR8_AUTH_TOKEN;
                username: `start(username=...)`, else env CR8_USERNAME, else the login name).
- "registry" -> {"type": "registry_updated", "total_addons", "available_tools"} (rescans add-ons).
- "command"  {addon_id, command, params, message_id} -> the handler's result data.
- "poll"     {handle, cancel} -> the final data of a long-running result, or the pending marker.

Which handler serves a command is the registry's business (`blendwire.handlers.registry`, whose public
functions are re-exported here). A handler returns JSON data (a dict becomes payload.data;
anything else is wrapped as {"result": value} by the core, which also refuses non-JSON results
with UNSERIALIZABLE_RESULT). A handler may instead return a long-running object with
`check_is_finished()`: the core polls it every 100 ms on the main thread (never blocking it). Once
it reports True, its final data is `obj.get_result()` if it has that method, else `obj.result` if it
has that attribute, else {}; if `get_result()` raises, or the object has a truthy `error` attribute,
the command fails with EXECUTION_FAILED. A poll with cancel=True (poll limit reached) drops it, and
calls its `cancel()` if it has one.

Errors are `CommandError(message, CODE)`: NO_HANDLERS (unknown addon_id), COMMAND_NOT_FOUND,
INVALID_PARAMS (params that do not fit the handler's signature), EXECUTION_FAILED (the handler
raised; the traceback is in the message).

The watchdog's save-and-quit is the main-thread loop's (`blendwire.runtime`).
"""

from __future__ import annotations

import getpass
import inspect
import itertools
import logging
import traceback
from collections.abc import Callable
from typing import Any

from . import _core
from .config import env_cr8_auth_token, env_cr8_username, env_engine_url
from .errors import CommandError, require_main_thread
from .handlers import keeper
from .handlers.registry import (
    MANIFEST,
    ROUTER_ADDON_ID,
    find_handler,
    load_addon_path,
    refresh,
    register_addon_module,
    register_handler,
    registry_payload,
    unregister_handler,
)
from .logs import setup as setup_logging

__all__ = [
    "MANIFEST",
    "PENDING",
    "ROUTER_ADDON_ID",
    "dispatch",
    "is_running",
    "load_addon_path",
    "refresh",
    "register_addon_module",
    "register_handler",
    "registry_payload",
    "set_token",
    "set_token_provider",
    "set_username",
    "setup_logging",
    "start",
    "status",
    "stop",
    "unregister_handler",
]

log = logging.getLogger("blendwire.router")

PENDING = "__blendwire_pending__"


class _Router:
    token_provider: Callable[[], str | None] | None = None  # None: env CR8_AUTH_TOKEN
    username: str | None = None  # None: env CR8_USERNAME, else the login name
    pending: dict[int, tuple[str, str, Any]] = {}  # handle -> (addon_id, command, long-running result)
    handles = itertools.count(1)


# ---- running commands -----------------------------------------------------------------------


def _failed(addon_id: str, command: str, e: BaseException, where: str = "") -> CommandError:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return CommandError(f"{addon_id}.{command} failed{where}: {type(e).__name__}: {e}\n{tb}", "EXECUTION_FAILED")


def _check_params(addon_id: str, command: str, fn: Callable, params: dict) -> None:
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


def _run_command(addon_id: Any, command: Any, params: Any) -> Any:
    if not isinstance(addon_id, str) or not isinstance(command, str):
        raise CommandError("command_received needs string addon_id and command", "INVALID_PARAMS")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CommandError(f"params must be a JSON object, got {type(params).__name__}", "INVALID_PARAMS")
    fn = find_handler(addon_id, command)
    _check_params(addon_id, command, fn, params)
    try:
        result = fn(**params)
    except CommandError:
        raise
    except Exception as e:
        raise _failed(addon_id, command, e) from None
    if callable(getattr(result, "check_is_finished", None)):
        handle = next(_Router.handles)
        _Router.pending[handle] = (addon_id, command, result)
        return _poll(handle, False)  # already finished: answer now
    return result


def _poll(handle: Any, cancel: bool) -> Any:
    entry = _Router.pending.get(handle)
    if entry is None:
        raise CommandError(
            f"No long-running command with handle {handle!r} (already finished or cancelled)", "EXECUTION_FAILED"
        )
    addon_id, command, obj = entry
    if cancel:
        _Router.pending.pop(handle, None)
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
        _Router.pending.pop(handle, None)
        raise _failed(addon_id, command, e, " in check_is_finished") from None
    if not finished:
        return {PENDING: handle}
    _Router.pending.pop(handle, None)
    error = getattr(obj, "error", None)
    if error:
        raise CommandError(f"{addon_id}.{command} failed: {error}", "EXECUTION_FAILED")
    try:
        result = obj.get_result() if callable(getattr(obj, "get_result", None)) else getattr(obj, "result", {})
    except Exception as e:
        raise _failed(addon_id, command, e) from None
    return {} if result is None else result


def _auth() -> dict:
    token = None
    if _Router.token_provider is not None:
        try:
            token = _Router.token_provider()
        except Exception:
            log.warning("the token provider raised; connecting without a token:\n%s", traceback.format_exc())
    if token is None:
        token = env_cr8_auth_token()
    username = _Router.username or env_cr8_username()
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


def dispatch(op: str, params: dict) -> Any:
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


# ---- token / user ---------------------------------------------------------------------------


def set_token_provider(fn: Callable[[], str | None] | None) -> None:
    """`fn()` -> the auth token, asked before every connect attempt (None: env CR8_AUTH_TOKEN)."""
    if fn is not None and not callable(fn):
        raise TypeError("set_token_provider needs a callable returning the token, or None")
    _Router.token_provider = fn


def set_token(token: str | None) -> None:
    """A fixed token for the next connect attempts (None: back to env CR8_AUTH_TOKEN)."""
    set_token_provider(None if token is None else (lambda: token))


def set_username(username: str | None) -> None:
    _Router.username = username or None


# ---- start / stop / status ------------------------------------------------------------------


def start(url: str | None = None, *, watchdog_seconds: float | None = None, username: str | None = None, **settings):
    """Start the router: connect to the engine at `url` (default: env WS_URL) and keep connected.

    `watchdog_seconds`: default env BLENDWIRE_WATCHDOG_SECONDS, else the core's default (300);
    0 disables the watchdog. An https:// URL connects over TLS: the engine's certificate must name
    its host and chain to the system's trust store or to `ca_file=` (a PEM file; default env
    BLENDWIRE_CA_FILE); a refused certificate is a failed attempt, retried. Other settings go to
    `_core.start_router` (backoff_initial, backoff_max, backoff_jitter, watchdog_after_failures,
    poll_limit, outbox_max_count, ...; None means the core's default). In the GUI a timer must run
    the router's jobs: this makes sure it runs. Raises ValueError (bad url/settings, checked by the
    core), ServiceError (already running)."""
    require_main_thread("blendwire.router.start")
    url = url or env_engine_url()
    if not url:
        raise ValueError(
            "no engine URL: pass url= (blendwire serve --engine-url) or set env WS_URL, e.g. http://127.0.0.1:8000"
        )
    if username is not None:
        set_username(username)
    refresh()
    _core.set_router_dispatcher(dispatch)
    _core.set_keeper(keeper.keep)
    try:
        _core.start_router(url, watchdog_seconds=watchdog_seconds, **settings)
    except Exception:
        _core.set_router_dispatcher(None)
        raise
    log.info("router started: engine %s", url)
    # The GUI's timer runs the router's jobs; imported here so that importing this module (to
    # register handlers) does not load bpy.
    from . import runtime

    runtime.ensure_timer()


def stop(timeout: float | None = None) -> bool:
    """Stop the router (within `timeout` s; None: the core's `stop_timeout`); long-running results
    still pending are dropped. True if it was running."""
    was = bool(_core.stop_router(timeout))
    _Router.pending.clear()
    return was


def is_running() -> bool:
    return bool(_core.router_running())


def status() -> dict:
    """The router part of `_core.status()` (state, attempts, watchdog_s, counters)."""
    return _core.status().get("router") or {"state": "stopped"}

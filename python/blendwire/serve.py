"""`blendwire serve` inside Blender: one function, `serve()`, for both ways it runs.

- In a Blender child (`blender -b` or the GUI) started by the `blendwire serve` process
  (`blendwire.blender_child`): `child_main()` is its `--python-expr` bootstrap; settings come as JSON in
  env `BLENDWIRE_SERVE`, and marker lines on stdout tell the parent (`BLENDWIRE-READY {json}` once
  commands can be served, `BLENDWIRE-ERROR {json}` on failure).
- In this process on the bpy module (`blendwire serve --bpy`): the CLI calls `serve()` directly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import bpy

from . import _core, blender, config, logs, router, runtime
from .config import SERVE_ERROR, SERVE_READY
from .handlers import registry
from .process import pid_alive

__all__ = ["ROUTER_SETTINGS", "ServeError", "child_main", "serve"]

# The router settings `blendwire serve` passes through (its flags), besides engine_url,
# watchdog_seconds and username.
ROUTER_SETTINGS = (
    "backoff_initial",
    "backoff_max",
    "backoff_jitter",
    "watchdog_after_failures",
    "poll_limit",
    "ca_file",
)

# A fresh GUI runs its first timers about once a second (shader compilation, first draws); READY
# waits until it turns at its normal pace, at most this long.
SETTLE_TIMEOUT = 30.0


class ServeError(Exception):
    """The service or the router could not start with serve's settings; the message says why."""


def serve(settings: dict, announce: Callable[[dict], None], *, blend_file: str | None = None) -> int | None:
    """Start the service, and the router when `settings` has an engine URL; `announce(info)` once
    commands are served (info: host, port, mode, pid, blender version), right after this Blender's
    instance file is written (`blendwire list`; removed when the service stops).

    -b / bpy: serve until a stop is requested and return the process exit status (non-zero when
    the watchdog's save failed). GUI: return None at once; the timers serve, and Blender quits
    after `server_shutdown`. Raises ServeError when something cannot start.
    """
    if blend_file:
        bpy.ops.wm.open_mainfile(filepath=blend_file)
    logs.setup()
    if settings.get("blender_mcp_addon"):
        # Before the service starts: the first blender-mcp request already finds the add-on.
        from .handlers import blender_mcp

        try:
            blender_mcp.load_addon(settings["blender_mcp_addon"])
        except blender_mcp.BlenderMCPAddonError as e:
            raise ServeError(f"could not host the blender-mcp add-on (--blender-mcp-addon): {e}") from None
    try:
        host, port = blender.start(
            settings.get("host"),
            settings.get("port"),
            quit_on_shutdown=True,
            **settings.get("service", {}),
            **settings.get("checkpoints", {}),
        )
    except Exception as e:
        raise ServeError(f"could not start the service: {e}") from None
    if settings.get("parent_pid"):
        _stop_when_parent_exits(int(settings["parent_pid"]))
    try:
        _start_router(settings)
    except Exception as e:
        blender.stop()
        raise ServeError(f"could not start the router: {e}") from None
    mode = runtime.mode()
    info = {
        "host": host,
        "port": port,
        "mode": mode,
        "pid": os.getpid(),
        "blender": ".".join(str(v) for v in bpy.app.version),
    }
    addon = blender.mcp_addon_address()
    if addon is not None:
        info["mcp_addon_host"], info["mcp_addon_port"] = addon
    if settings.get("mcp_http") is not None:
        try:
            mcp = _start_mcp_http(settings["mcp_http"], host, port)
        except (RuntimeError, ValueError) as e:
            blender.stop()
            raise ServeError(f"could not start the MCP HTTP server (--mcp-http): {e}") from None
        info["mcp_http_host"], info["mcp_http_port"] = mcp.http_address

    def ready(info: dict) -> None:
        _announce_instance(mode, info["blender"])  # before the READY line: a waiting client finds it listed
        announce(info)

    if mode == "gui":
        bpy.app.timers.register(_announce_when_responsive(ready, info), first_interval=0.0)
        return None
    ready(info)
    reason = blender.run_until_shutdown()
    if _mcp_http is not None:
        _mcp_http.stop()
    print(f"blendwire: service stopped ({reason})", file=sys.stderr, flush=True)
    return runtime.exit_status(reason)


# The MCP HTTP server of --mcp-http: threads of the core in this process, kept here so that it
# lives as long as the service (in the GUI, until Blender quits).
_mcp_http = None


def _start_mcp_http(spec: str, host: str, port: int):
    """`blendwire mcp --http SPEC` in this process, for the service just started on host:port."""
    global _mcp_http
    # An unspecified bind (0.0.0.0, ::) is reached on loopback: the core's rule.
    _mcp_http = _core.McpServer(host, port, token=config.env_token(), stdio=False, http=spec)
    return _mcp_http


def _start_router(settings: dict) -> None:
    for folder in settings.get("addon_paths") or ():
        registry.load_addon_path(folder)
    url = settings.get("engine_url")
    if url:
        router.start(
            url,
            watchdog_seconds=settings.get("watchdog_seconds"),
            username=settings.get("username"),
            **{k: settings[k] for k in ROUTER_SETTINGS if settings.get(k) is not None},
        )


def _announce_instance(mode: str, blender_version: str) -> None:
    """Write this Blender's instance file (`blendwire list`; the core removes it when the service
    stops). The .blend path in it is kept current by save and load handlers, not read live."""
    try:
        _core.announce_instance(mode, blender_version, bpy.data.filepath or None)
    except (OSError, RuntimeError) as e:  # RuntimeError: stopped before it was ready (GUI)
        print(f"blendwire: warning: {e}; `blendwire list` will not show this Blender", file=sys.stderr, flush=True)
        return
    for handlers in (bpy.app.handlers.save_post, bpy.app.handlers.load_post):
        if _track_blend_file not in handlers:
            handlers.append(_track_blend_file)


@bpy.app.handlers.persistent
def _track_blend_file(*_args) -> None:
    # save_post / load_post (also File > New, which leaves no path); a no-op once withdrawn.
    try:
        _core.update_instance(bpy.data.filepath or None)
    except OSError as e:
        print(f"blendwire: warning: {e}", file=sys.stderr, flush=True)


def _stop_when_parent_exits(parent_pid: int) -> None:
    """`blendwire serve` may be SIGKILLed (a CI timeout, a supervisor): then nobody would ever stop
    this Blender, which runs in its own session. The core waits on a pidfd on the service's I/O
    thread (no polling, no thread of its own) and stops the service loop when the parent is gone;
    in the GUI the timer then quits Blender."""
    try:
        _core.stop_when_process_exits(parent_pid)
    except OSError:  # no pidfd (old kernel) or the parent is already gone
        if not pid_alive(parent_pid):
            runtime.request_stop("parent exited")


def _announce_when_responsive(announce: Callable[[dict], None], info: dict) -> Callable[[], float | None]:
    """A one-shot timer callback that announces once two turns come less than 0.1 s apart (or after
    SETTLE_TIMEOUT): a client connecting earlier would see 1 s per call."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last: list[float | None] = [None]

    def tick():
        now = time.monotonic()
        previous, last[0] = last[0], now
        if (previous is not None and now - previous < 0.1) or now > deadline:
            announce(info)
            return None
        return 0.01

    return tick


def _emit(marker: str, payload: dict) -> None:
    print(f"{marker} {json.dumps(payload)}", flush=True)  # stdout is a pipe: flush or it sits in a buffer


def child_main() -> None:
    """The bootstrap of the Blender child of `blendwire serve`."""
    settings = config.serve_settings()
    try:
        status = serve(settings, lambda info: _emit(SERVE_READY, info))
    except ServeError as e:
        _emit(SERVE_ERROR, {"error": str(e)})
        sys.exit(1)
    if status is not None:
        # -b would otherwise go on with the command line; the bpy module has no other exit.
        sys.exit(status)

"""Running the blendwire service inside Blender.

- GUI: one persistent `bpy.app.timers` callback drains the main-thread queue (`_core.tick`) with a
  time budget, so the UI stays responsive under a flood.
- `blender -b` and the bpy module, where timers never fire: `run_until_shutdown()` blocks the main
  thread in `_core.pump()` (GIL released while idle) until `server_shutdown`, SIGINT or SIGTERM.

Everything here must be called on Blender's main thread; the Rust core never calls bpy itself.
"""

import atexit
import logging
import os
import signal
import sys
import threading
import time
import traceback

import bpy

from . import _core, commands
from .config import DEFAULT_HOST, DEFAULT_PORT, env_port, env_start_now  # noqa: F401 (re-exported)
from .errors import ServiceError

_IDLE_INTERVAL = 0.01  # seconds between timer turns when nothing is queued
# After a job, run on every main-loop turn (~5 ms apart when idle) for this long: the next
# request of an active client then waits half a turn on average, not half of _IDLE_INTERVAL.
_HOT_SECONDS = 2.0
# Blender's main loop sleeps 5 ms whenever a turn had no event, so a client that sends its next
# request right after an answer would wait a whole turn. For this long after each job, a
# zero-interval window timer gives every turn an event, so the loop does not sleep and the next
# request is picked up at once; it stops spinning as soon as clients pause.
_SPIN_SECONDS = 0.003


class _State:
    last_activity = -1
    hot_until = 0.0
    spin_until = 0.0
    spin_timer = None  # (window manager, wmTimer) while spinning
    timer_on = False
    budget_ms = 8.0
    quit_on_shutdown = False
    pending_stop = None  # stop asked for by a handler (e.g. sys.exit in execute_code), GUI path
    stopping = False  # a stop was requested on the previous timer turn
    quit_next_tick = False
    atexit_hooked = False
    watchdog_fired = False  # the router's watchdog fired: save on the next turn, then quit
    exit_code = 0  # GUI exit status after a watchdog save (non-zero when the save failed)


def mode():
    """ "gui", "background" (`blender -b`) or "bpy" (Blender as a Python module).

    The bpy module always runs in background, and (documented) leaves `bpy.app.binary_path` empty.
    """
    if not bpy.app.background:
        return "gui"
    return "background" if bpy.app.binary_path else "bpy"


def _require_main_thread(what):
    if threading.current_thread() is not threading.main_thread():
        raise ServiceError(f"blendwire.blender.{what}() must be called on Blender's main thread")


def is_running():
    return _core.service_address() is not None


def address():
    """(host, port) while the service runs, else None."""
    return _core.service_address()


def start(
    host=DEFAULT_HOST,
    port=None,
    *,
    queue_capacity=None,
    tick_budget_ms=8.0,
    default_timeout=30.0,
    max_request_bytes=None,
    quit_on_shutdown=False,
    token=None,
    log_level=None,
    read_timeout=None,
    max_connections=None,
):
    """Start the command service; return the bound (host, port).

    `port=None` takes `BLD_REMOTE_MCP_PORT` (default 6688); 0 picks a free port. In the GUI a
    timer runs the queued commands; in background/bpy call `run_until_shutdown()` next.
    `quit_on_shutdown`: in the GUI, quit Blender after a `server_shutdown` command (as
    `blendwire serve --gui` wants); otherwise only the service stops, like the peer add-on does.
    `token` (default: env `BLENDWIRE_TOKEN`): every request must then carry `"token"`; a host
    other than loopback is refused without one (execute_code runs arbitrary code).
    `log_level` (a `logging` level name or number; default: env `BLD_REMOTE_LOG_LEVEL`, else the
    core's INFO): the core's records and the `blendwire` logger; DEBUG shows connections open/close.
    Raises PortInUse when the port is taken, ServiceError when already running or insecure.
    """
    _require_main_thread("start")
    if is_running():
        host_, port_ = _core.service_address()
        raise ServiceError(f"the blendwire service is already running on {host_}:{port_}; call stop() first")
    if port is None:
        port = env_port()
    _apply_log_level(log_level)
    if queue_capacity is not None:
        _core.set_queue_capacity(int(queue_capacity))
    _core.set_dispatcher(commands.dispatch)
    if token is None:
        token = os.environ.get("BLENDWIRE_TOKEN") or None
    kwargs = {"default_timeout": float(default_timeout), "token": token}
    if max_request_bytes is not None:
        kwargs["max_request_bytes"] = int(max_request_bytes)
    if read_timeout is not None:
        kwargs["read_timeout"] = float(read_timeout)
    if max_connections is not None:
        kwargs["max_connections"] = int(max_connections)
    bound = tuple(_core.start_service(host, int(port), commands.COMMANDS, **kwargs))

    _State.budget_ms = float(tick_budget_ms)
    _State.quit_on_shutdown = bool(quit_on_shutdown)
    _State.pending_stop = None
    _State.stopping = _State.quit_next_tick = _State.watchdog_fired = False
    _State.exit_code = 0
    _core.take_stop_request()  # drop a stale request from an earlier run
    if mode() == "gui":
        _register_timer()
    if not _State.atexit_hooked:
        atexit.register(_at_exit)
        _State.atexit_hooked = True
    return bound


def _apply_log_level(level=None):
    # An explicit level (add-on preference), else BLD_REMOTE_LOG_LEVEL as the peer honours it.
    # Both the core (which drops records below it before they reach Python) and the `blendwire`
    # logger (NOTSET would defer to the root logger's WARNING and hide DEBUG lines) get it.
    source = "log level"
    if level is None:
        level, source = os.environ.get("BLD_REMOTE_LOG_LEVEL"), "BLD_REMOTE_LOG_LEVEL"
    if not level:
        return
    if isinstance(level, str):
        level = level.strip().upper()
        level = "WARNING" if level == "WARN" else level
    try:
        _core.set_log_level(level)
    except ValueError as e:
        print(f"blendwire: ignoring {source}: {e}", file=sys.stderr)
        return
    logging.getLogger("blendwire").setLevel("DEBUG" if level == "TRACE" else level)


def stop(*, shutdown_core=False, timeout=2.0):
    """Stop the service (the port is free when this returns) and the GUI timer. Idempotent.

    `shutdown_core=True` also ends the core's background threads (add-on unregister).
    Returns True if the service was running."""
    _require_main_thread("stop")
    if shutdown_core:
        _core.stop_router(timeout)
    if not _core.router_running():  # the router, when on, still needs the GUI timer
        _unregister_timer()
    was_running = bool(_core.stop_service(timeout))
    _core.set_dispatcher(None)
    if shutdown_core:
        _core.shutdown(timeout)
    return was_running


def request_stop(reason="shutdown"):
    """Ask the running service loop to end after the current command (thread-safe): the pump
    returns `reason`; in the GUI the timer stops the service (and quits if asked to)."""
    _State.pending_stop = reason
    _core.stop_pump(reason)


# ---- GUI: the timer ------------------------------------------------------------------------------


def ensure_timer():
    """GUI: make sure the timer runs (the router needs it even without the command service)."""
    _require_main_thread("ensure_timer")
    if mode() == "gui":
        _register_timer()


def _register_timer():
    if not bpy.app.timers.is_registered(_timer_tick):
        bpy.app.timers.register(_timer_tick, first_interval=0.0, persistent=True)
    _State.timer_on = True


def _unregister_timer():
    if _State.timer_on and bpy.app.timers.is_registered(_timer_tick):
        bpy.app.timers.unregister(_timer_tick)
    _State.timer_on = False
    _spin(False)


def _spin(on):
    """Keep (on) or stop a zero-interval window timer: its events keep the main loop from
    sleeping between turns (see _SPIN_SECONDS)."""
    if on and _State.spin_timer is None:
        wm = bpy.context.window_manager
        if wm is not None and wm.windows:
            _State.spin_timer = (wm, wm.event_timer_add(0.0, window=wm.windows[0]))
    elif not on and _State.spin_timer is not None:
        wm, timer = _State.spin_timer
        _State.spin_timer = None
        try:
            wm.event_timer_remove(timer)
        except (ReferenceError, ValueError, RuntimeError):  # the window manager is gone (file load)
            pass


def _timer_tick():
    # A timer that raises is removed by Blender: never let anything escape.
    try:
        if _State.quit_next_tick:
            # One tick after stopping, never in the same callback (a same-tick quit after file
            # operations has crashed Blender 3.4).
            _State.timer_on = False
            if _State.exit_code:
                # quit_blender always exits 0; a failed watchdog save must show in the status.
                from . import router

                router._flush_logging()
                os._exit(_State.exit_code)
            bpy.ops.wm.quit_blender()
            return None
        if _State.watchdog_fired:
            # The turn after the watchdog fired (not inside the tick that ran router jobs): save,
            # then quit on the next turn.
            _State.watchdog_fired = False
            from . import router

            _State.exit_code = router.save_and_quit_exit_code()
            _core.stop_service(2.0)
            _State.quit_next_tick = True
            return _IDLE_INTERVAL
        if _State.stopping:
            _State.stopping = False
            _core.stop_service(2.0)
            if _State.quit_on_shutdown:
                _State.quit_next_tick = True
                return _IDLE_INTERVAL
            _core.set_dispatcher(None)
            if _core.router_running():
                return _IDLE_INTERVAL  # the router still needs its jobs run
            _State.timer_on = False
            return None
        waiting = _core.tick(_State.budget_ms)
        request = _core.take_stop_request()
        if request == "watchdog":
            _State.watchdog_fired = True
            return _IDLE_INTERVAL
        if request or _State.pending_stop:
            # Stop on the next turn: the answer to the command that asked for it (e.g. sys.exit in
            # execute_code) is still being written, and stop_service would cut it off.
            _State.pending_stop = None
            _State.stopping = True
            return _IDLE_INTERVAL
        now = time.monotonic()
        activity = _core.activity()
        if activity != _State.last_activity:
            _State.last_activity = activity
            _State.hot_until = now + _HOT_SECONDS
            _State.spin_until = now + _SPIN_SECONDS
        _spin(waiting or now < _State.spin_until)
        return 0.0 if waiting or now < _State.hot_until else _IDLE_INTERVAL
    except Exception:
        traceback.print_exc()
        return 0.1


# ---- background / bpy: the pump ----------------------------------------------------------------


def run_until_shutdown():
    """Serve commands on this (main) thread until `server_shutdown`, SIGINT or SIGTERM, then stop
    the service. Returns the reason: "shutdown", "SIGINT", "SIGTERM" or a `request_stop` reason.

    For `blender -b` and the bpy module, where `bpy.app.timers` never fire. A signal that arrives
    while a command runs (or a second signal) raises KeyboardInterrupt in it, so a stuck command
    cannot keep the process alive.
    """
    _require_main_thread("run_until_shutdown")
    # A service that already got `server_shutdown` counts as started: the pump returns at once.
    if "port" not in _core.status()["service"]:
        raise ServiceError("the blendwire service is not running: call blendwire.blender.start() first")
    signalled = []

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        first = not signalled
        signalled.append(name)
        _core.stop_pump(name)
        if commands.running or not first:
            raise KeyboardInterrupt(name)  # break the running command; the pump then returns

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except (ValueError, OSError, AttributeError):  # platform without it
            pass
    try:
        reason = _core.pump()  # returns at once if a stop was requested before it started
    except KeyboardInterrupt:  # raised by on_signal inside a command, re-raised by the core
        reason = signalled[0] if signalled else "SIGINT"
    finally:
        for sig, handler in previous.items():
            # None: the old handler was not set from Python (Blender's own); default is closest.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        _State.pending_stop = None
        try:
            stop()
        except Exception:
            traceback.print_exc()
    return reason


def _at_exit():
    # Threads still running at interpreter shutdown can crash or hang Blender; bounded wait.
    try:
        _core.shutdown(2.0)
    except Exception:
        pass

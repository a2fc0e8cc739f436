"""Blender's main-thread loop for blendwire: who runs the queued jobs, and how Blender stops.

- GUI: one persistent `bpy.app.timers` callback drains the main-thread queue (`_core.tick`) with a
  time budget, so the UI stays responsive under a flood.
- `blender -b` and the bpy module, where timers never fire: `run_until_shutdown()` blocks the main
  thread in `_core.pump()` (GIL released while idle) until a stop is requested (`server_shutdown`,
  SIGINT, SIGTERM, the parent of `blendwire serve` gone, the router's watchdog).

One explicit state, `Phase`, with one function per transition:
IDLE -> SERVING (`begin_serving`) -> STOPPING (`_to_stopping`) -> IDLE, or -> QUITTING (serve's
Blender); SAVING (`_to_saving`, the router's watchdog fired) -> QUITTING (`_to_quitting`). In the GUI
each phase runs on its own timer turn, never two in one callback (a same-turn quit after file
operations has crashed Blender 3.4).

Everything here runs on Blender's main thread; the Rust core never calls bpy itself.
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import signal
import time
import traceback
from typing import Any

import bpy

from . import _core, logs
from .config import recovery_dir
from .errors import Interrupted, require_main_thread
from .handlers import inflight

__all__ = [
    "EXIT_SAVE_FAILED",
    "Phase",
    "begin_serving",
    "end_serving",
    "ensure_timer",
    "exit_status",
    "install_interrupts",
    "mode",
    "phase",
    "recovery_dir",
    "request_stop",
    "run_until_shutdown",
    "save_after_watchdog",
]

log = logging.getLogger("blendwire.runtime")

# Exit status of a Blender whose watchdog fired but whose save failed.
EXIT_SAVE_FAILED = 3

_IDLE_INTERVAL = 0.01  # seconds between timer turns when nothing is queued
# After a job, run on every main-loop turn (~5 ms apart when idle) for this long: the next
# request of an active client then waits half a turn on average, not half of _IDLE_INTERVAL.
_HOT_SECONDS = 2.0
# Blender's main loop sleeps 5 ms whenever a turn had no event, so a client that sends its next
# request right after an answer would wait a whole turn. For this long after each job, a
# zero-interval window timer gives every turn an event, so the loop does not sleep and the next
# request is picked up at once; it stops spinning as soon as clients pause.
_SPIN_SECONDS = 0.003


class Phase(enum.Enum):
    IDLE = "idle"  # no service (the GUI timer may still run the router's jobs)
    SERVING = "serving"
    STOPPING = "stopping"  # a stop was requested: the service stops on the next turn
    SAVING = "saving"  # the router's watchdog fired: save the .blend on the next turn
    QUITTING = "quitting"  # quit Blender on the next turn (GUI)


class _Loop:
    phase = Phase.IDLE
    budget_ms: float | None = None  # main-thread ms per GUI turn; None: the core's default
    quit_on_shutdown = False  # serve's Blender quits after a stop; a user's GUI keeps running
    exit_code = 0  # non-zero when the watchdog's save failed


class _Pacing:
    """How soon the GUI timer comes back: every turn while clients are active, else slower."""

    last_activity = -1
    hot_until = 0.0
    spin_until = 0.0
    spin_timer: tuple[Any, Any] | None = None  # (window manager, wmTimer) while spinning


def mode() -> str:
    """ "gui", "background" (`blender -b`) or "bpy" (Blender as a Python module).

    The bpy module always runs in background, and (documented) leaves `bpy.app.binary_path` empty.
    """
    if not bpy.app.background:
        return "gui"
    return "background" if bpy.app.binary_path else "bpy"


def phase() -> Phase:
    return _Loop.phase


# ---- transitions ----------------------------------------------------------------------------


def begin_serving(*, budget_ms: float | None, quit_on_shutdown: bool) -> None:
    """The service has started: serve its jobs (GUI: on the timer, `budget_ms` of jobs per turn,
    None: the core's default; else `run_until_shutdown`)."""
    _Loop.phase = Phase.SERVING
    _Loop.budget_ms = None if budget_ms is None else float(budget_ms)
    _Loop.quit_on_shutdown = bool(quit_on_shutdown)
    _Loop.exit_code = 0
    _core.take_stop_request()  # drop a stale request from an earlier run
    install_interrupts()
    if mode() == "gui":
        _register_timer()
    _hook_exit()


def end_serving() -> None:
    """The service was stopped from Python (`blendwire.blender.stop`): back to IDLE; the GUI timer
    goes unless the router still needs it."""
    _Loop.phase = Phase.IDLE
    if not _core.router_running():
        _unregister_timer()


def request_stop(reason: str = "shutdown") -> None:
    """Ask the loop to stop serving after the current job (any thread): the pump returns `reason`;
    in the GUI the next timer turn stops the service (and quits if serve asked for that)."""
    _core.stop_pump(reason)


def _to_stopping() -> None:
    _Loop.phase = Phase.STOPPING


def _to_saving() -> None:
    _Loop.phase = Phase.SAVING


def _to_quitting(exit_code: int) -> None:
    _Loop.phase = Phase.QUITTING
    _Loop.exit_code = exit_code


# ---- interrupting a runaway job --------------------------------------------------------------

# Frames of this package are never interrupted (their cleanup, e.g. restoring sys.stdout after
# execute_code, must run whole); the next signal, ~75 ms later, lands in the job's own code.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _on_interrupt_signal(signum, frame):
    # The core's interrupter sends the signal while a job runs past its deadline (or a stop came);
    # a late one, after the job ended, finds no message.
    if frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        return
    message = _core.interrupt_message()
    if message:
        raise Interrupted(message)


def install_interrupts() -> None:
    """Main thread: install the handler of the core's interrupt signal and let the core send it.
    Python runs the handler between bytecodes of the running job, and `time.sleep` (interrupted
    with EINTR) runs it at once, so it ends busy loops and sleeps alike. Idempotent."""
    require_main_thread("blendwire.runtime.install_interrupts")
    try:
        signal.signal(_core.INTERRUPT_SIGNAL, _on_interrupt_signal)
    except (ValueError, OSError) as e:  # not the main interpreter's main thread
        log.warning("cannot install the interrupt handler (%s): runaway jobs will not be interrupted", e)
        return
    _core.enable_interrupts(True)


# ---- the watchdog's save ---------------------------------------------------------------------


def save_after_watchdog() -> tuple[bool, str, str | None]:
    """Save the open .blend (main thread): `save_mainfile` when it has a path, else
    `save_as_mainfile` into `recovery_dir()`. Never raises; returns (ok, path, error)."""
    require_main_thread("blendwire.runtime.save_after_watchdog")
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
        return False, path, error
    log.warning("watchdog: saved %s", path)
    return True, path, None


def _save_for_watchdog() -> int:
    """SAVING: stop the router, save; the exit status Blender then ends with."""
    try:
        _core.stop_router()
    except Exception:
        log.warning("stopping the router failed:\n%s", traceback.format_exc())
    ok, _, _ = save_after_watchdog()
    code = 0 if ok else EXIT_SAVE_FAILED
    log.warning("watchdog: closing Blender (exit status %d)", code)
    logs.flush()
    return code


def exit_status(reason: str) -> int:
    """-b / bpy, after `run_until_shutdown` returned `reason`: the process exit status. After the
    router's watchdog fired, the .blend is saved first (non-zero when that save failed)."""
    if reason != "watchdog":
        return 0
    _to_saving()
    _to_quitting(_save_for_watchdog())
    return _Loop.exit_code


# ---- GUI: the timer -------------------------------------------------------------------------


def ensure_timer() -> None:
    """GUI: make sure the timer runs (the router needs it even without the command service)."""
    require_main_thread("blendwire.blender.ensure_timer")
    install_interrupts()
    if mode() == "gui":
        _register_timer()


def _register_timer() -> None:
    if not bpy.app.timers.is_registered(_timer_tick):
        bpy.app.timers.register(_timer_tick, first_interval=0.0, persistent=True)


def _unregister_timer() -> None:
    if bpy.app.timers.is_registered(_timer_tick):
        bpy.app.timers.unregister(_timer_tick)
    _spin(False)


def _spin(on: bool) -> None:
    """Keep (on) or stop a zero-interval window timer: its events keep the main loop from
    sleeping between turns (see _SPIN_SECONDS)."""
    if on and _Pacing.spin_timer is None:
        wm = bpy.context.window_manager
        if wm is not None and wm.windows:
            _Pacing.spin_timer = (wm, wm.event_timer_add(0.0, window=wm.windows[0]))
    elif not on and _Pacing.spin_timer is not None:
        wm, timer = _Pacing.spin_timer
        _Pacing.spin_timer = None
        try:
            wm.event_timer_remove(timer)
        except (ReferenceError, ValueError, RuntimeError):  # the window manager is gone (file load)
            pass


def _turn_serving() -> float | None:
    """SERVING (and IDLE with the router on): run jobs within the budget; notice stop requests."""
    waiting = _core.tick(_Loop.budget_ms)
    request = _core.take_stop_request()
    if request == "watchdog":
        _to_saving()
        return _IDLE_INTERVAL
    if request:
        # Stop on the next turn: the answer to the command that asked for it (e.g. sys.exit in
        # execute_code) is still being written, and stop_service would cut it off.
        _to_stopping()
        return _IDLE_INTERVAL
    now = time.monotonic()
    activity = _core.activity()
    if activity != _Pacing.last_activity:
        _Pacing.last_activity = activity
        _Pacing.hot_until = now + _HOT_SECONDS
        _Pacing.spin_until = now + _SPIN_SECONDS
    _spin(bool(waiting) or now < _Pacing.spin_until)
    return 0.0 if waiting or now < _Pacing.hot_until else _IDLE_INTERVAL


def _turn_stopping() -> float | None:
    _core.stop_service()
    if _Loop.quit_on_shutdown:
        _to_quitting(0)
        return _IDLE_INTERVAL
    _core.set_dispatcher(None)
    _Loop.phase = Phase.IDLE
    if _core.router_running():
        return _IDLE_INTERVAL  # the router still needs its jobs run
    _spin(False)
    return None


def _turn_saving() -> float | None:
    # Not inside the turn that ran the router's jobs: save, then quit on the next turn.
    code = _save_for_watchdog()
    _core.stop_service()
    _to_quitting(code)
    return _IDLE_INTERVAL


def _turn_quitting() -> float | None:
    _spin(False)
    if _Loop.exit_code:
        # quit_blender always exits 0; a failed watchdog save must show in the status.
        logs.flush()
        os._exit(_Loop.exit_code)
    bpy.ops.wm.quit_blender()
    return None


_TURNS = {
    Phase.IDLE: _turn_serving,
    Phase.SERVING: _turn_serving,
    Phase.STOPPING: _turn_stopping,
    Phase.SAVING: _turn_saving,
    Phase.QUITTING: _turn_quitting,
}


def _timer_tick() -> float | None:
    # A timer that raises is removed by Blender: never let anything escape (an Interrupted
    # becomes the job's answer inside tick; catching it here is only a last line of defence).
    try:
        return _TURNS[_Loop.phase]()
    except (Exception, Interrupted):
        traceback.print_exc()
        return 0.1


# ---- background / bpy: the pump -------------------------------------------------------------


def run_until_shutdown() -> str:
    """Serve jobs on this (main) thread until a stop is requested, then stop the service.
    Returns the reason: "shutdown", "SIGINT", "SIGTERM", "parent exited", "watchdog" or a
    `request_stop` reason.

    For `blender -b` and the bpy module, where `bpy.app.timers` never fire. A signal that arrives
    while a command runs (or a second signal) raises KeyboardInterrupt in it, so a stuck command
    cannot keep the process alive.
    """
    require_main_thread("blendwire.blender.run_until_shutdown")
    signalled: list[str] = []

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        first = not signalled
        signalled.append(name)
        _core.stop_pump(name)
        _core.interrupt_running(name)  # again every ~75 ms while it runs (code that catches this)
        if inflight.count() or not first:
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
        _to_stopping()
        try:
            _core.stop_service()
            _core.set_dispatcher(None)
        except Exception:
            traceback.print_exc()
        end_serving()
    return reason


# ---- process exit ---------------------------------------------------------------------------


class _Exit:
    hooked = False


def _hook_exit() -> None:
    if not _Exit.hooked:
        atexit.register(_at_exit)
        _Exit.hooked = True


def _at_exit() -> None:
    # Threads still running at interpreter shutdown can crash or hang Blender; bounded wait.
    try:
        _core.shutdown()
    except Exception:
        pass

"""Runs inside the Blender child of `blendwire serve` (started by its --python-expr bootstrap).

Settings come as JSON in env `BLENDWIRE_SERVE`. Talks to the outer process through marker lines
on stdout: `BLENDWIRE-READY {json}` once commands can be served, `BLENDWIRE-ERROR {json}` on failure.
"""

import json
import os
import sys
import time

ENV = "BLENDWIRE_SERVE"
READY = "BLENDWIRE-READY"
ERROR = "BLENDWIRE-ERROR"
SETTLE_TIMEOUT = 30.0


def _emit(marker, payload):
    print(f"{marker} {json.dumps(payload)}", flush=True)  # stdout is a pipe: flush or it sits in a buffer


def _announce_when_responsive(info):
    """A timer callback that prints READY once the UI loop turns at its normal pace.

    A fresh GUI (shader compilation, first draws; seconds under Xvfb) runs timers about once a
    second; a client connecting then would see 1 s per call. Wait until two turns come less than
    0.1 s apart, at most SETTLE_TIMEOUT seconds."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = [None]

    def announce():
        now = time.monotonic()
        previous, last[0] = last[0], now
        if (previous is not None and now - previous < 0.1) or now > deadline:
            _emit(READY, info)
            return None  # one-shot
        return 0.01

    return announce


def _stop_when_parent_exits(parent_pid):
    """`blendwire serve` may be SIGKILLed (a CI timeout, a supervisor): then nobody would ever stop
    this Blender, which runs in its own session. The core waits on a pidfd on the service's I/O
    thread (no polling, no thread of its own) and stops the service loop when the parent is gone;
    in the GUI the timer then quits Blender."""
    from . import _core, blender

    try:
        _core.stop_when_process_exits(parent_pid)
    except OSError:  # no pidfd (old kernel) or the parent is already gone
        if not _alive(parent_pid):
            blender.request_stop("parent exited")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main():
    import bpy

    from . import blender

    settings = json.loads(os.environ.get(ENV) or "{}")
    try:
        host, port = blender.start(
            settings.get("host", blender.DEFAULT_HOST),
            settings.get("port"),
            quit_on_shutdown=True,
            **settings.get("service", {}),
        )
    except Exception as e:
        _emit(ERROR, {"error": str(e), "kind": type(e).__name__})
        sys.exit(1)
    if settings.get("parent_pid"):
        _stop_when_parent_exits(int(settings["parent_pid"]))
    if not start_router(settings):
        sys.exit(1)
    mode = blender.mode()
    info = {
        "host": host,
        "port": port,
        "mode": mode,
        "pid": os.getpid(),
        "blender": ".".join(str(v) for v in bpy.app.version),
    }
    if mode == "gui":
        bpy.app.timers.register(_announce_when_responsive(info), first_interval=0.0)
        return
    _emit(READY, info)
    reason = blender.run_until_shutdown()
    print(f"blendwire: service stopped ({reason})", file=sys.stderr, flush=True)
    # -b would otherwise go on with the command line; the bpy module has no other exit.
    sys.exit(exit_status(reason))


def start_router(settings):
    """Start the router (and load --addon-path add-ons) when serve was given an engine URL.
    False (after an ERROR marker) when that fails: serve then exits, it cannot do what was asked."""
    from . import router

    router.setup_logging()
    try:
        router.start_from_serve_settings(settings)
    except Exception as e:
        _emit(ERROR, {"error": f"router: {e}", "kind": type(e).__name__})
        return False
    return True


def exit_status(reason):
    """The process exit status after the pump returned `reason` (background / bpy): after the
    router's watchdog fired, save the .blend first; non-zero when that save failed."""
    if reason != "watchdog":
        return 0
    from . import router

    return router.save_and_quit_exit_code()

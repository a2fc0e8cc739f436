"""`blendwire serve` with Blender as a child process: start it, relay its output, stop it.

Not `src/bridge/running.rs` (which tracks the job on Blender's main thread): this runs
Blender itself, for `blendwire serve` without --bpy.

Blender runs in its own session (our signals must not reach it directly) with the bootstrap of
`blendwire.serve.child_main`; it watches our pid and stops if we are killed. Stopping is bounded and
politest first: `server_shutdown`, then SIGINT, then SIGTERM/SIGKILL to its whole process group.
No bpy here.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import config, process
from .client import Client
from .config import SERVE_ENV, SERVE_ERROR, SERVE_READY

__all__ = ["START_TIMEOUT", "STOP_GRACE", "BlenderChildError", "find_blender", "run"]

START_TIMEOUT = 60.0  # seconds Blender gets to start the service
STOP_GRACE = 1.5  # seconds Blender gets to exit after each shutdown step before the next one


class BlenderChildError(Exception):
    """Blender could not be found, started, or did not start the service; the message says why."""


def _say(msg: str) -> None:
    print(f"blendwire: {msg}", file=sys.stderr, flush=True)


def find_blender(path: str | None) -> str:
    candidate = path or config.env_blender() or "blender"
    found = shutil.which(candidate)
    if not found:
        raise BlenderChildError(
            f"Blender not found ({candidate!r}): install it (e.g. `apt install blender`), "
            "put it on PATH, set $BLENDER or pass --blender PATH; or use --bpy"
        )
    return found


def _child_command(blender_exe: str, gui: bool, blend_file: str | None) -> list[str]:
    # The directory holding the blendwire package. APPENDED to Blender's sys.path so Blender's own
    # modules (bpy, numpy, ...) keep precedence over whatever else lives next to blendwire.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = (
        f"import sys; p = {pkg_parent!r}; p in sys.path or sys.path.append(p); "
        "import blendwire.serve as m; m.child_main()"
    )
    cmd = [blender_exe] + ([] if gui else ["-b"]) + ([blend_file] if blend_file else [])
    # --python-exit-code: an exception in the bootstrap makes Blender exit non-zero, not idle.
    cmd += ["--python-exit-code", "2", "--python-expr", boot]
    if gui and not config.env_has_display():
        xvfb = shutil.which("xvfb-run")
        if not xvfb:
            raise BlenderChildError(
                "--gui without $DISPLAY needs xvfb-run: install it (`apt install xvfb`) or set DISPLAY"
            )
        cmd = [xvfb, "-a", "-s", "-screen 0 1280x720x24"] + cmd
    return cmd


def _relay(stream, events: queue.Queue, markers: tuple[str, ...]) -> None:
    """Child stdout → our stderr, line by line; marker lines become events instead."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        kind, _, payload = line.partition(" ")
        if kind in markers:
            try:
                events.put((kind, json.loads(payload)))
                continue
            except ValueError:
                pass
        sys.stderr.write(line)
        sys.stderr.flush()
    events.put(("EOF", None))


def run(
    blender_path: str | None, gui: bool, blend_file: str | None, settings: dict, *, ready_json: bool = False
) -> int:
    """Run Blender serving with `settings` (serve's JSON hand-over) until it stops or we are
    signalled; returns serve's exit status. Once it serves: `process.announce(info, ready_json)`."""
    cmd = _child_command(find_blender(blender_path), gui, blend_file)
    env = dict(os.environ)
    # parent_pid: Blender watches us and stops if we are killed (it runs in its own session).
    env[SERVE_ENV] = json.dumps({**settings, "parent_pid": os.getpid()})
    # The bootstrap starts the service; an add-on auto-starting one on the same port would collide.
    env.pop("BLD_REMOTE_MCP_START_NOW", None)

    signals: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: signals.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True
    )  # our signals must not hit Blender directly
    events: queue.Queue = queue.Queue()
    threading.Thread(target=_relay, args=(proc.stdout, events, (SERVE_READY, SERVE_ERROR)), daemon=True).start()
    try:
        info = _wait_ready(proc, events, signals)
        if info is None:  # signalled before Blender was ready
            return 0
        process.announce(info, ready_json)
        return _wait_done(proc, events, signals, info)
    finally:
        # SIGTERM, then SIGKILL, the child's group: Blender, or whatever it left in it (Xvfb); a
        # no-op when all are gone.
        process.kill_group(proc, 3.0, (signal.SIGTERM, signal.SIGKILL))
        for s, h in previous.items():
            signal.signal(s, h)


def _wait_ready(proc: subprocess.Popen, events: queue.Queue, signals: list[int]) -> dict | None:
    deadline = time.monotonic() + START_TIMEOUT
    while not signals:
        try:
            # Short timeout so a signal (its handler only appends to `signals`) is seen promptly.
            kind, payload = events.get(timeout=0.1)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise BlenderChildError(
                    f"Blender did not start the service within {START_TIMEOUT:.0f} s (its output is above)"
                ) from None
            continue
        if kind == SERVE_READY:
            return payload
        if kind == SERVE_ERROR:
            raise BlenderChildError(payload.get("error"))
        if kind == "EOF":
            raise BlenderChildError(
                f"Blender exited with status {_exit_status(proc)} before the service started (its output is above)"
            )
    return None


def _exit_status(proc: subprocess.Popen):
    """Blender's exit status once its stdout closed (bounded: a child that closed stdout but lives
    on is killed by the caller's cleanup)."""
    try:
        return proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        return "unknown (still running after closing its output)"


def _wait_done(proc: subprocess.Popen, events: queue.Queue, signals: list[int], info: dict) -> int:
    while True:
        if signals:
            name = signal.Signals(signals[0]).name
            _say(f"{name}: shutting down")
            _stop_child(proc, info)
            return 0
        try:
            kind, _ = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if kind == "EOF":
            rc = _exit_status(proc)
            if rc != 0:
                _say(f"Blender exited with status {rc}")
                # Keep Blender's own status when it chose one (3: the watchdog's save failed).
                return rc if isinstance(rc, int) and 0 < rc < 128 else 1
            return 0


def _stop_child(proc: subprocess.Popen, info: dict) -> None:
    """Bounded, politest first: server_shutdown; then SIGINT (in -b/bpy it breaks a command that is
    still running); then SIGTERM/SIGKILL to the whole process group."""
    try:
        with Client(info["host"], info["port"], timeout=2.0) as c:
            c.call("server_shutdown")
    except Exception as e:  # the child may be gone or stuck; the steps below still end it
        _say(f"server_shutdown failed ({e})")
    for step in ("SIGINT", "kill"):
        try:
            proc.wait(STOP_GRACE)
            return
        except subprocess.TimeoutExpired:
            pass
        if step == "SIGINT" and info.get("mode") != "gui":
            _say("Blender is still busy; interrupting the running command")
            proc.send_signal(signal.SIGINT)
    _say("Blender did not exit; killing it")

"""Helpers for the in-Blender tests (imported by conftest.py and the test modules)."""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bpy
import bwtest  # noqa: F401
from blendwire import _core


def runtime_name():
    if not bpy.app.background:
        return "gui"
    return "background" if bpy.app.binary_path else "bpy"


class Recorder:
    """A dispatcher that records its calls (and checks it runs on the main thread)."""

    def __init__(self, handlers=None):
        self.calls = []
        self.off_main_thread = []
        self.handlers = dict(handlers or {})

    def __call__(self, type_, params):
        if threading.current_thread() is not threading.main_thread():
            self.off_main_thread.append(type_)
        self.calls.append((type_, params))
        handler = self.handlers.get(type_)
        if handler is not None:
            return handler(params)
        return {"echo": type_, "params": params}

    def types(self):
        return [t for t, _ in self.calls]


def pump_while(fn, watchdog=120.0):
    """Run `fn()` on a client thread while this (main) thread pumps; the client thread ends the
    pump with stop_pump() when `fn` returns or raises. Returns (pump's reason, fn's result).

    A watchdog ends a pump that does not return within `watchdog` seconds (then the test fails)."""

    def client():
        try:
            return fn()
        finally:
            _core.stop_pump()

    dog = threading.Timer(watchdog, lambda: _core.stop_pump("watchdog"))
    dog.start()
    try:
        t, box = in_thread(client)
        reason = _core.pump()
    finally:
        dog.cancel()
    t.join(timeout=30)
    assert reason != "watchdog", f"pump() did not return within {watchdog}s"
    assert not t.is_alive(), "client thread still running after the pump returned"
    if "error" in box:
        raise box["error"]
    return reason, box.get("result")


def in_thread(fn):
    """Start `fn` on a daemon thread; returns (thread, box) where box gets 'result' or 'error'."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def thread_count():
    return len(os.listdir("/proc/self/task"))


def fd_targets():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the directory fd of the listdir itself
    return out


def socket_count():
    return sum(1 for t in fd_targets() if t.startswith("socket:"))

"""Waiting in the test suites: poll an observable condition up to a deadline, never a fixed sleep
standing in for readiness; and the files that tests use as flags between processes.

Importable in every runtime (venv Python, Blender's Python): standard library only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["join_all", "poll_until", "touch", "wait_file", "wait_for"]


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.005) -> Any:
    """Poll `predicate` until it returns a truthy value or `timeout` passes; returns its last value
    (falsy if the time ran out). Each round: call the predicate, check the deadline, sleep `interval`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.005,
    error: type[Exception] = AssertionError,
) -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` passes (`error`,
    AssertionError unless told: the benches raise RuntimeError).

    Polls an observable condition with a deadline; never a fixed sleep standing in for readiness."""
    value = poll_until(predicate, timeout, interval)
    if not value:
        raise error(f"timed out after {timeout}s waiting for {what}")
    return value


def join_all(threads, timeout: float) -> list[threading.Thread]:
    """Join `threads` against one common deadline `timeout` seconds away; the ones still alive."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


def wait_file(path: str, timeout: float = 60.0) -> str:
    return wait_for(lambda: os.path.exists(path) and path, timeout, f"file {path}")


def touch(path: str) -> None:
    with open(path, "w"):
        pass

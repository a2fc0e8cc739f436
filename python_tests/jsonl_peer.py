"""Both sides of the JSON-lines link between a test and a Socket.IO peer subprocess (engine_peer.py,
fleet_node.py: python-socketio servers standing in for cr8_engine).

The peer prints one JSON object per line for each thing that happens, `{"kind": ..., "t":
time.monotonic(), ...}` (CLOCK_MONOTONIC is system-wide, so comparable with the test's clock),
and reads one JSON command per line from stdin.

- Peer side (imported by the peer scripts, which run it from their `main`): `reporter()` makes the
  line writer, `report_events()` reports every `disconnect` and event a client sends,
  `serve_commands()` runs each stdin command on the peer's event loop and exits the process when
  stdin closes (the test is gone).
- Test side: `RecordingProcess`, a `bwtest.ChildProcess` that keeps every line the peer printed,
  across restarts, tagged with the run (1, 2, ...) that printed it.

Standard library only (and bwtest beside it); the peer side takes the `socketio.AsyncServer` as
an argument, so importing this module never loads socketio.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import bwtest

__all__ = ["RecordingProcess", "report_events", "reporter", "serve_commands"]

Say = Callable[..., None]


# ---- the peer side ----------------------------------------------------------------------------


def reporter(**stamp: Any) -> Say:
    """`say(kind, **fields)`: print one record line (with `stamp`'s fields, e.g. the node's name);
    safe from any thread."""
    lock = threading.Lock()

    def say(kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "t": time.monotonic(), **stamp, **fields})
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    return say


def report_events(sio: Any, namespace: str, say: Say) -> None:
    """Report each `disconnect` and each event a client sends on `namespace` of `sio` (a
    socketio.AsyncServer); the peer registers its own `connect` handler."""

    @sio.on("disconnect", namespace=namespace)
    async def on_disconnect(sid, *reason):
        say("disconnect", sid=sid)

    @sio.on("*", namespace=namespace)
    async def on_any(event, sid, data=None):
        say("event", sid=sid, event=event, data=data)


def serve_commands(handle: Callable[[dict], Awaitable[None]], say: Say) -> None:
    """Run `handle(command)` on the running event loop for each JSON line on stdin (a line that is
    not JSON is reported as `bad_command`); exit the process when stdin closes. Call from the loop."""
    loop = asyncio.get_running_loop()

    def read_stdin():
        for raw in sys.stdin:
            try:
                cmd = json.loads(raw)
            except ValueError:
                say("bad_command", line=raw)
                continue
            asyncio.run_coroutine_threadsafe(handle(cmd), loop)
        os._exit(0)  # the test closed our stdin (or died): nobody listens any more

    threading.Thread(target=read_stdin, daemon=True).start()


# ---- the test side ----------------------------------------------------------------------------


class RecordingProcess(bwtest.ChildProcess):
    """A peer subprocess whose stdout records are kept in `records` (each with the `run` that
    printed it) over every start; `send()` writes a command to its stdin."""

    def __init__(self, name: str):
        super().__init__(name)
        self.records: list[dict] = []
        self.runs = 0
        self._lock = threading.Lock()

    def _start_recording(self, cmd: list[str], timeout: float, where: str) -> None:
        """Spawn `cmd` as the next run and wait for its `listening` record; if it exits first or
        the time runs out, kill it and raise AssertionError with its stderr."""
        self.runs += 1
        run = self.runs
        proc = self._spawn(cmd)
        threading.Thread(target=self._read_stdout, args=(proc, run), daemon=True).start()
        try:
            bwtest.wait_for(
                lambda: proc.poll() is not None or self.find(lambda r: r["kind"] == "listening" and r["run"] == run),
                timeout,
                f"{self.name} listening on {where}",
            )
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{e}\n{self.tail(30)}") from None
        if proc.poll() is not None:
            raise AssertionError(f"{self.name} exited ({proc.returncode}) before listening\n{self.tail(30)}")

    def _read_stdout(self, proc, run: int) -> None:
        for raw in iter(proc.stdout.readline, b""):
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = {"kind": "garbage", "line": raw.decode("utf-8", "replace"), "t": time.monotonic()}
            rec["run"] = run
            with self._lock:
                self.records.append(rec)
        proc.stdout.close()

    def snapshot(self, start: int = 0) -> list[dict]:
        with self._lock:
            return list(self.records[start:])

    def find(self, pred: Callable[[dict], bool], start: int = 0) -> list[dict]:
        return [r for r in self.snapshot(start) if pred(r)]

    def send(self, cmd: dict) -> None:
        assert self.running, f"{self.name} is not running"
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode("utf-8"))
        self.proc.stdin.flush()

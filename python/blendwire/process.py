"""`blendwire serve` as a process: its ready handshake, and starting, reading and stopping it.

The handshake: `blendwire serve --ready-json` prints ONE JSON object (`Ready`) on one stdout line
once commands are served, and its human lines go to stderr; it is the only thing programs parse
(docs/protocol.md, "The ready handshake"). The writer (`announce`) and the reader (`parse_ready`)
live here, so the shape is written once.

Starting and stopping: `ServeProcess` runs serve in a session of its own (our Ctrl-C must not
reach it), collects its output and waits for the handshake with a deadline. Blender runs in yet
another session below serve, so a process group does not reach it: `kill_tree` walks /proc
(`descendants`) and SIGKILLs every process under serve. No bpy here.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, TextIO

__all__ = [
    "RUNTIME_ARGS",
    "Ready",
    "ServeProcess",
    "StartError",
    "announce",
    "descendants",
    "describe_exit",
    "human_lines",
    "kill_group",
    "kill_tree",
    "parse_ready",
    "pid_alive",
    "serve_argv",
    "stdout_for_handshake",
]

# `blendwire serve`'s flags for each runtime.
RUNTIME_ARGS: dict[str, list[str]] = {"background": [], "bpy": ["--bpy"], "gui": ["--gui"]}


@dataclasses.dataclass(frozen=True)
class Ready:
    """The ready handshake of `blendwire serve --ready-json`: one JSON object with these keys.

    pid is the process that serves (Blender's, or the bpy process's), not `blendwire serve`'s when
    Blender is its child. addon_host/addon_port: the MCP add-on listener (`--mcp-addon-port`),
    mcp_url: `--mcp-http`'s endpoint; null when off."""

    host: str
    port: int
    addon_host: str | None
    addon_port: int | None
    mcp_url: str | None
    pid: int
    runtime: str  # background | bpy | gui
    blender_version: str
    blendwire_version: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Ready:
        """From the info dict `blendwire.serve.serve` announces."""
        from . import _core

        mcp_url = None
        if info.get("mcp_http_port") is not None:
            host = info["mcp_http_host"]
            host = f"[{host}]" if ":" in host else host
            mcp_url = f"http://{host}:{info['mcp_http_port']}/mcp"
        return cls(
            host=info["host"],
            port=int(info["port"]),
            addon_host=info.get("mcp_addon_host"),
            addon_port=info.get("mcp_addon_port"),
            mcp_url=mcp_url,
            pid=int(info["pid"]),
            runtime=info["mode"],
            blender_version=info["blender"],
            blendwire_version=_core.__version__,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


# Each field of Ready and the JSON types it may have (None: null).
_READY_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "port": (int,),
    "addon_host": (str, type(None)),
    "addon_port": (int, type(None)),
    "mcp_url": (str, type(None)),
    "pid": (int,),
    "runtime": (str,),
    "blender_version": (str,),
    "blendwire_version": (str,),
}


def parse_ready(line: str) -> Ready | None:
    """The handshake if `line` is one, else None (any other line, or a JSON object without every
    field of `Ready` with its type; keys added later are ignored)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for name, types in _READY_TYPES.items():
        if not isinstance(value.get(name, ...), types) or isinstance(value[name], bool):
            return None
    return Ready(**{name: value[name] for name in _READY_TYPES})


def human_lines(info: Mapping[str, Any]) -> list[str]:
    """What `blendwire serve` tells people once it serves (the first line's form is documented)."""
    ready = Ready.from_info(info)
    lines = [f"blendwire: serving on {ready.host}:{ready.port} (Blender {ready.blender_version}, {ready.runtime})"]
    if ready.addon_port is not None:
        lines.append(
            f"blendwire: MCP add-on protocols (blender-mcp, Blender Lab) on {ready.addon_host}:{ready.addon_port}"
        )
    if ready.mcp_url is not None:
        lines.append(f"blendwire: MCP over Streamable HTTP at {ready.mcp_url}")
    return lines


def announce(info: Mapping[str, Any], ready_json: bool, out: TextIO | None = None) -> None:
    """Print that serve serves: the human lines on stdout; with `ready_json`, the human lines on
    stderr and then the handshake alone on `out` (default: stdout)."""
    human = sys.stderr if ready_json else sys.stdout
    for line in human_lines(info):
        print(line, file=human, flush=True)
    if ready_json:
        # stdout is a pipe: flush or it sits in a buffer
        print(Ready.from_info(info).to_json(), file=out or sys.stdout, flush=True)


def stdout_for_handshake() -> TextIO:
    """For serving in this process (--bpy): a private copy of stdout for the handshake, with the
    process's own stdout (fd 1: Blender's C code, scripts' prints) sent to stderr from now on, so
    that stdout carries the handshake alone."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


# ---- starting and stopping ----------------------------------------------------------------------


class StartError(Exception):
    """`blendwire serve` exited (`exited`, with `returncode`), or did not serve in time; the message
    ends with its output."""

    def __init__(self, message: str, exited: bool = False, returncode: int | None = None):
        super().__init__(message)
        self.exited = exited
        self.returncode = returncode


def serve_argv(
    runtime: str = "background",
    port: int | None = 0,
    extra: Sequence[str] = (),
    *,
    launcher: Sequence[str] | None = None,
) -> list[str]:
    """The argv of `blendwire serve --ready-json --port PORT <runtime flags> EXTRA`.

    launcher: how to run the `blendwire` command (default: this Python, `-m blendwire`)."""
    if runtime not in RUNTIME_ARGS:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIME_ARGS)}")
    argv = list(launcher) if launcher is not None else [sys.executable, "-m", "blendwire"]
    argv += ["serve", "--ready-json"]
    if port is not None:
        argv += ["--port", str(port)]
    return argv + RUNTIME_ARGS[runtime] + list(extra)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), from /proc, parents before their
    children: Blender runs in a session of its own under serve, so a process group does not reach it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_group(proc: subprocess.Popen, timeout: float, signals: Sequence[int] = (signal.SIGKILL,)) -> int | None:
    """Send each of `signals` in turn to the process group `proc` leads (started with
    start_new_session), waiting up to `timeout` after each for `proc` to exit; its exit status, or
    None if it still runs. Nothing is sent once it is gone."""
    for sig in signals:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    return proc.poll()


def kill_tree(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGKILL every process under `proc`, deepest first (a Blender that outlived its parent for a
    moment would see it gone and stop on its own, interrupting its job: not a crash), then `proc`'s
    group; its exit status, or None if it still runs after `timeout`."""
    for pid in descendants(proc.pid)[::-1]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return kill_group(proc, timeout)


class ServeProcess:
    """One `blendwire serve` subprocess (`argv`, e.g. from `serve_argv`; `env`, default ours) in a
    session of its own, its output collected by threads: `stdout_lines`, `stderr_lines` and both
    interleaved in `lines`, the last `keep` lines of each (None: all)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None, keep: int | None = 400):
        self.argv = list(argv)
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.stdout_lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.ready: Ready | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,  # our Ctrl-C must not reach it; kill() ends it
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, False), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, stream: IO[bytes], sink: collections.deque[str], is_stdout: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            sink.append(line)
            self.lines.append(line)
            if is_stdout:
                self._lines.put(line)
        stream.close()
        if is_stdout:
            self._lines.put(None)

    def tail(self, lines: int = 60) -> str:
        """The command and the last `lines` lines of each stream, for error messages."""
        return (
            f"--- command: {' '.join(self.argv)}\n--- stdout:\n"
            + "\n".join(list(self.stdout_lines)[-lines:])
            + "\n--- stderr:\n"
            + "\n".join(list(self.stderr_lines)[-lines:])
        )

    def wait_ready(self, timeout: float) -> Ready:
        """The handshake, read from stdout within `timeout` seconds. StartError (with the output's
        tail) when serve exits first or the time runs out; the process is then left to the caller."""
        if self.ready is not None:
            return self.ready
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartError(f"`blendwire serve` did not serve within {timeout:g} s\n{self.tail()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = self.wait(30.0)
                self.join_output(10.0)
                raise StartError(
                    f"`blendwire serve` exited ({describe_exit(rc)}) before serving\n{self.tail()}", True, rc
                )
            ready = parse_ready(line)
            if ready is not None:
                self.ready = ready
                return ready

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if it still runs after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def join_output(self, timeout: float) -> None:
        """Wait (up to `timeout`) until both streams are read to their end."""
        for t in self._readers:
            t.join(timeout)

    def kill(self, timeout: float = 30.0) -> int | None:
        """SIGKILL serve, its Blender and whatever they started (Xvfb); the exit status."""
        return kill_tree(self.proc, timeout)


def describe_exit(rc: int | None) -> str:
    """`exit status N` (with the signal's name when N is 128 + a signal), or still running."""
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    if rc > 128:  # a shell or xvfb-run reporting its child's signal
        try:
            return f"exit status {rc}, {signal.Signals(rc - 128).name}"
        except ValueError:
            pass
    return f"exit status {rc}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user's counts: it cannot be signalled, but is there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True

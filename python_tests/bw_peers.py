"""The tests' own peers: helper programs run as child processes, and TCP listeners (a scripted
`FakeServer` for testing clients against misbehaving services).

Importable in every runtime (venv Python, Blender's Python): standard library only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

from bw_net import HOST

__all__ = ["ChildProcess", "FakeServer", "Listener"]


def kill_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGKILL the process group `proc` leads and wait up to `timeout` for `proc` to be gone
    (`blendwire.process.kill_group`, imported here so this module stays importable without it)."""
    from blendwire.process import kill_group as kill

    kill(proc, timeout)


class ChildProcess:
    """A helper program run as a subprocess in a session (process group) of its own, with pipes
    for stdin/stdout/stderr; its stderr is collected by a thread (`stderr_lines`, `tail()`), its
    stdout is the subclass's to read. `kill()` SIGKILLs the whole group, so a test can make it die
    for real (no goodbye; its ports free when kill() returns) and start it again."""

    def __init__(self, name: str):
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []

    def _spawn(self, cmd: list[str], **kw) -> subprocess.Popen:
        assert not self.running, f"{self.name} is already running"
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw
        )
        threading.Thread(target=self._pump_stderr, args=(self.proc,), daemon=True).start()
        return self.proc

    def _pump_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip())
        proc.stderr.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group; gone (and its ports free) when this returns."""
        if self.proc is None:
            return
        kill_group(self.proc, 10)
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def signal(self, signum: int) -> None:
        """Send `signum` to the process group (SIGSTOP freezes it: its sockets stay open)."""
        assert self.running, f"{self.name} is not running"
        os.killpg(self.proc.pid, signum)

    def tail(self, n: int = 20) -> str:
        return f"--- {self.name} stderr:\n" + "\n".join(self.stderr_lines[-n:])


class Listener:
    """A TCP listener on 127.0.0.1:`port` (0: a free one) whose thread accepts each connection and
    hands it to `self.accepted(conn)`; `close()` stops it. Subclasses set their own state before
    calling this __init__ (the thread starts in it). `poll`: how often the thread checks for close()."""

    def __init__(self, port: int = 0, backlog: int = 16, poll: float = 0.05):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self._poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        self.sock.settimeout(self._poll)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted(conn)

    def accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeServer(Listener):
    """A scripted TCP peer on 127.0.0.1:<free port>: `behaviour(conn_socket, request_bytes)` runs for
    each connection after its first bytes arrive. Used to test clients against misbehaving services."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.connections = 0
        self._held = []
        super().__init__(port=0, backlog=16, poll=0.05)

    def accepted(self, conn):
        self.connections += 1
        self._held.append(conn)
        threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(60)
            data = conn.recv(65536)
            self.behaviour(conn, data)
        except OSError:
            pass

    def close(self):
        super().close()
        for c in self._held:
            try:
                c.close()
            except OSError:
                pass

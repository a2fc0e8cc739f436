"""Helpers shared by the blendwire test suites: raw-socket JSON I/O and `blendwire serve` processes.

Importable in every runtime (venv Python, Blender's Python): standard library only.
Nothing here sleeps to wait for readiness: every wait polls an observable condition up to a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
SERVING_RE = re.compile(
    r"^blendwire: serving on (?P<host>\S+):(?P<port>\d+) "
    r"\(Blender (?P<version>[0-9][0-9.]*), (?P<runtime>background|gui|bpy)\)$"
)
RUNTIME_ARGS = {"background": [], "bpy": ["--bpy"], "gui": ["--gui"]}
START_TIMEOUT = float(os.environ.get("BLENDWIRE_TEST_START_TIMEOUT", "180"))
EXIT_TIMEOUT = 30.0


# ---- waiting ---------------------------------------------------------------------------------


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def taken_port(backlog: int = 1):
    """A port on 127.0.0.1 held by a listening socket (no SO_REUSEADDR) for the `with` block: for
    "the port is taken" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((HOST, 0))
        holder.listen(backlog)
        yield holder.getsockname()[1]


def port_is_bindable(port: int, host: str = HOST) -> bool:
    """True if a listening socket can bind host:port now (with SO_REUSEADDR, as every server does)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def connection_refused(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def connect(port: int, host: str = HOST, timeout: float = 60.0) -> socket.socket:
    """A plain TCP connection with TCP_NODELAY (as every client here uses) and `timeout` per I/O."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tcp_sockets(pid="self") -> list[tuple[int, str, int, int]]:
    """The TCP sockets (IPv4 and IPv6) that process `pid` holds, from /proc: (inode, state, local
    port, remote port) each, state as /proc/net/tcp writes it ("0A" listening, "01" established)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile, or the directory fd of the listdir itself
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            local, remote = (int(c.rsplit(":", 1)[1], 16) for c in (cols[1], cols[2]))
            out.append((int(cols[9]), cols[3], local, remote))
    return out


# ---- raw JSON over a socket ------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WHITE = " \t\n\r\x0b\x0c"  # what bytes.lstrip() skips


def parse_values(buf, limit: int) -> tuple[list, int]:
    """(values, bytes consumed): up to `limit` consecutive JSON values at the start of `buf`, white
    space before each skipped. An incomplete last value (or UTF-8 character) is left unconsumed."""
    try:
        text = bytes(buf).decode("utf-8")
    except UnicodeDecodeError as e:
        # A UTF-8 character split at the end of the buffer: parse the complete prefix.
        text = bytes(buf[: e.start]).decode("utf-8")
    values, pos, end = [], 0, 0
    while len(values) < limit:
        while pos < len(text) and text[pos] in _WHITE:
            pos += 1
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        values.append(value)
        end = pos
    return values, len(text[:end].encode("utf-8"))


def parse_one(buf, whole: bool = False):
    """(value, bytes consumed) if `buf` holds one complete JSON value, else None.

    whole=False: the value at the start of `buf` (after white space); what follows it is left for
    the next value (pipelined answers). whole=True: all of `buf` must be exactly one JSON value
    (json.loads), as a client that sends one request and reads one answer checks."""
    if whole:
        try:
            return json.loads(buf), len(buf)
        except ValueError:  # incomplete JSON, or a UTF-8 character split across reads
            return None
    values, used = parse_values(buf, 1)
    return (values[0], used) if values else None


def _recv_more(sock: socket.socket, data: bytearray, deadline: float | None, recv_size: int) -> None:
    """One recv appended to `data`. deadline None: the socket's own timeout applies. TimeoutError
    when nothing came in time, ConnectionError on EOF (both with what was received)."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete JSON response; received so far: {bytes(data[:500])!r}")
        sock.settimeout(left)
    try:
        chunk = sock.recv(recv_size)
    except TimeoutError:
        raise TimeoutError(f"no complete JSON response; received so far: {bytes(data[:500])!r}") from None
    if not chunk:
        raise ConnectionError(f"connection closed by the server; received: {bytes(data[:500])!r}")
    data += chunk


def read_json(
    sock: socket.socket,
    buf=b"",
    *,
    whole: bool = False,
    timeout: float | None = None,
    recv_size: int = 65536,
    ends_with: bytes | None = None,
):
    """Read from `sock` (after the bytes already in `buf`) until the bytes parse as one JSON value
    (`parse_one(.., whole)`). Returns (value, bytes it took, all bytes read): the caller keeps
    `all[used:]` for the next value.

    timeout: None, each recv waits as long as the socket's own timeout; else one deadline for the
    whole read. TimeoutError when no complete value came in time; ConnectionError on EOF.
    recv_size: the size of each recv. ends_with: try a parse only when the bytes so far (right-
    stripped) end with it, a cheap check for big answers (the benches' 10 MB read)."""
    data = bytearray(buf)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if data and (ends_with is None or data.rstrip().endswith(ends_with)):
            parsed = parse_one(data, whole)
            if parsed is not None:
                return parsed[0], parsed[1], data
        _recv_more(sock, data, deadline, recv_size)


def read_values(
    sock: socket.socket, n: int, buf=b"", *, timeout: float | None = None, recv_size: int = 65536
) -> tuple[list, bytes]:
    """The next `n` JSON values (pipelined answers) after the bytes in `buf`, and the bytes left
    over; each byte is parsed once however many answers come in one read. timeout as read_json."""
    data = bytearray(buf)
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list = []
    while True:
        if data:
            values, used = parse_values(data, n - len(out))
            out += values
            del data[:used]
        if len(out) >= n:
            return out, bytes(data)
        _recv_more(sock, data, deadline, recv_size)


def read_until_eof(sock: socket.socket, timeout: float | None = None) -> tuple[bytes, bool]:
    """(bytes received, closed): everything the peer sends until it closes (EOF or reset).

    timeout=None: each recv waits as long as the socket's own timeout, and a TimeoutError
    propagates. Else each recv waits up to `timeout`, no recv starts after `timeout` has passed,
    and a timeout returns closed=False."""
    data = b""
    if timeout is None:
        deadline = None
    else:
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        if deadline is None:
            raise
        return data, False
    except (ConnectionResetError, BrokenPipeError):
        return data, True
    return data, False


def parse_all(data: bytes, lenient: bool = False) -> list:
    """Every JSON value in `data` (white space between them skipped).

    lenient=False: bytes that are not UTF-8 or not JSON raise. lenient=True (the soak's count of
    answers): bad UTF-8 is replaced, and anything unparsable makes the answer []."""
    text = data.decode("utf-8", "replace" if lenient else "strict")
    out, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            if lenient:
                return []
            raise
        out.append(value)


class Conn:
    """One raw TCP connection; `read()` accumulates bytes until they parse as one JSON value."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 60.0):
        self.sock = connect(port, host, timeout)
        self.timeout = timeout
        self.buf = b""

    def send(self, message) -> None:
        data = message if isinstance(message, (bytes, bytearray)) else json.dumps(message).encode("utf-8")
        self.sock.sendall(data)

    def send_pieces(self, data: bytes, sizes) -> None:
        """Send `data` in separate writes of the given sizes (the rest in one last write)."""
        pos = 0
        for n in sizes:
            self.sock.sendall(data[pos : pos + n])
            pos += n
        if pos < len(data):
            self.sock.sendall(data[pos:])

    def read(self, timeout: float | None = None) -> Any:
        """The next JSON value from the server. Raises TimeoutError, or ConnectionError on EOF."""
        return self.read_many(1, timeout)[0]

    def read_many(self, n: int, timeout: float | None = None, recv_size: int = 65536) -> list:
        """The next `n` JSON values (pipelined answers), all within one deadline `timeout`."""
        values, self.buf = read_values(
            self.sock, n, self.buf, timeout=self.timeout if timeout is None else timeout, recv_size=recv_size
        )
        return values

    def request(self, message, timeout: float | None = None) -> Any:
        self.send(message)
        return self.read(timeout)

    def at_eof(self, timeout: float) -> bool:
        """True if the server closes this connection (EOF or reset) within `timeout`."""
        data, closed = read_until_eof(self.sock, timeout)
        self.buf += data
        return closed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(port: int, type_: str, params: dict | None = None, host: str = HOST, timeout: float = 60.0) -> Any:
    """One-shot: connect, send one request, read one response, close."""
    with Conn(port, host, timeout) as c:
        return c.request({"type": type_, "params": params or {}})


def execute(port: int, code: str, host: str = HOST, timeout: float = 60.0, **params) -> Any:
    return request(port, "execute_code", {"code": code, **params}, host=host, timeout=timeout)


def assert_success(resp) -> Any:
    assert isinstance(resp, dict), resp
    assert resp.get("status") == "success", resp
    return resp["result"]


def assert_error(resp, error_code: str | None = None) -> dict:
    assert isinstance(resp, dict), resp
    assert resp.get("status") == "error", resp
    assert isinstance(resp.get("message"), str) and resp["message"].strip(), resp
    if error_code is not None:
        assert resp.get("error_code") == error_code, resp
    return resp


def stdout_of(result: dict) -> str:
    """The captured stdout of an execute_code result (plain or base64)."""
    import base64

    out = result["result"]
    if result.get("result_is_base64"):
        out = base64.b64decode(out).decode("utf-8")
    return out


def wait_file(path: str, timeout: float = 60.0) -> str:
    return wait_for(lambda: os.path.exists(path) and path, timeout, f"file {path}")


def blocking_code(started: str, release: str, limit: float = 120.0) -> str:
    """execute_code source that occupies Blender's main thread until the file `release` exists.

    It creates `started` first, so a test knows the job is running (and so is first in line)."""
    return (
        "import os, time\n"
        f"open({started!r}, 'w').close()\n"
        f"deadline = time.monotonic() + {limit}\n"
        f"while not os.path.exists({release!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.005)\n"
        "print('released')\n"
    )


def touch(path: str) -> None:
    with open(path, "w"):
        pass


# ---- `blendwire serve` processes ---------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (children, grandchildren, ...): the package's own helper, which
    the pytest plugin uses too (imported here, so this module stays importable without it)."""
    from blendwire.process import descendants as below

    return below(pid)


def blendwire_command() -> list[str]:
    """How to run the `blendwire` console script: $BLENDWIRE_BIN, next to this Python, or on PATH."""
    if os.environ.get("BLENDWIRE_BIN"):
        return [os.environ["BLENDWIRE_BIN"]]
    here = os.path.join(os.path.dirname(sys.executable), "blendwire")
    if os.path.exists(here):
        return [here]
    found = shutil.which("blendwire")
    if found:
        return [found]
    raise AssertionError("the `blendwire` command is not installed (run scripts/setup)")


def kill_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGKILL the process group `proc` leads (started with start_new_session) and wait up to
    `timeout` for `proc` to be gone; nothing if it already is."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


class ServeProcess:
    """A `blendwire serve ...` subprocess (own process group) with its output collected by threads."""

    def __init__(self, args: list[str], env: dict | None = None):
        self.args = list(args)
        self.cmd = blendwire_command() + ["serve"] + self.args
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.host: str | None = None
        self.port: int | None = None
        self.version: str | None = None
        self.runtime: str | None = None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, False), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream, sink, is_stdout):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            sink.append(line)
            if is_stdout:
                self._lines.put(line)
        stream.close()
        if is_stdout:
            self._lines.put(None)

    def output(self, limit: int = 60) -> str:
        return (
            "--- command: "
            + " ".join(self.cmd)
            + "\n--- stdout:\n"
            + "\n".join(self.stdout_lines[-limit:])
            + "\n--- stderr:\n"
            + "\n".join(self.stderr_lines[-limit:])
        )

    def wait_serving(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        """Wait for the `blendwire: serving on ...` line; AssertionError on exit or deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no 'serving on' line within {timeout}s\n{self.output()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait(timeout=EXIT_TIMEOUT)
                raise AssertionError(f"blendwire serve exited ({rc}) before serving\n{self.output()}")
            m = SERVING_RE.match(line)
            if m:
                self.host, self.port = m["host"], int(m["port"])
                self.version, self.runtime = m["version"], m["runtime"]
                return self

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        """The exit code, or None if it is still running after `timeout`."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._readers:
            t.join(timeout=10)
        return rc

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL blendwire and every process under it (Blender runs in a session of its own, so
        killing blendwire's process group alone would leave it running). The processes under it
        go first: a Blender that outlived its parent for a moment would see it gone and stop on
        its own (interrupting its job), which is not a crash."""
        victims = descendants(self.proc.pid)[::-1] + [self.proc.pid]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        kill_group(self.proc, EXIT_TIMEOUT)

    def shutdown(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Send `server_shutdown`; assert the answer and that the process exits 0 within `timeout`.

        On any failure the process group is killed and AssertionError raised."""
        try:
            if self.proc.poll() is None:
                resp = request(self.port, "server_shutdown", host=self.host or HOST, timeout=timeout)
                result = assert_success(resp)
                assert result.get("message") == "Server shutdown initiated", resp
            rc = self.wait_exit(timeout)
            assert rc is not None, f"blendwire serve still running {timeout}s after server_shutdown"
            assert rc == 0, f"blendwire serve exited {rc} after server_shutdown"
            return rc
        except BaseException as e:
            self.kill()
            raise AssertionError(f"{e}\n{self.output()}") from e

    def __del__(self):
        try:
            if self.proc.poll() is None:
                self.kill()
        except Exception:
            pass


def start_serve(runtime: str, port: int = 0, extra: list[str] | None = None, env: dict | None = None) -> ServeProcess:
    """Start `blendwire serve --port PORT` for a runtime and wait until it serves."""
    args = ["--port", str(port)] + RUNTIME_ARGS[runtime] + list(extra or [])
    sp = ServeProcess(args, env=env)
    try:
        sp.wait_serving()
    except BaseException:
        sp.kill()
        raise
    assert sp.runtime == runtime, f"asked for {runtime}, serving line says {sp.runtime}\n{sp.output()}"
    if port:
        assert sp.port == port, sp.output()
    return sp


# ---- the tests' own peers: helper programs and listeners -------------------------------------


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

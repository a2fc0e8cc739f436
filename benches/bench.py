#!/usr/bin/env python3
"""blendwire vs the BLD Remote MCP add-on (blender-remote 1.3.3 from PyPI), in one run.

Run with the project's venv (`./scripts/bench`, or `.venv/bin/python benches/bench.py`).
It starts, one after the other (never two servers at once, so they never share the 2 cores):

  * `blendwire serve --port 0` on `blender -b`;
  * the peer: Debian's Blender `-b --python SCRIPT`, where SCRIPT is what blender-remote's own CLI
    (`blender-remote-cli start --background`) writes: its startup code plus its KEEPALIVE_SCRIPT
    (imported from blender_remote.cli.scripts, unchanged), which calls `bld_remote.step()` every
    50 ms. Instead of installing the add-on into the user's Blender config (`blender-remote-cli
    install`), the script first puts the wheel's `addon/` directory on sys.path and enables
    `bld_remote_mcp` with addon_utils (nothing is saved); the env is the CLI's
    (BLD_REMOTE_MCP_PORT, BLD_REMOTE_MCP_START_NOW=1, BLD_REMOTE_LOG_LEVEL=INFO);
  * `blendwire serve --port 0 --gui` (under xvfb-run when $DISPLAY is unset).

In the same run (issue 5): 64 concurrent persistent clients (8 processes x 8 connections driven
with selectors) against blendwire -b and the peer; a 10 MB `execute_code` result against blendwire
-b next to a plain loopback copy of the same number of bytes (a Python server process, same read
loop); idle CPU%/RSS/threads of Blender GUI with blendwire idle vs plain Blender GUI, and of
blendwire -b idle vs a plain `blender -b` sleeping in Python; a STAND-IN for the blender-mcp
add-on's dispatch (benches/blender_mcp_standin.py, GUI) against blendwire GUI, 1 and 8 clients;
blendwire GUI's max_tick_ms / max_job_ms (get_status) before and after the 8-client flood.

Issue 12's rows (benches/bench_interrupt.py, against blendwire -b and the GUI): runaway jobs
interrupted at their deadline (time to the caller's `interrupted` answer and to another client's
next request being served), and calls/s with the interrupt handler and signal on and off on the same
Blender, with the interrupter thread's CPU and wake-ups per call (on in both).

Issue 13's rows (benches/bench_agents.py, GUI runs only): the real blender-mcp 1.9.4 add-on in the GUI
with its own transport vs blendwire hosting the same add-on file on `--mcp-addon-port`, 1 and 8
clients; Blender Lab one-shot requests against blendwire's listener in -b and the GUI.

Issue 14's rows (benches/bench_mcp.py, -b and GUI): blendwire mcp (stdio, Streamable HTTP) vs
dcc-mcp-blender vs the blender-remote MCP server, all through the official `mcp` client.

Every workload uses the same raw-protocol client code for both servers (send the JSON, read until
the bytes parse as one JSON object, TCP_NODELAY). Warm-up calls are excluded; each workload runs
ROUNDS rounds, each bounded in calls and in time; the table shows the median over rounds.
Every process started here is stopped in a `finally` (also on Ctrl-C / SIGTERM).
"""

import argparse
import datetime as _dt
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bwtest  # noqa: E402  (standard library only: raw JSON over a socket, waiting, processes)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_agents  # noqa: E402  (issue 13's rows: the agents' add-on protocols)
import bench_interrupt  # noqa: E402  (issue 12's rows: interrupting runaway jobs, and what that costs)
import bench_mcp  # noqa: E402  (issue 14's rows: MCP servers through one official `mcp` client)

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
HOST = "127.0.0.1"
CLIENT_TIMEOUT = 10.0
N_CONCURRENT = 8

SCENE = {"type": "get_scene_info", "params": {}}
BIG_BYTES = 10_000_000
BIG_EXEC = json.dumps({"type": "execute_code", "params": {"code": f"print('x' * {BIG_BYTES}, end='')"}}).encode()
MULTI_PROCS, MULTI_PER_PROC = 8, 8  # 64 concurrent persistent connections
TICK_BUDGET_MS = 8.0
STANDIN = os.path.join(ROOT, "benches", "blender_mcp_standin.py")
EXEC = {"type": "execute_code", "params": {"code": "print(1)"}}


# --------------------------------------------------------------------------------------------
# The one raw-protocol client used for every server
# --------------------------------------------------------------------------------------------


def _connect(port):
    return bwtest.connect(port, HOST, timeout=CLIENT_TIMEOUT)  # TCP_NODELAY


def _roundtrip(sock, payload):
    """Send one request; read until the bytes parse as one JSON object; return it."""
    sock.sendall(payload)
    return bwtest.read_json(sock, whole=True)[0]


def _ok(resp):
    return isinstance(resp, dict) and resp.get("status") == "success"


class _Persistent:
    def __init__(self, port):
        self.port = port
        self.sock = None

    def call(self, payload):
        if self.sock is None:
            self.sock = _connect(self.port)
        try:
            return _roundtrip(self.sock, payload)
        except BaseException:
            self.close()  # a failed call leaves the stream in an unknown state: start afresh
            raise

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def _oneshot(port, payload):
    s = _connect(port)
    try:
        return _roundtrip(s, payload)
    finally:
        s.close()


# Workloads whose call() makes several calls at once (pipelined): calls per call().
BATCH = {"client_blendwire_many": 32}


def _make_caller(kind, port):
    """Return (call, close): call() -> bool success. kind selects connection style and request,
    or one of the two Python client libraries."""
    if kind == "oneshot_scene":
        p = json.dumps(SCENE).encode()
        return (lambda: _ok(_oneshot(port, p))), (lambda: None)
    if kind in ("persistent_scene", "persistent_exec"):
        p = json.dumps(SCENE if kind == "persistent_scene" else EXEC).encode()
        conn = _Persistent(port)
        return (lambda: _ok(conn.call(p))), conn.close
    if kind == "client_blendwire":
        import blendwire

        c = blendwire.Client(HOST, port, timeout=CLIENT_TIMEOUT)
        return (lambda: bool(c.scene_info().get("name"))), c.close
    if kind == "client_blendwire_many":
        import blendwire

        c = blendwire.Client(HOST, port, timeout=CLIENT_TIMEOUT)
        calls = ["get_scene_info"] * BATCH[kind]
        return (lambda: all(r.get("name") for r in c.call_many(calls))), c.close
    if kind == "client_blender_remote":
        import blender_remote

        c = blender_remote.connect_to_blender(host=HOST, port=port, timeout=CLIENT_TIMEOUT)
        return (lambda: bool(c.get_scene_info().get("name"))), (lambda: None)
    raise ValueError(kind)


def _run_loop(call, max_calls, t_end):
    """Sequential calls until max_calls or the monotonic deadline t_end. Returns the raw record."""
    lat = []
    fails = 0
    errors = {}
    perf = time.perf_counter_ns
    cpu0 = time.process_time()
    t0 = time.monotonic()
    n = 0
    while n < max_calls and time.monotonic() < t_end:
        a = perf()
        try:
            ok = call()
        except Exception as e:
            ok = False
            key = type(e).__name__
            errors[key] = errors.get(key, 0) + 1
        b = perf()
        n += 1
        if ok:
            lat.append(b - a)
        else:
            fails += 1
    t1 = time.monotonic()
    return {
        "lat_ns": lat,
        "fails": fails,
        "errors": errors,
        "t0": t0,
        "t1": t1,
        "client_cpu_s": time.process_time() - cpu0,
    }


def _warm(call, n):
    for _ in range(n):
        try:
            call()
        except Exception:
            pass


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it terminates us)


def _worker(args):
    """One concurrent client (runs in its own process): connect, warm up, wait for the common
    start time, then run until the common deadline or max_calls."""
    kind, port, warmup, start_at, window_s, max_calls = args
    call, close = _make_caller(kind, port)
    try:
        _warm(call, warmup)
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return _run_loop(call, max_calls, start_at + window_s)
    finally:
        close()


def _worker_multi(args):
    """One process driving n_conn persistent connections at once with selectors (each connection
    has at most one request in flight; the next request goes out as soon as its answer is whole).
    Same request bytes and completion rule (the bytes parse as one JSON object) as _roundtrip."""
    import selectors

    kind, port, n_conn, warmup, start_at, window_s, max_calls = args
    payload = json.dumps(SCENE if kind == "persistent_scene" else EXEC).encode()
    socks, errors = [], {}
    for _ in range(n_conn):
        try:
            s = _connect(port)
            for _w in range(warmup):
                _roundtrip(s, payload)
            socks.append(s)
        except Exception as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    fails = n_conn - len(socks)
    lat = []
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sel = selectors.DefaultSelector()
    state = {}
    perf = time.perf_counter_ns
    cpu0 = time.process_time()
    t0 = time.monotonic()
    t_end = start_at + window_s
    for s in socks:
        s.setblocking(False)
        state[s] = [b"", perf(), 0]  # buffer, send time, calls done
        s.sendall(payload)  # small: fits the empty send buffer
        sel.register(s, selectors.EVENT_READ)
    while state:
        now = time.monotonic()
        if now >= t_end + CLIENT_TIMEOUT:
            break
        for key, _ev in sel.select(timeout=max(0.01, min(1.0, t_end + CLIENT_TIMEOUT - now))):
            s = key.fileobj
            st = state[s]
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                chunk, err = b"", type(e).__name__
            else:
                err = "ConnectionError"
            if not chunk:
                errors[err] = errors.get(err, 0) + 1
                fails += 1
                sel.unregister(s)
                s.close()
                del state[s]
                continue
            st[0] += chunk
            parsed = bwtest.parse_one(st[0], whole=True)
            if parsed is None:
                continue
            resp = parsed[0]
            b = perf()
            if _ok(resp):
                lat.append(b - st[1])
            else:
                fails += 1
            st[2] += 1
            if st[2] >= max_calls or time.monotonic() >= t_end:
                sel.unregister(s)
                s.close()
                del state[s]
                continue
            st[0], st[1] = b"", perf()
            s.setblocking(True)
            s.sendall(payload)
            s.setblocking(False)
    for s in list(state):  # still waiting after the grace period: a failure (timeout)
        errors["timeout"] = errors.get("timeout", 0) + 1
        fails += 1
        s.close()
    return {
        "lat_ns": lat,
        "fails": fails,
        "errors": errors,
        "t0": t0,
        "t1": time.monotonic(),
        "client_cpu_s": time.process_time() - cpu0,
    }


def _read_json_big(sock):
    """The read loop for the 10 MB workload (blendwire and the plain loopback copy alike): chunks
    of 1 MiB into a bytearray; a parse is tried only when the bytes so far end with '}'.
    Returns (response, bytes)."""
    resp, size, _ = bwtest.read_json(sock, whole=True, recv_size=1 << 20, ends_with=b"}")
    return resp, size


LOOPBACK_SERVER = r"""
import socket, sys
data = open(sys.argv[1], 'rb').read()
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(8)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        req = c.recv(65536)
        if not req:
            break
        c.sendall(data)
    c.close()
"""


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def _round_stats(records, server_cpu_s=None, machine_busy_s=None, batch=1):
    """`batch`: calls per recorded call (pipelined batches): calls/s counts each; latencies are
    per batch."""
    lat = sorted(x for r in records for x in r["lat_ns"])
    fails = sum(r["fails"] for r in records)
    errors = {}
    for r in records:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    t0 = min(r["t0"] for r in records)
    t1 = max(r["t1"] for r in records)
    wall = max(t1 - t0, 1e-9)
    out = {
        "calls": len(lat) + fails,
        "ok": len(lat),
        "failures": fails,
        "errors": errors,
        "wall_s": round(wall, 4),
        "calls_per_s": len(lat) * batch / wall,
        "p50_ms": _pct(lat, 0.50) / 1e6 if lat else None,
        "p99_ms": _pct(lat, 0.99) / 1e6 if lat else None,
        "max_ms": lat[-1] / 1e6 if lat else None,
        "client_cpu_pct": 100.0 * sum(r["client_cpu_s"] for r in records) / wall,
    }
    if server_cpu_s is not None:
        out["server_cpu_pct"] = 100.0 * server_cpu_s / wall
    if machine_busy_s is not None and server_cpu_s is not None:
        # What the rest of the machine used meanwhile (other sessions' builds/tests skew the run).
        out["other_cpu_pct"] = max(0.0, 100.0 * machine_busy_s / wall - out["server_cpu_pct"] - out["client_cpu_pct"])
    return out


def _median_of(rounds):
    def med(key):
        vals = [r[key] for r in rounds if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    return {
        "calls_per_s": med("calls_per_s"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "failures": sum(r["failures"] for r in rounds),  # total over all rounds, not a median
        "calls": sum(r["calls"] for r in rounds),
        "server_cpu_pct": med("server_cpu_pct"),
        "client_cpu_pct": med("client_cpu_pct"),
        "other_cpu_pct": med("other_cpu_pct"),
    }


# --------------------------------------------------------------------------------------------
# Processes: start, find, stop (every one of them, always)
# --------------------------------------------------------------------------------------------


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _alive(pid, comm):
    """`pid` still runs as `comm` (a zombie counts as gone)."""
    if _comm(pid) != comm:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cpu_seconds(pids):
    """utime+stime of these processes (all their threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


LIVE_SERVERS = []  # every Server started and not yet stopped: the final `finally` stops them


def _machine_busy_s():
    """Busy CPU seconds of the whole machine, all cores (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process started in its own session; stop() ends it and everything under it."""

    def __init__(self, name, cmd, env=None, log_path=None, ready_prefix="blendwire: serving on"):
        self.name = name
        self.ready_prefix = ready_prefix
        self.stopped = False
        self.cmd = cmd
        self.log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, env=env, start_new_session=True
        )
        LIVE_SERVERS.append(self)
        self.known = {self.proc.pid: _comm(self.proc.pid)}
        self.lines = []
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if self.log is not subprocess.DEVNULL:
                try:
                    self.log.write(b"[stdout] " + raw)
                    self.log.flush()
                except ValueError:
                    return
            if line.startswith(self.ready_prefix):
                self._ready.set()

    def remember_tree(self):
        if self.proc.poll() is None:  # its name at Popen time may be ours (fork before exec)
            self.known[self.proc.pid] = _comm(self.proc.pid)
        for pid in bwtest.descendants(self.proc.pid):
            if pid not in self.known:
                self.known[pid] = _comm(pid)

    def blender_pids(self):
        self.remember_tree()
        return [p for p, c in self.known.items() if c.startswith("blender") and _comm(p) == c]

    def stop(self, shutdown_port=None, grace=10.0):
        if self.stopped:
            return
        self.stopped = True
        self.remember_tree()
        if self.proc.poll() is None and shutdown_port:
            try:
                _oneshot(shutdown_port, b'{"type": "server_shutdown", "params": {}}')
            except Exception:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.remember_tree()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is still alive from what we saw under it (Blender, xvfb-run, Xvfb), checked by
        # pid and name so a reused pid is never hit: its own group if it leads one, then itself.
        for pid, comm in self.known.items():
            if pid == self.proc.pid or _comm(pid) != comm:
                continue
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # Killed processes whose parent went first are reaped by init a moment later: wait for
        # that, so the next workload (and the "other Blender processes" count) starts clean.
        bwtest.poll_until(lambda: not any(_alive(p, c) for p, c in self.known.items()), 10.0, interval=0.02)
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)


def start_blendwire(gui, log_path, timeout=90.0, package=None):
    """`blendwire serve --port 0` (--gui); `package`: a directory holding another build's
    `blendwire` package (an unpacked wheel), served instead of the venv's."""
    cmd = [os.path.join(VENV_BIN, "blendwire")]
    if package:
        boot = f"import sys; sys.path.insert(0, {package!r}); from blendwire.cli import main; sys.exit(main())"
        cmd = [sys.executable, "-c", boot]
    cmd += ["serve", "--port", "0"] + (["--gui"] if gui else [])
    env = dict(os.environ)
    env.pop("BLD_REMOTE_MCP_START_NOW", None)
    srv = Server("blendwire-gui" if gui else "blendwire", cmd, env, log_path)
    if not srv._ready.wait(timeout):
        srv.stop()
        raise RuntimeError(f"{cmd} did not print its serving line within {timeout:.0f} s (log: {log_path})")
    line = next(ln for ln in srv.lines if ln.startswith("blendwire: serving on"))
    # blendwire: serving on HOST:PORT (Blender X.Y.Z, mode)
    addr = line.split("serving on", 1)[1].split()[0]
    srv.port = int(addr.rsplit(":", 1)[1])
    srv.banner = line.strip()
    srv.remember_tree()
    return srv


def _xvfb(cmd):
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return cmd
    return ["xvfb-run", "-a", "-s", "-screen 0 1280x720x24"] + cmd  # as `blendwire serve --gui`


def start_marked(name, cmd, prefix, log_path, env=None, timeout=90.0):
    """A Blender that prints a line starting with prefix when ready (plain Blender, the stand-in)."""
    srv = Server(name, cmd, env or dict(os.environ), log_path, ready_prefix=prefix)
    if not srv._ready.wait(timeout):
        srv.stop()
        raise RuntimeError(f"{name} did not print {prefix!r} within {timeout:.0f} s (log: {log_path})")
    srv.remember_tree()
    return srv


def _bridge_status(port):
    try:
        resp = _oneshot(port, b'{"type": "get_status", "params": {}}')
        b = resp["result"]["bridge"]
        return {k: b.get(k) for k in ("max_tick_ms", "max_job_ms", "completed")}
    except Exception as e:
        return {"error": repr(e)}


def _proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def peer_script():
    """What `blender-remote-cli start --background` writes to its temp script, plus two lines that
    load the add-on from the wheel instead of from an installed user config."""
    import blender_remote
    from blender_remote.cli.scripts import KEEPALIVE_SCRIPT

    addon_parent = os.path.join(os.path.dirname(blender_remote.__file__), "addon")
    load = (
        "import sys, addon_utils\n"
        f"sys.path.insert(0, {addon_parent!r})\n"
        "if addon_utils.enable('bld_remote_mcp', default_set=True) is None:\n"
        "    raise SystemExit('bench: could not enable bld_remote_mcp')\n"
    )
    # Verbatim from blender_remote/cli/commands/start.py (its startup code), then KEEPALIVE_SCRIPT.
    cli_startup = """
# Verify MCP environment configuration
import os
port = os.environ.get('BLD_REMOTE_MCP_PORT', 'not set')
start_now = os.environ.get('BLD_REMOTE_MCP_START_NOW', 'not set')
log_level = os.environ.get('BLD_REMOTE_LOG_LEVEL', 'not set')

print("[INFO] Environment: PORT=" + str(port) + ", START_NOW=" + str(start_now) + ", LOG_LEVEL=" + str(log_level))
print("[INFO] MCP service will start via addon auto-start mechanism")
"""
    return "\n".join([load, cli_startup, KEEPALIVE_SCRIPT])


def start_peer(blender, log_path, script_path, timeout=90.0):
    port = bwtest.free_port()
    with open(script_path, "w") as f:
        f.write(peer_script())
    env = dict(os.environ)
    env["BLD_REMOTE_MCP_PORT"] = str(port)
    env["BLD_REMOTE_MCP_START_NOW"] = "1"
    env["BLD_REMOTE_LOG_LEVEL"] = "INFO"  # the CLI's default (mcp_service.log_level or INFO)
    srv = Server("peer", [blender, "--background", "--python", script_path], env, log_path)
    srv.port = port

    def answers():  # ready = a get_scene_info answered (needs the keep-alive loop to be stepping)
        if srv.proc.poll() is not None:
            raise RuntimeError(f"peer Blender exited with {srv.proc.returncode} (log: {log_path})")
        try:
            return _ok(_oneshot(port, json.dumps(SCENE).encode()))
        except OSError:
            return False

    try:
        bwtest.wait_for(answers, timeout, f"the peer to answer (log: {log_path})", interval=0.2, error=RuntimeError)
    except BaseException:
        srv.stop()
        raise
    srv.remember_tree()
    return srv


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, pool):
        self.args = args
        self.pool = pool
        self.results = {}  # (server, workload) -> {"rounds": [...], "median": {...}}

    def _say(self, msg):
        print(msg, file=sys.stderr, flush=True)

    def sequential(self, server, srv, workload, kind, limits):
        max_calls, window, warmup = limits
        call, close = _make_caller(kind, srv.port)
        rounds = []
        try:
            _warm(call, warmup)
            for _ in range(self.args.rounds):
                bpids = srv.blender_pids()
                c0, m0 = _cpu_seconds(bpids), _machine_busy_s()
                rec = _run_loop(call, max_calls, time.monotonic() + window)
                st = _round_stats([rec], _cpu_seconds(bpids) - c0, _machine_busy_s() - m0, BATCH.get(kind, 1))
                rounds.append(st)
        finally:
            close()
        self._store(server, workload, rounds)

    def concurrent(self, server, srv, workload, kind, limits):
        max_calls, window, warmup = limits
        self._pooled_rounds(
            server,
            srv,
            workload,
            _worker,
            self.args.sync_s,
            N_CONCURRENT,
            lambda start_at: (kind, srv.port, warmup, start_at, window, max_calls),
        )

    def concurrent_multi(self, server, srv, workload, kind, limits, procs, per_proc):
        """procs processes x per_proc persistent connections each (selectors), all at once."""
        max_calls, window, warmup = limits
        self._pooled_rounds(
            server,
            srv,
            workload,
            _worker_multi,
            self.args.sync_s + 0.02 * procs * per_proc,
            procs,
            lambda start_at: (kind, srv.port, per_proc, warmup, start_at, window, max_calls),
        )

    def _pooled_rounds(self, server, srv, workload, worker, delay, n_jobs, job):
        """Rounds of `n_jobs` pool processes running `worker(job(start_at))`, all starting together."""
        rounds = []
        for _ in range(self.args.rounds):
            start_at = time.monotonic() + delay
            bpids = srv.blender_pids()
            res = self.pool.map_async(worker, [job(start_at)] * n_jobs)
            # CPU counters are read from the common start time to the pool's return: that includes
            # the tail of the round's fan-in, a small overcount.
            time.sleep(max(0.0, start_at - time.monotonic()))
            c0, m0 = _cpu_seconds(bpids), _machine_busy_s()
            recs = res.get()
            rounds.append(_round_stats(recs, _cpu_seconds(bpids) - c0, _machine_busy_s() - m0))
        self._store(server, workload, rounds)

    def big_transfer(self, server, port, payload, n, window):
        """n transfers (bounded by window seconds) of one big response on one persistent
        connection; seconds per transfer (median) and MB/s."""
        s = _connect(port)
        times, size, fails = [], 0, 0
        try:
            s.sendall(payload)
            _read_json_big(s)  # warm-up
            t_end = time.monotonic() + window
            for _ in range(self.args.rounds * n):
                a = time.perf_counter()
                s.sendall(payload)
                resp, size = _read_json_big(s)
                b = time.perf_counter()
                if _ok(resp):
                    times.append(b - a)
                else:
                    fails += 1
                if time.monotonic() > t_end:
                    break
        finally:
            s.close()
        med = statistics.median(times) if times else None
        r = {
            "transfers": len(times),
            "failures": fails,
            "bytes": size,
            "median_ms": med and med * 1e3,
            "min_ms": times and min(times) * 1e3,
            "max_ms": times and max(times) * 1e3,
            "mb_per_s": med and size / med / 1e6,
        }
        self.results[(server, "big_result")] = r
        self._say(
            f"  {server:14s} {'10 MB response':32s} {fmt(r['median_ms'], 1)} ms per transfer "
            f"({len(times)} transfers, {size:,} bytes)"
        )
        return r

    def idle(self, server, srv, seconds, settle=3.0):
        """CPU% (all threads of the Blender process) over `seconds`, then RSS and threads."""
        time.sleep(settle)
        pids = srv.blender_pids()
        c0, t0 = _cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        cpu = _cpu_seconds(pids) - c0
        wall = time.monotonic() - t0
        rss = sum(_proc_status(p).get("VmRSS", 0) for p in pids)
        thr = sum(_proc_status(p).get("Threads", 0) for p in pids)
        r = {
            "seconds": round(wall, 2),
            "cpu_pct": 100.0 * cpu / wall,
            "rss_mb": rss / 1024.0,
            "threads": thr,
            "pids": len(pids),
        }
        self.results[(server, "idle")] = r
        self._say(
            f"  {server:14s} {'idle':32s} CPU {r['cpu_pct']:.2f} %  RSS {r['rss_mb']:.1f} MB"
            f"  threads {thr}  (over {wall:.1f} s)"
        )
        return r

    def _store(self, server, workload, rounds):
        med = _median_of(rounds)
        self.results[(server, workload)] = {"rounds": rounds, "median": med}
        p99 = f"{med['p99_ms']:.3f}" if med["p99_ms"] is not None else "-"
        self._say(
            f"  {server:14s} {workload:32s} {med['calls_per_s']:10.1f} calls/s  "
            f"p99 {p99} ms  failures {med['failures']}"
        )


WORKLOADS = [
    # key, label, kind, concurrent?
    ("oneshot_scene", "one-shot connections, get_scene_info", "oneshot_scene", False),
    ("persistent_scene", "1 persistent conn., get_scene_info", "persistent_scene", False),
    ("persistent_exec", "1 persistent conn., execute_code print(1)", "persistent_exec", False),
    ("concurrent8_scene", f"{N_CONCURRENT} clients (processes), persistent, get_scene_info", "persistent_scene", True),
]


def machine_info():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def foreign_load():
    """Load average and Blender processes not started by this run (they skew the numbers)."""
    mine = {os.getpid()} | set(bwtest.descendants(os.getpid()))
    # Zombies do not count: this VM's init reaps exited orphans only now and then.
    others = [
        p
        for p in (int(d) for d in os.listdir("/proc") if d.isdigit())
        if p not in mine and _comm(p).startswith("blender") and _alive(p, _comm(p))
    ]
    for p in others:  # say which, so a skewed run can be explained
        try:
            with open(f"/proc/{p}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")[:160]
        except (OSError, ValueError):
            continue
        print(f"  other Blender process: pid {p} ppid {ppid} state {state}: {cmd}", file=sys.stderr)
    return {"loadavg": os.getloadavg(), "other_blender_processes": len(others)}


def blender_version(blender):
    try:
        out = subprocess.run([blender, "--version"], capture_output=True, text=True, timeout=60).stdout
        return out.splitlines()[0].strip()
    except Exception:
        return "?"


def fmt(v, digits):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def _cols(R, key):
    """calls/s, p50, p99 and failures of workload `key` as table cells (— when it did not run)."""
    r = R.get(key)
    if not r:
        return ["—"] * 4
    m = r["median"]
    return [
        fmt(m["calls_per_s"], 0 if m["calls_per_s"] >= 100 else 1),
        fmt(m["p50_ms"], 3),
        fmt(m["p99_ms"], 3),
        str(m["failures"]),
    ]


def _compare_row(R, label, a, b, digits):
    """A table row: the cells of workloads `a` and `b` side by side, then a's calls/s ÷ b's
    (`digits` after the point)."""
    ra, rb = R.get(a), R.get(b)
    rt = ratio(ra and ra["median"]["calls_per_s"], rb and rb["median"]["calls_per_s"])
    return (
        f"| {label} | "
        + " | ".join(_cols(R, a))
        + " | "
        + " | ".join(_cols(R, b))
        + f" | {fmt(rt, digits) + '×' if rt else '—'} |"
    )


def target_lines(targets):
    """One Markdown line per target verdict."""
    return [f"- {t['name']}: {t['value']} → **{t['verdict']}**" for t in targets]


def print_standalone(table, targets, log_dir):
    """What a row module's standalone run prints: its tables, its target verdicts, where the logs are."""
    print("\n".join(table + target_lines(targets)))
    print(f"logs: {log_dir}", file=sys.stderr)


def render(meta, bench):
    R = bench.results

    lines = [
        f"Date: {meta['date']} · machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu']}, "
        f"Linux {meta['machine']['kernel']} · {meta['blender']} · blendwire {meta['blendwire']} · "
        f"peer: blender-remote {meta['peer_version']} (BLD Remote MCP add-on) · load average "
        f"at start {meta['load_at_start']['loadavg'][0]:.2f}, other Blender processes at start/end: "
        f"{meta['load_at_start']['other_blender_processes']}/"
        f"{meta['load_at_end']['other_blender_processes']}",
        "",
        f"Medians of {meta['rounds']} rounds (warm-up excluded); failures are totals over all rounds. "
        "Ratio = blendwire calls/s ÷ peer calls/s in the same workload.",
        "",
        "| workload (Blender -b unless noted) | blendwire calls/s | p50 ms | p99 ms | fail "
        "| peer calls/s | p50 ms | p99 ms | fail | ratio |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, label, _kind, _conc in WORKLOADS:
        lines.append(_compare_row(R, label, ("blendwire", key), ("peer", key), 0))
    bw, pe = R.get(("blendwire", "concurrent64_scene")), R.get(("peer", "concurrent64_scene"))
    if bw or pe:
        label = (
            f"{MULTI_PROCS * MULTI_PER_PROC} clients ({MULTI_PROCS} processes × "
            f"{MULTI_PER_PROC} connections, selectors), persistent, get_scene_info"
        )
        lines.append(_compare_row(R, label, ("blendwire", "concurrent64_scene"), ("peer", "concurrent64_scene"), 0))
    bc, rc = R.get(("clients", "client_blendwire")), R.get(("clients", "client_blender_remote"))
    if bc or rc:
        label = (
            "Python client libraries on the blendwire server (-b), get_scene_info: "
            "`blendwire.Client` (left) vs `blender_remote.connect_to_blender()` (right)"
        )
        lines.append(_compare_row(R, label, ("clients", "client_blendwire"), ("clients", "client_blender_remote"), 1))
    bm = R.get(("clients", "client_blendwire_many"))
    if bm or rc:
        label = (
            f"same, pipelined: `blendwire.Client.call_many()` in batches of "
            f"{BATCH['client_blendwire_many']} (left; p50/p99 per batch) vs "
            "`blender_remote.connect_to_blender()` (right)"
        )
        lines.append(
            _compare_row(R, label, ("clients", "client_blendwire_many"), ("clients", "client_blender_remote"), 1)
        )
    lines += render_extra(R)
    lines += bench_interrupt.render(R)
    lines += bench_agents.render(R)
    lines += bench_mcp.render(R)
    lines.append("")
    lines.append(
        "Targets (issue 2: background, one persistent connection, get_scene_info; then issues 5, 12, 13 and 14):"
    )
    lines += target_lines(meta["targets"])
    lines.append("")
    lines.append(
        "CPU during the rounds (median, % of one core, 200 = both cores; server = the "
        "Blender process, all threads; other = everything else on the machine, e.g. "
        "other sessions' builds — it competes for the same 2 cores):"
    )
    lines.append("")
    lines.append(
        "| workload | blendwire: server % | client % | other processes % | peer: server % | client % | other % |"
    )
    lines.append("|---|--:|--:|--:|--:|--:|--:|")

    def cpu(r):
        m = r and r["median"]
        return " | ".join(fmt(m and m[k], 0) for k in ("server_cpu_pct", "client_cpu_pct", "other_cpu_pct"))

    for key, label, _k, _c in WORKLOADS + [("concurrent64_scene", "64 clients", "", True)]:
        lines.append(f"| {label} | {cpu(R.get(('blendwire', key)))} | {cpu(R.get(('peer', key)))} |")
    for key in ("persistent_scene", "persistent_exec", "concurrent8_scene"):
        if ("gui", key) in R or ("standin", key) in R:
            lines.append(
                f"| GUI: {key} (blendwire left, STAND-IN right) | {cpu(R.get(('gui', key)))}"
                f" | {cpu(R.get(('standin', key)))} |"
            )
    for key in ("client_blendwire", "client_blendwire_many", "client_blender_remote"):
        if ("clients", key) in R:
            lines.append(f"| client library: {key[7:]} | {cpu(R.get(('clients', key)))} | — | — | — |")
    lines.append("")
    lines.append("How the peer ran: " + meta["peer_how"])
    lines.append("")
    lines.append(f"Rerun: `./scripts/bench` (this run: `{meta['command']}`, {meta['elapsed_s']:.0f} s).")
    return "\n".join(lines)


def render_extra(R):
    """The issue-5 sections: GUI vs the blender-mcp stand-in, main-loop stall, 10 MB, idle."""

    L = []
    gui_rows = (
        ("persistent_scene", "1 persistent conn., get_scene_info"),
        ("persistent_exec", "1 persistent conn., execute_code print(1)"),
        ("concurrent8_scene", f"{N_CONCURRENT} clients (processes), persistent, get_scene_info"),
    )
    if any(("gui", k) in R or ("standin", k) in R for k, _ in gui_rows):
        L += [
            "",
            "GUI under Xvfb: blendwire vs a **STAND-IN** for the blender-mcp add-on "
            "(benches/blender_mcp_standin.py, not the real add-on, which is not on PyPI: it "
            "reproduces its documented dispatch — a socket server thread, one "
            "`bpy.app.timers.register` per command from the client thread, the result sent from "
            "the main thread).",
            "",
            "| workload (GUI, Xvfb) | blendwire calls/s | p50 ms | p99 ms | fail "
            "| STAND-IN calls/s | p50 ms | p99 ms | fail | ratio |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for key, label in gui_rows:
            L.append(_compare_row(R, label, ("gui", key), ("standin", key), 1))
    st = R.get(("gui", "stall"))
    if st:
        b0, b1 = st["before_flood"], st["after_flood"]
        L += [
            "",
            f"Longest main-loop stall (blendwire GUI, `get_status` bridge counters, maxima since "
            f"start-up; read before and after the {N_CONCURRENT}-client flood): max_tick_ms "
            f"{fmt(b0.get('max_tick_ms'), 3)} → {fmt(b1.get('max_tick_ms'), 3)}, max_job_ms "
            f"{fmt(b0.get('max_job_ms'), 3)} → {fmt(b1.get('max_job_ms'), 3)}; tick budget "
            f"{st['tick_budget_ms']:.0f} ms (limit: budget + one job = "
            f"{fmt(st['tick_budget_ms'] + (b1.get('max_job_ms') or 0), 3)} ms).",
        ]
    a, b = R.get(("blendwire", "big_result")), R.get(("loopback", "big_result"))
    if a or b:
        L += [
            "",
            "10 MB result on one persistent connection (same read loop for both; median "
            "time per transfer, request sent → whole JSON parsed). blendwire's `execute_code` "
            "response carries stdout twice (`result` and `output.stdout`), so about 20 MB go over "
            "the wire; the loopback copy sends the same number of bytes:",
            "",
            "| transfer | bytes | ms per transfer (median) | min ms | max ms | MB/s | transfers | × loopback |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for _name, r, label in (
            ("blendwire", a, "blendwire -b, `execute_code` printing 10 MB"),
            ("loopback", b, "plain loopback copy (Python server process sends the same number of bytes)"),
        ):
            if r:
                rt = ratio(r["median_ms"], b and b["median_ms"])
                L.append(
                    f"| {label} | {r['bytes']:,} | {fmt(r['median_ms'], 1)} | "
                    f"{fmt(r['min_ms'] or None, 1)} | {fmt(r['max_ms'] or None, 1)} | "
                    f"{fmt(r['mb_per_s'], 0)} | {r['transfers']} | "
                    f"{fmt(rt, 2) + '×' if rt else '—'} |"
                )
    idle_rows = (("blendwire-gui", "plain-gui", "Blender GUI (Xvfb)"), ("blendwire-b", "plain-b", "Blender -b"))
    if any(R.get((k, "idle")) for row in idle_rows for k in row[:2]):
        L += [
            "",
            "Idle cost (Blender process, all threads; CPU % of one core over the window, "
            "RSS and thread count at its end):",
            "",
            "| mode | blendwire idle: CPU % | RSS MB | threads | without: CPU % | RSS MB | threads "
            "| Δ CPU % | Δ RSS MB | Δ threads | window s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for bk, pk, label in idle_rows:
            x, y = R.get((bk, "idle")), R.get((pk, "idle"))
            if not (x or y):
                continue

            def c(r):
                return f"{fmt(r['cpu_pct'], 2)} | {fmt(r['rss_mb'], 1)} | {r['threads']}" if r else "— | — | —"

            d = (
                f"{x['cpu_pct'] - y['cpu_pct']:+.2f} | {x['rss_mb'] - y['rss_mb']:+.1f} | "
                f"{x['threads'] - y['threads']:+d}"
                if x and y
                else "— | — | —"
            )
            win = (x or y)["seconds"]
            extra = (
                " (blendwire: service pumping idle; without: `time.sleep(1)` loop in Python)"
                if bk == "blendwire-b"
                else " (without: plain Blender, no add-on)"
            )
            L.append(f"| {label}{extra} | {c(x)} | {c(y)} | {d} | {win:.0f} |")
    return L


def targets(bench):
    R = bench.results
    out = []
    bw = R.get(("blendwire", "persistent_scene"))
    pe = R.get(("peer", "persistent_scene"))
    if bw and pe:
        rt = ratio(bw["median"]["calls_per_s"], pe["median"]["calls_per_s"])
        out.append(
            {
                "name": "calls/s ≥ 50× the peer's (same workload)",
                "value": f"{rt:,.0f}× ({bw['median']['calls_per_s']:,.0f} vs "
                f"{pe['median']['calls_per_s']:,.1f} calls/s)",
                "verdict": "pass" if rt and rt >= 50 else "MISS",
            }
        )
    if bw:
        p99 = bw["median"]["p99_ms"]
        worst = max(r["p99_ms"] for r in bw["rounds"])
        out.append(
            {
                "name": "p99 < 1 ms",
                "value": f"{p99:.3f} ms (worst round {worst:.3f} ms)",
                "verdict": "pass" if p99 < 1.0 else "MISS",
            }
        )
    out += targets5(R)
    out += bench_interrupt.targets(R)
    out += bench_agents.targets(R)
    out += bench_mcp.targets(R)
    return out


def targets5(R):
    """Issue 5's targets that these workloads measure."""
    out = []

    def med(k, f):
        r = R.get(k)
        return r and r["median"][f]

    bw, pe = R.get(("blendwire", "persistent_scene")), R.get(("peer", "persistent_scene"))
    if bw and pe:
        rt = ratio(bw["median"]["calls_per_s"], pe["median"]["calls_per_s"])
        p99 = bw["median"]["p99_ms"]
        out.append(
            {
                "name": "issue 5: background, 1 persistent connection ≥ 500× the peer, p99 < 0.5 ms",
                "value": f"{fmt(rt, 0)}× ({bw['median']['calls_per_s']:,.0f} vs "
                f"{pe['median']['calls_per_s']:,.1f} calls/s), p99 {p99:.3f} ms",
                "verdict": "pass" if rt and rt >= 500 and p99 < 0.5 else "MISS",
            }
        )
    bw, pe = R.get(("blendwire", "concurrent64_scene")), R.get(("peer", "concurrent64_scene"))
    if bw and pe:
        m = bw["median"]
        rt = ratio(m["calls_per_s"], pe["median"]["calls_per_s"])
        # What the 64 client processes alone allow: their own CPU per call, all cores theirs.
        ceiling = ""
        if m["client_cpu_pct"] and m["calls_per_s"]:
            client_us = 1e6 * m["client_cpu_pct"] / 100.0 / m["calls_per_s"]
            top = (os.cpu_count() or 1) * 1e6 / client_us
            ceiling = (
                f"; the clients alone spend {client_us:.0f} µs CPU per call, so even a server "
                f"costing nothing would get at most {top:,.0f} calls/s on "
                f"{os.cpu_count()} cores = {top / pe['median']['calls_per_s']:,.0f}× the peer"
            )
        out.append(
            {
                "name": "issue 5: 64 clients (-b) ≥ 100× the peer, zero failures",
                "value": f"{fmt(rt, 0)}× ({m['calls_per_s']:,.0f} vs "
                f"{pe['median']['calls_per_s']:,.0f} calls/s), failures {m['failures']}" + ceiling,
                "verdict": "pass" if rt and rt >= 100 and m["failures"] == 0 else "MISS",
            }
        )
    rc = med(("clients", "client_blender_remote"), "calls_per_s")
    for key, how in (
        ("client_blendwire", "one call at a time"),
        ("client_blendwire_many", f"call_many, batches of {BATCH['client_blendwire_many']}"),
    ):
        bc = med(("clients", key), "calls_per_s")
        if bc and rc:
            out.append(
                {
                    "name": f"issue 5: `blendwire.Client` ≥ 5× the blender-remote client ({how})",
                    "value": f"{bc / rc:,.1f}× ({bc:,.0f} vs {rc:,.0f} calls/s)",
                    "verdict": "pass" if bc / rc >= 5 else "MISS",
                }
            )
    a, b = med(("gui", "concurrent8_scene"), "calls_per_s"), med(("standin", "concurrent8_scene"), "calls_per_s")
    if a and b:
        out.append(
            {
                "name": "issue 5: GUI, 8 clients ≥ 5× the blender-mcp-style STAND-IN",
                "value": f"{a / b:,.1f}× ({a:,.0f} vs {b:,.0f} calls/s)",
                "verdict": "pass" if a / b >= 5 else "MISS",
            }
        )
    p50, p99 = med(("gui", "persistent_scene"), "p50_ms"), med(("gui", "persistent_scene"), "p99_ms")
    if p50 is not None:
        out.append(
            {
                "name": "issue 5: GUI, 1 client p50 ≤ 3 ms and p99 ≤ 8 ms",
                "value": f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
                "verdict": "pass" if p50 <= 3 and p99 <= 8 else "MISS",
            }
        )
    st = R.get(("gui", "stall"))
    if st and st["after_flood"].get("max_tick_ms") is not None:
        t, j = st["after_flood"]["max_tick_ms"], st["after_flood"]["max_job_ms"] or 0
        out.append(
            {
                "name": "issue 5: GUI, longest main-loop tick ≤ tick budget (8 ms) + one job",
                "value": f"max_tick {t:.3f} ms vs {TICK_BUDGET_MS + j:.3f} ms (max_job {j:.3f} ms)",
                "verdict": "pass" if t <= TICK_BUDGET_MS + j else "MISS",
            }
        )
    x, y = R.get(("blendwire", "big_result")), R.get(("loopback", "big_result"))
    if x and y and x["median_ms"] and y["median_ms"]:
        rt = x["median_ms"] / y["median_ms"]
        out.append(
            {
                "name": "issue 5: 10 MB result within 3× the plain loopback copy",
                "value": f"{rt:.2f}× ({x['median_ms']:.1f} vs {y['median_ms']:.1f} ms)",
                "verdict": "pass" if rt <= 3 else "MISS",
            }
        )
    for ours, plain, what in (
        ("blendwire-gui", "plain-gui", "GUI idle < 1 % CPU and < 10 MB RSS over plain Blender"),
        ("blendwire-b", "plain-b", "-b idle (`blendwire serve`) < 1 % CPU and < 10 MB RSS over plain `blender -b`"),
    ):
        x, y = R.get((ours, "idle")), R.get((plain, "idle"))
        if not (x and y):
            continue
        dc, dr, dt = x["cpu_pct"] - y["cpu_pct"], x["rss_mb"] - y["rss_mb"], x["threads"] - y["threads"]
        out.append(
            {
                "name": f"issue 5: {what}, ≤ 3 extra threads",
                "value": f"{dc:+.2f} % CPU, {dr:+.1f} MB, {dt:+d} threads",
                "verdict": "pass" if dc < 1 and dr < 10 and dt <= 3 else "MISS",
            }
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=2.0, help="seconds per round for blendwire (default 2)")
    ap.add_argument(
        "--peer-window",
        type=float,
        default=8.0,
        help="max seconds per round for the peer (default 8; rounds also stop at --peer-calls)",
    )
    ap.add_argument(
        "--peer-calls", type=int, default=100, help="max calls per round for the peer (per client when concurrent)"
    )
    ap.add_argument("--blender", default=os.environ.get("BLENDER", "/usr/bin/blender"))
    ap.add_argument("--no-gui", action="store_true")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 round, short windows (smoke test)")
    ap.add_argument("--results-md", default=os.path.join(ROOT, "benches", "RESULTS.md"))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.window, args.peer_window, args.peer_calls = 1, 0.5, 3.0, 30
    args.sync_s = 0.6
    args.idle_gui = 5.0 if args.quick else 30.0
    args.idle_b = 3.0 if args.quick else 10.0

    t_start = time.monotonic()
    stamp = _dt.datetime.now().astimezone()
    out_dir = os.path.join(ROOT, "bench_results")
    os.makedirs(out_dir, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="blendwire-bench-")

    # SIGINT (even if inherited as ignored), SIGTERM and SIGHUP: unwind through the finally blocks.
    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    import importlib.metadata as md

    meta = {
        "date": stamp.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(),
        "blender": blender_version(args.blender),
        "blendwire": md.version("blendwire"),
        "peer_version": md.version("blender-remote"),
        "rounds": args.rounds,
        "limits": {},
        "command": " ".join(["scripts/bench"] + sys.argv[1:]),
        "logs": log_dir,
    }
    meta["peer_how"] = (
        f"`{args.blender} --background --python SCRIPT` with BLD_REMOTE_MCP_PORT=<free port>, "
        "BLD_REMOTE_MCP_START_NOW=1, BLD_REMOTE_LOG_LEVEL=INFO, where SCRIPT = the startup code "
        "and KEEPALIVE_SCRIPT of `blender-remote-cli start --background` (the keep-alive loop "
        "calling `bld_remote.step()` then sleeping 50 ms), preceded by two lines that put the "
        "wheel's `blender_remote/addon/` on sys.path and `addon_utils.enable('bld_remote_mcp')` "
        "(instead of `blender-remote-cli install` into the user config; nothing is saved)."
    )
    meta["load_at_start"] = foreign_load()
    if meta["load_at_start"]["other_blender_processes"]:
        print(
            f"WARNING: {meta['load_at_start']['other_blender_processes']} Blender process(es) "
            "not started by this run are running: the numbers will be skewed",
            file=sys.stderr,
        )
    print(f"# blendwire benchmark — {meta['date']}", file=sys.stderr)
    print(
        f"machine: nproc={meta['machine']['nproc']}, CPU: {meta['machine']['cpu']}; "
        f"{meta['blender']}; logs in {log_dir}",
        file=sys.stderr,
        flush=True,
    )

    bw_seq = (20000, args.window, 200)  # max calls, seconds, warm-up calls
    bw_oneshot = (6000, args.window, 100)
    bw_conc = (20000, args.window, 50)  # per client
    pe_seq = (args.peer_calls, args.peer_window, 5)
    pe_conc = (args.peer_calls, args.peer_window, 3)  # per client
    bw_conc64 = (20000, args.window, 20)  # per connection
    pe_conc64 = (max(5, args.peer_calls // 4), args.peer_window, 1)  # per connection
    meta["limits"] = {
        "blendwire_sequential": bw_seq,
        "blendwire_oneshot": bw_oneshot,
        "blendwire_concurrent_per_client": bw_conc,
        "peer_sequential": pe_seq,
        "peer_concurrent_per_client": pe_conc,
        "blendwire_64_per_connection": bw_conc64,
        "peer_64_per_connection": pe_conc64,
        "idle_seconds": {"gui": args.idle_gui, "background": args.idle_b},
        "limit_fields": ["max calls per round", "max seconds per round", "warm-up calls"],
    }

    pool = mp.get_context("spawn").Pool(N_CONCURRENT, initializer=_worker_init)
    bench = Bench(args, pool)
    interrupted = failed = False
    try:
        # Spin the pool's processes up (import time) outside any measurement.
        pool.map(abs, range(N_CONCURRENT * 2))

        print("blendwire (blender -b):", file=sys.stderr, flush=True)
        srv = start_blendwire(False, os.path.join(log_dir, "blendwire.log"))
        meta["blendwire_banner"] = srv.banner
        for key, _label, kind, conc in WORKLOADS:
            lim = bw_conc if conc else (bw_oneshot if kind == "oneshot_scene" else bw_seq)
            (bench.concurrent if conc else bench.sequential)("blendwire", srv, key, kind, lim)
        bench.concurrent_multi(
            "blendwire", srv, "concurrent64_scene", "persistent_scene", bw_conc64, MULTI_PROCS, MULTI_PER_PROC
        )
        big = bench.big_transfer("blendwire", srv.port, BIG_EXEC, 3, 10.0 if not args.quick else 3.0)
        bench.idle("blendwire-b", srv, args.idle_b)
        print("Python client libraries against the blendwire server:", file=sys.stderr, flush=True)
        bench.sequential("clients", srv, "client_blendwire", "client_blendwire", bw_seq)
        bench.sequential("clients", srv, "client_blendwire_many", "client_blendwire_many", bw_seq)
        bench.sequential("clients", srv, "client_blender_remote", "client_blender_remote", bw_oneshot)
        print("issue 12 (runaway jobs interrupted; the machinery's cost), blender -b:", file=sys.stderr, flush=True)
        bench_interrupt.run(bench, srv, "b")
        srv.stop(shutdown_port=srv.port)

        print("plain loopback copy of the same response bytes (Python server process):", file=sys.stderr, flush=True)
        blob = os.path.join(log_dir, "big_response.json")
        with open(blob, "wb") as f:
            head, tail = b'{"status": "success", "result": {"executed": true, "result": "', b'"}}'
            f.write(head + b"x" * max(0, (big["bytes"] or BIG_BYTES) - len(head) - len(tail)) + tail)
        srv = Server(
            "loopback",
            [sys.executable, "-c", LOOPBACK_SERVER, blob],
            dict(os.environ),
            os.path.join(log_dir, "loopback.log"),
            ready_prefix="",
        )
        if not srv._ready.wait(30):
            raise RuntimeError("loopback server did not start")
        srv.port = int(srv.lines[0])
        bench.big_transfer("loopback", srv.port, b"{}", 3, 10.0 if not args.quick else 3.0)
        srv.stop()

        print("plain blender -b sleeping in Python (time.sleep loop):", file=sys.stderr, flush=True)
        srv = start_marked(
            "plain-b",
            [
                args.blender,
                "-b",
                "--python-expr",
                "import time\nprint('bench: plain ready', flush=True)\nwhile True:\n    time.sleep(1)",
            ],
            "bench: plain ready",
            os.path.join(log_dir, "plain-b.log"),
        )
        bench.idle("plain-b", srv, args.idle_b)
        srv.stop()

        if not args.no_peer:
            print("peer (blender-remote 1.3.3 add-on, blender -b, keep-alive loop):", file=sys.stderr, flush=True)
            srv = start_peer(
                args.blender, os.path.join(log_dir, "peer.log"), os.path.join(log_dir, "peer_start_script.py")
            )
            for key, _label, kind, conc in WORKLOADS:
                (bench.concurrent if conc else bench.sequential)("peer", srv, key, kind, pe_conc if conc else pe_seq)
            bench.concurrent_multi(
                "peer", srv, "concurrent64_scene", "persistent_scene", pe_conc64, MULTI_PROCS, MULTI_PER_PROC
            )
            srv.stop()  # its server_shutdown leaves the keep-alive loop running: SIGTERM

        if not args.no_gui:
            print(
                "blendwire (GUI" + ("" if os.environ.get("DISPLAY") else ", xvfb-run") + "):",
                file=sys.stderr,
                flush=True,
            )
            srv = start_blendwire(True, os.path.join(log_dir, "blendwire-gui.log"))
            meta["gui_banner"] = srv.banner
            bench.idle("blendwire-gui", srv, args.idle_gui)
            st0 = _bridge_status(srv.port)
            bench.concurrent("gui", srv, "concurrent8_scene", "persistent_scene", bw_conc)
            st1 = _bridge_status(srv.port)
            bench.results[("gui", "stall")] = {
                "before_flood": st0,
                "after_flood": st1,
                "tick_budget_ms": TICK_BUDGET_MS,
            }
            bench._say(
                f"  gui max_tick_ms {st0.get('max_tick_ms')} -> {st1.get('max_tick_ms')}, "
                f"max_job_ms {st0.get('max_job_ms')} -> {st1.get('max_job_ms')}"
            )
            bench.sequential("gui", srv, "persistent_scene", "persistent_scene", bw_seq)
            bench.sequential("gui", srv, "persistent_exec", "persistent_exec", bw_seq)
            print("issue 12 (runaway jobs interrupted; the machinery's cost), GUI:", file=sys.stderr, flush=True)
            bench_interrupt.run(bench, srv, "gui")
            srv.stop(shutdown_port=srv.port)

            print("issue 13 (the agents' add-on protocols), -b and GUI:", file=sys.stderr, flush=True)
            bench_agents.run(bench, log_dir)

            print("plain Blender GUI (no add-on), idle:", file=sys.stderr, flush=True)
            srv = start_marked(
                "plain-gui",
                _xvfb([args.blender, "--python-expr", "print('bench: plain ready', flush=True)"]),
                "bench: plain ready",
                os.path.join(log_dir, "plain-gui.log"),
            )
            bench.idle("plain-gui", srv, args.idle_gui)
            srv.stop()

            print(
                "STAND-IN for blender-mcp's dispatch (benches/blender_mcp_standin.py), GUI:",
                file=sys.stderr,
                flush=True,
            )
            env = dict(os.environ)
            env["BENCH_STANDIN_PORT"] = str(bwtest.free_port())
            srv = start_marked(
                "standin",
                _xvfb([args.blender, "--python", STANDIN]),
                "blender-mcp-standin: serving on",
                os.path.join(log_dir, "standin.log"),
                env=env,
            )
            srv.port = int(env["BENCH_STANDIN_PORT"])
            bench.sequential("standin", srv, "persistent_scene", "persistent_scene", bw_seq)
            bench.sequential("standin", srv, "persistent_exec", "persistent_exec", bw_seq)
            bench.concurrent("standin", srv, "concurrent8_scene", "persistent_scene", bw_conc)
            srv.stop()

        print("issue 14 (MCP servers through one `mcp` client):", file=sys.stderr, flush=True)
        bench_mcp.run(bench, log_dir, ("b",) if args.no_gui else ("b", "gui"))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping everything this run started", file=sys.stderr)
    except Exception:
        failed = True
        traceback.print_exc()
        print("error: stopping everything this run started; the table is partial", file=sys.stderr)
    finally:
        # Ignore further Ctrl-C while cleaning up, so the cleanup itself is not cut short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for srv in list(LIVE_SERVERS):
            srv.stop()
        pool.terminate()
        pool.join()

    meta["elapsed_s"] = time.monotonic() - t_start
    meta["load_at_end"] = foreign_load()
    meta["targets"] = targets(bench)
    meta["complete"] = not (interrupted or failed)
    table = render(meta, bench)
    print(table)

    doc = {"meta": meta, "results": [{"server": s, "workload": w, **r} for (s, w), r in bench.results.items()]}
    path = os.path.join(out_dir, f"bench-{stamp.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nJSON: {path}", file=sys.stderr)
    if meta["complete"] and not args.quick and args.results_md:
        with open(args.results_md, "w") as f:
            f.write("# Benchmark results (latest full run of `scripts/bench`)\n\n" + table + "\n")
        print(f"table: {args.results_md}", file=sys.stderr)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())

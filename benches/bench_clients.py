"""The benches' one raw-protocol client (the same code for every server), the workers that drive it
from pool processes, and the statistics of a round; the benches' shared constants."""

import json
import math
import os
import signal
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bw_json  # noqa: E402
import bw_net  # noqa: E402

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


def client_connect(port):
    return bw_net.connect(port, HOST, timeout=CLIENT_TIMEOUT)  # TCP_NODELAY


def _roundtrip(sock, payload):
    """Send one request; read until the bytes parse as one JSON object; return it."""
    sock.sendall(payload)
    return bw_json.read_json(sock, whole=True)[0]


def is_success(resp):
    return isinstance(resp, dict) and resp.get("status") == "success"


class _Persistent:
    def __init__(self, port):
        self.port = port
        self.sock = None

    def call(self, payload):
        if self.sock is None:
            self.sock = client_connect(self.port)
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


def oneshot(port, payload):
    s = client_connect(port)
    try:
        return _roundtrip(s, payload)
    finally:
        s.close()


# Workloads whose call() makes several calls at once (pipelined): calls per call().
BATCH = {"client_blendwire_many": 32}


def make_caller(kind, port):
    """Return (call, close): call() -> bool success. kind selects connection style and request,
    or one of the two Python client libraries."""
    if kind == "oneshot_scene":
        p = json.dumps(SCENE).encode()
        return (lambda: is_success(oneshot(port, p))), (lambda: None)
    if kind in ("persistent_scene", "persistent_exec"):
        p = json.dumps(SCENE if kind == "persistent_scene" else EXEC).encode()
        conn = _Persistent(port)
        return (lambda: is_success(conn.call(p))), conn.close
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


def run_loop(call, max_calls, t_end):
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


def warm_up(call, n):
    for _ in range(n):
        try:
            call()
        except Exception:
            pass


def client_worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it terminates us)


def client_worker(args):
    """One concurrent client (runs in its own process): connect, warm up, wait for the common
    start time, then run until the common deadline or max_calls."""
    kind, port, warmup, start_at, window_s, max_calls = args
    call, close = make_caller(kind, port)
    try:
        warm_up(call, warmup)
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return run_loop(call, max_calls, start_at + window_s)
    finally:
        close()


def client_worker_multi(args):
    """One process driving n_conn persistent connections at once with selectors (each connection
    has at most one request in flight; the next request goes out as soon as its answer is whole).
    Same request bytes and completion rule (the bytes parse as one JSON object) as _roundtrip."""
    import selectors

    kind, port, n_conn, warmup, start_at, window_s, max_calls = args
    payload = json.dumps(SCENE if kind == "persistent_scene" else EXEC).encode()
    socks, errors = [], {}
    for _ in range(n_conn):
        try:
            s = client_connect(port)
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
            parsed = bw_json.parse_one(st[0], whole=True)
            if parsed is None:
                continue
            resp = parsed[0]
            b = perf()
            if is_success(resp):
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


def read_json_big(sock):
    """The read loop for the 10 MB workload (blendwire and the plain loopback copy alike): chunks
    of 1 MiB into a bytearray; a parse is tried only when the bytes so far end with '}'.
    Returns (response, bytes)."""
    resp, size, _ = bw_json.read_json(sock, whole=True, recv_size=1 << 20, ends_with=b"}")
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


def round_stats(records, server_cpu_s=None, machine_busy_s=None, batch=1):
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


def median_of(rounds):
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

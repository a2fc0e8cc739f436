"""Soak run (issue 4; not part of CI): mixed load against `blendwire serve` on blender -b for a
while, restarting a python-socketio engine peer every few minutes, then a table per window:
calls, failures, p99 latency, RSS of the Blender process.

    scripts/soak [--minutes 30] [--window 5] [--peer-every 3] [--runtime background|bpy]

Load (threads in this process):
  one-shot     connect, get_scene_info, close (the blender-remote client's pattern)
  persistent   4 connections: get_scene_info / execute_code (print, and bpy.data churn) / persist
  bad input    junk bytes, malformed JSON, too-deep JSON, unknown command, an oversized request:
               each must get an error (or a close for oversized), then a good call must succeed
  socketio     the engine peer sends a cr8_router command every 0.5 s; a reply must arrive
               within 60 s; the peer is SIGKILLed and restarted every --peer-every minutes (the
               commands sent while it is down do not count; after each restart Blender must
               reconnect within 60 s)
A failure is any unexpected answer, a closed connection, or a timeout. Exit status 1 if any.
"""

import argparse
import bisect
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))

import bw_json  # noqa: E402
import bw_net  # noqa: E402
import bw_serve  # noqa: E402
import bw_wait  # noqa: E402

# latency histogram: log buckets from 10 µs to 100 s, 5% wide
_BOUNDS = [1e-5 * 1.05**i for i in range(int(math.log(1e7) / math.log(1.05)) + 2)]


class Window:
    def __init__(self):
        self.calls = {}
        self.failures = {}
        self.hist = [0] * (len(_BOUNDS) + 1)
        self.examples = []
        self.rss_kib = None
        self.rss_max_kib = 0

    def p99_ms(self):
        n = sum(self.hist)
        if not n:
            return None
        target, seen = math.ceil(0.99 * n), 0
        for i, c in enumerate(self.hist):
            seen += c
            if seen >= target:
                return _BOUNDS[min(i, len(_BOUNDS) - 1)] * 1000
        return None


class Stats:
    def __init__(self, t0, window_s):
        self.t0, self.window_s = t0, window_s
        self.windows = {}
        self.lock = threading.Lock()

    def _win(self, t):
        return self.windows.setdefault(int((t - self.t0) // self.window_s), Window())

    def record(self, kind, seconds, ok, detail=None):
        now = time.monotonic()
        with self.lock:
            w = self._win(now)
            w.calls[kind] = w.calls.get(kind, 0) + 1
            if ok:
                w.hist[bisect.bisect_left(_BOUNDS, seconds)] += 1
            else:
                w.failures[kind] = w.failures.get(kind, 0) + 1
                if len(w.examples) < 5:
                    w.examples.append(f"{kind}: {detail}"[:300])

    def rss(self, kib):
        with self.lock:
            w = self._win(time.monotonic())
            w.rss_kib = kib
            w.rss_max_kib = max(w.rss_max_kib, kib)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def timed(stats, kind, fn):
    t = time.monotonic()
    try:
        ok, detail = fn()
    except Exception as e:
        ok, detail = False, repr(e)
    stats.record(kind, time.monotonic() - t, ok, detail)


def is_success(resp):
    return isinstance(resp, dict) and resp.get("status") == "success", resp


def is_error(resp):
    return isinstance(resp, dict) and resp.get("status") == "error" and bool(resp.get("message")), resp


# ---- load kinds --------------------------------------------------------------------------------


def one_shot(port, stats, stop):
    while not stop.is_set():
        timed(stats, "one-shot", lambda: is_success(bw_json.request(port, "get_scene_info", timeout=60)))


def persistent(port, stats, stop, i):
    rnd = random.Random(i)
    conn = None
    while not stop.is_set():
        if conn is None:
            conn = bw_json.Conn(port, timeout=60)
        choice = rnd.random()
        if choice < 0.4:
            req = {"type": "get_scene_info", "params": {}}
            check = is_success
        elif choice < 0.7:
            n = rnd.randrange(1000)
            req = {"type": "execute_code", "params": {"code": f"print({n} * 2)"}}

            def check(r, n=n):
                return (is_success(r)[0] and r["result"]["result"] == f"{n * 2}\n", r)
        elif choice < 0.85:
            # churn Blender data: create and remove a mesh with some vertices
            code = "m = bpy.data.meshes.new('soak')\nm.vertices.add(1000)\nbpy.data.meshes.remove(m)\nprint('ok')"
            req = {"type": "execute_code", "params": {"code": code}}
            check = is_success
        else:
            key = f"soak-{i}-{rnd.randrange(50)}"
            req = {"type": "put_persist_data", "params": {"key": key, "data": {"x": "y" * rnd.randrange(2000)}}}
            check = is_success

        def call(check=check, conn=conn, req=req):
            return check(conn.request(req, timeout=60))

        before = stats_failures(stats)
        timed(stats, "persistent", call)
        if stats_failures(stats) != before:  # the connection may be unusable now: start afresh
            try:
                conn.close()
            except OSError:
                pass
            conn = None
    if conn is not None:
        conn.close()


def stats_failures(stats):
    with stats.lock:
        return sum(sum(w.failures.values()) for w in stats.windows.values())


def bad_input(port, stats, stop):
    rnd = random.Random(7)
    cases = [
        ("junk", lambda: bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 2000))), "error-or-close"),
        ("malformed", lambda: b'{"type": get_scene_info, "params": {}}', "error"),
        ("too-deep", lambda: b'{"type": "x", "params": ' + b"[" * 500 + b"]" * 500 + b"}", "error"),
        ("unknown", lambda: json.dumps({"type": "no_such_cmd", "params": {}}).encode(), "error"),
        ("not-object", lambda: b"[1, 2, 3]", "error"),
    ]
    n = 0
    while not stop.is_set():
        n += 1
        if n % 200 == 0:
            name, make, expect = "oversized", lambda: None, "oversized"
        else:
            name, make, expect = rnd.choice(cases)

        def one(expect=expect, make=make):
            with socket.create_connection((bw_net.HOST, port), timeout=60) as s:
                if expect == "oversized":
                    s.settimeout(60)
                    try:
                        s.sendall(b'{"type": "execute_code", "params": {"code": "')
                        chunk = b"x" * (1 << 20)
                        for _ in range(70):  # over the 64 MiB limit
                            s.sendall(chunk)
                    except OSError:
                        pass
                    data = bw_json.read_until_eof(s)[0]
                    return (b"request_too_large" in data, data[:200])
                s.sendall(make())
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                data = bw_json.read_until_eof(s)[0]
            if expect == "error-or-close" and not data.strip():
                return True, None
            values = bw_json.parse_all(data, lenient=True)
            return (bool(values) and all(is_error(v)[0] for v in values), data[:200])

        timed(stats, "bad input", one)
        # and a good call right after
        timed(stats, "bad input", lambda: is_success(bw_json.request(port, "get_polyhaven_status", timeout=60)))


def socketio_load(peer, stats, stop, restart_every_s, events):
    """A cr8_router command every 0.5 s while the peer is up; SIGKILL + restart on schedule."""
    next_restart = time.monotonic() + restart_every_s
    pending = {}  # message_id -> sent time
    scanned = 0
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_restart:
            # commands still unanswered when the engine dies are lost with it (the engine would
            # resend): they are not counted
            pending.clear()
            peer.kill()
            peer.start()
            mark = len(peer.records)
            t = time.monotonic()
            try:
                peer.wait_connected(timeout=60, start=mark)
                stats.record("socketio reconnect", time.monotonic() - t, True)
                events.append(
                    f"{time.monotonic() - stats.t0:7.1f}s engine peer restarted, "
                    f"Blender reconnected in {time.monotonic() - t:.2f}s"
                )
            except AssertionError as e:
                stats.record("socketio reconnect", time.monotonic() - t, False, str(e)[:200])
            scanned = len(peer.records)
            next_restart = time.monotonic() + restart_every_s
            continue
        mid = peer.send_command("cr8_router", "get_available_addons")
        pending[mid] = time.monotonic()
        stop.wait(0.5)
        recs = peer.snapshot(scanned)
        scanned += len(recs)
        for r in recs:
            if r.get("kind") == "event" and r.get("event") in ("command_completed", "command_failed"):
                data = r.get("data") or {}
                sent = pending.pop(data.get("message_id"), None)
                if sent is not None:
                    ok = r["event"] == "command_completed"
                    stats.record("socketio", r["t"] - sent, ok, None if ok else json.dumps(data)[:200])
        for mid, sent in list(pending.items()):
            if time.monotonic() - sent > 60:
                pending.pop(mid)
                stats.record("socketio", 60.0, False, f"no reply to {mid} within 60 s")


# ---- main ----------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=5.0, help="minutes per table row (default 5)")
    ap.add_argument("--peer-every", type=float, default=3.0, help="restart the engine peer every N minutes")
    ap.add_argument("--runtime", choices=["background", "bpy"], default="background")
    args = ap.parse_args()

    help_text = subprocess.run(
        bw_serve.blendwire_command() + ["serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    router = "--engine-url" in help_text
    peer = None
    extra = []
    notes = []
    if router:
        from engine_peer import EnginePeer

        peer = EnginePeer(token="soak-token").start()
        extra = ["--engine-url", peer.url, "--watchdog-seconds", "0", "--backoff-initial", "0.2", "--backoff-max", "1"]
    else:
        notes.append("blendwire serve has no --engine-url: the Socket.IO peer part is skipped")

    sp = None
    threads = []
    stop = threading.Event()
    events = []
    try:
        sp = bw_serve.start_serve(args.runtime, extra=extra, env={"CR8_AUTH_TOKEN": "soak-token"})
        pid = int(
            bw_json.request(sp.port, "execute_code", {"code": "import os\nprint(os.getpid())"})["result"]["result"]
        )
        if peer:
            peer.wait_connected(timeout=60)
        t0 = time.monotonic()
        stats = Stats(t0, args.window * 60)
        print(
            f"soak: {args.runtime} Blender {sp.version} pid {pid} on port {sp.port}, "
            f"{args.minutes:g} min, windows of {args.window:g} min"
            + (f", engine peer {peer.url} restarted every {args.peer_every:g} min" if peer else ""),
            flush=True,
        )
        threads.append(threading.Thread(target=one_shot, args=(sp.port, stats, stop)))
        for i in range(4):
            threads.append(threading.Thread(target=persistent, args=(sp.port, stats, stop, i)))
        threads.append(threading.Thread(target=bad_input, args=(sp.port, stats, stop)))
        if peer:
            threads.append(
                threading.Thread(target=socketio_load, args=(peer, stats, stop, args.peer_every * 60, events))
            )
        for t in threads:
            t.daemon = True
            t.start()
        end = t0 + args.minutes * 60
        last_print = t0
        while time.monotonic() < end:
            if sp.proc.poll() is not None:
                notes.append(f"blendwire serve exited early with {sp.proc.returncode}")
                break
            kib = rss_kib(pid)
            if kib is not None:
                stats.rss(kib)
            if time.monotonic() - last_print >= 60:
                last_print = time.monotonic()
                with stats.lock:
                    calls = sum(sum(w.calls.values()) for w in stats.windows.values())
                    fails = sum(sum(w.failures.values()) for w in stats.windows.values())
                print(
                    f"  {last_print - t0:6.0f}s: {calls} calls, {fails} failures, RSS {kib / 1024:.1f} MiB", flush=True
                )
            stop.wait(min(1.0, max(0.0, end - time.monotonic())))
    finally:
        stop.set()
        stuck = [t.name for t in bw_wait.join_all(threads, 120)]
        if stuck:
            notes.append(f"load threads still running after stop: {stuck}")
        rc = None
        if sp is not None:
            try:
                rc = sp.shutdown(timeout=60)
            except AssertionError as e:
                notes.append(f"shutdown: {str(e)[:500]}")
        if peer is not None:
            peer.kill()

    total_fail = print_table(stats, args, events)
    if rc is not None:
        print(f"blendwire serve exited {rc} after server_shutdown")
    for n in notes:
        print(f"note: {n}")
    return 1 if total_fail or notes and any("exited" in n or "still running" in n for n in notes) else 0


def print_table(stats, args, events):
    kinds = sorted({k for w in stats.windows.values() for k in w.calls})
    print()
    print(f"| window (min) | calls | failures | p99 ms | RSS MiB (end / max) | {' | '.join(kinds)} |")
    print("|---|--:|--:|--:|--:|" + "--:|" * len(kinds))
    total_calls = total_fail = 0
    for idx in sorted(stats.windows):
        w = stats.windows[idx]
        if idx * args.window >= args.minutes:
            continue  # the few calls in flight when the run ended
        calls, fails = sum(w.calls.values()), sum(w.failures.values())
        total_calls += calls
        total_fail += fails
        p99 = w.p99_ms()
        rss = f"{w.rss_kib / 1024:.1f} / {w.rss_max_kib / 1024:.1f}" if w.rss_kib else "-"
        per_kind = " | ".join(f"{w.calls.get(k, 0)}/{w.failures.get(k, 0)}" for k in kinds)
        print(
            f"| {idx * args.window:g}–{(idx + 1) * args.window:g} | {calls:,} | {fails} | "
            f"{p99:.3f} | {rss} | {per_kind} |"
            if p99 is not None
            else f"| {idx * args.window:g}–{(idx + 1) * args.window:g} | {calls:,} | {fails} | - | {rss} | {per_kind} |"
        )
    print(f"\ntotal: {total_calls:,} calls, {total_fail} failures (per kind: calls/failures)")
    for e in events:
        print(f"  {e}")
    for idx in sorted(stats.windows):
        for ex in stats.windows[idx].examples:
            print(f"  failure in window {idx}: {ex}")
    return total_fail


if __name__ == "__main__":
    sys.exit(main())

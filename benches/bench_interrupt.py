"""Issue 12's rows of `scripts/bench`: Blender's main thread is never lost.

Each measurement is one `Measure` in `MEASURES`: what it runs against a serving blendwire (given
the runtime, "b" for `blender -b` or "gui"), the lines of its table, and its target verdicts.
bench.py calls `run(bench, srv, runtime)` once per runtime while that server is up, then
`render(results)` and `targets(results)`; results are stored in `bench.results` under
("issue12-<runtime>", key), so they land in the run's JSON with everything else. Adding a
measurement is one more `Measure` at the end of the list.

  * interrupt_latency: runaway `execute_code` jobs (`while True: pass`, a `time.sleep(0.05)`
    loop, one `time.sleep(100)`) with `params._timeout_seconds` 0.2 on one connection, and
    another client's `get_scene_info` queued behind each: how long after the deadline the caller
    gets its `interrupted` answer, and the other client its scene.
  * interrupt_cost: calls/s of `get_scene_info` and `execute_code print(1)` on one persistent
    connection with the interrupt machinery on and off, alternating rounds on the same Blender.
  * progress: a job that prints as fast as it can, with `"progress": true` and without: progress
    messages/s its client receives (coalesced to ~20/s), whether all its output was streamed, and
    its prints/s either way (what streaming costs the job).

Standalone (only these rows, against a fresh `blendwire serve`):
    .venv/bin/python benches/bench_interrupt.py [--quick] [--gui] [--measure KEY]
and the normal path of this build against another build's package (an unpacked wheel), e.g. one
built without the interrupter thread, `blender -b` servers started in turn:
    .venv/bin/python benches/bench_interrupt.py --other-package DIR [--pairs 4] [--window 2]
"""

import json
import math
import os
import random
import selectors
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bw_json  # noqa: E402
import bw_net  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_clients  # noqa: E402
import bench_rounds  # noqa: E402
import bench_servers  # noqa: E402

HOST = "127.0.0.1"
SCENE = json.dumps({"type": "get_scene_info", "params": {}}).encode()
EXEC1 = json.dumps({"type": "execute_code", "params": {"code": "print(1)"}}).encode()
RUNTIMES = {"b": "-b", "gui": "GUI (Xvfb)"}


class Measure(NamedTuple):
    key: str
    runtimes: tuple  # the runtimes it runs in ("b", "gui")
    run: Callable  # (bench, srv, runtime) -> dict (JSON data), stored in bench.results
    render: Callable  # ({runtime: result}) -> table lines
    targets: Callable  # ({runtime: result}) -> [{"name", "value", "verdict"}]


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def _pct(sorted_vals, q):
    """Nearest rank (as bench.py): with fewer than 100 values, p99 is the largest."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def _fmt(v, digits=1):
    return "—" if v is None else f"{v:,.{digits}f}"


def _connect(port):
    return bw_net.connect(port, HOST, timeout=30.0)


def _call(sock, payload):
    sock.sendall(payload)
    return bw_json.read_json(sock, whole=True)[0]


def _execute(port, code):
    """What `code` printed, run as an `execute_code` job on its own connection."""
    s = _connect(port)
    try:
        resp = _call(s, json.dumps({"type": "execute_code", "params": {"code": code}}).encode())
    finally:
        s.close()
    if not (isinstance(resp, dict) and resp.get("status") == "success"):
        raise RuntimeError(f"execute_code failed: {resp}")
    return resp["result"]["result"]


# --------------------------------------------------------------------------------------------
# Interrupt latency: a runaway job's deadline → its `interrupted` answer, and the next request
# --------------------------------------------------------------------------------------------

TIMEOUT_S = 0.2  # each runaway job's params._timeout_seconds
NEXT_AFTER_S = 0.05  # the other client's get_scene_info goes out this long after the runaway job
RUNAWAY = {  # kind -> (code, jobs in a full run, jobs in --quick)
    "busy": ("while True:\n    pass", 40, 6),
    "sleep_loop": ("import time\nwhile True:\n    time.sleep(0.05)", 9, 2),
    "long_sleep": ("import time\ntime.sleep(100)", 1, 1),
}
RUNAWAY_LABEL = {
    "busy": "`while True: pass`",
    "sleep_loop": "`while True: time.sleep(0.05)`",
    "long_sleep": "`time.sleep(100)`",
}


def _read_both(a, b, limit):
    """Wait for one JSON answer on each of a and b; return {sock: (answer, perf_counter when it
    parsed)}. Sockets that did not answer by `limit` (perf_counter) are missing."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in (a, b):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = bytearray()
    got = {}
    try:
        while len(got) < 2:
            left = limit - time.perf_counter()
            if left <= 0:
                break
            for key, _ev in sel.select(timeout=left):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError("the server closed a connection during a runaway job")
                bufs[s] += chunk
                parsed = bw_json.parse_one(bufs[s], whole=True)
                if parsed is not None:
                    got[s] = (parsed[0], time.perf_counter())
                    sel.unregister(s)
    finally:
        sel.close()
        for s in (a, b):
            s.setblocking(True)
            s.settimeout(30.0)
    return got


def run_latency(bench, srv, runtime):
    quick = bench.args.quick
    kinds = [k for k, (_c, n_full, n_quick) in RUNAWAY.items() for _ in range(n_quick if quick else n_full)]
    random.Random(12).shuffle(kinds)
    a, b = _connect(srv.port), _connect(srv.port)  # the runaway job's caller; the other client
    jobs, wrong = [], []
    try:
        for kind in kinds:
            req = json.dumps(
                {"type": "execute_code", "params": {"code": RUNAWAY[kind][0], "_timeout_seconds": TIMEOUT_S}}
            ).encode()
            t_send = time.perf_counter()
            a.sendall(req)
            time.sleep(NEXT_AFTER_S)
            b.sendall(SCENE)
            deadline = t_send + TIMEOUT_S
            got = _read_both(a, b, deadline + 10.0)
            ra, ta = got.get(a, (None, None))
            rb, tb = got.get(b, (None, None))
            if ra is None or rb is None:
                raise RuntimeError(f"no answer 10 s after a runaway job's deadline ({kind}): the main thread is lost")
            ok = isinstance(ra, dict) and ra.get("error_code") == "interrupted" and rb.get("status") == "success"
            job = {"kind": kind, "answer_ms": (ta - deadline) * 1e3, "next_ms": (tb - deadline) * 1e3, "ok": ok}
            if not ok:
                wrong.append({**job, "caller": ra, "next": rb})
                _say(
                    f"  WRONG ANSWER ({kind}; caller answered {job['answer_ms']:.1f} ms, the other client "
                    f"{job['next_ms']:.1f} ms after the deadline): caller {str(ra)[:300]}; next request {str(rb)[:120]}"
                )
            jobs.append(job)
    finally:
        a.close()
        b.close()

    def summary(sel):
        ans = sorted(j["answer_ms"] for j in sel if j["ok"])
        nxt = sorted(j["next_ms"] for j in sel if j["ok"])
        return {
            "jobs": len(sel),
            "wrong": sum(not j["ok"] for j in sel),
            "answer_p50_ms": _pct(ans, 0.50),
            "answer_p99_ms": _pct(ans, 0.99),
            "next_p50_ms": _pct(nxt, 0.50),
            "next_p99_ms": _pct(nxt, 0.99),
            "next_max_ms": nxt[-1] if nxt else None,
        }

    out = {"all": summary(jobs)}
    for kind in RUNAWAY:
        out[kind] = summary([j for j in jobs if j["kind"] == kind])
    out["jobs"] = jobs
    out["wrong_answers"] = wrong[:5]
    s = out["all"]
    _say(
        f"  {'issue12-' + runtime:14s} {'runaway jobs, after the deadline':32s} interrupted p50 "
        f"{_fmt(s['answer_p50_ms'], 2)} p99 {_fmt(s['answer_p99_ms'], 2)} ms; next request p50 "
        f"{_fmt(s['next_p50_ms'], 2)} p99 {_fmt(s['next_p99_ms'], 2)} ms ({s['jobs']} jobs, {s['wrong']} wrong)"
    )
    return out


def render_latency(res):
    L = [
        "",
        f"Issue 12, runaway jobs: `execute_code` with `params._timeout_seconds` {TIMEOUT_S} on one "
        f"connection; {NEXT_AFTER_S * 1e3:.0f} ms after it, another client's `get_scene_info` "
        "(a second connection) queues behind it. Time after the deadline until the caller has its "
        "`interrupted` answer, and until the other client has its scene:",
        "",
        "| runaway job | Blender | jobs | `interrupted` p50 ms | p99 ms | next request served p50 ms "
        "| p99 ms | max ms | wrong answers |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for runtime, r in res.items():
        for kind in ("all", *RUNAWAY):
            s = r.get(kind)
            if not s or not s["jobs"]:
                continue
            label = "all kinds" if kind == "all" else RUNAWAY_LABEL[kind]
            L.append(
                f"| {label} | {RUNTIMES[runtime]} | {s['jobs']} | {_fmt(s['answer_p50_ms'], 2)} | "
                f"{_fmt(s['answer_p99_ms'], 2)} | {_fmt(s['next_p50_ms'], 2)} | {_fmt(s['next_p99_ms'], 2)} | "
                f"{_fmt(s['next_max_ms'], 2)} | {s['wrong']} |"
            )
    L += [
        "",
        "The service counts a deadline from when it received the request; these times count it from "
        "the client's send + the timeout, so they include the request's trip to the service (tens "
        "of µs here) and the answer's trip back. p99 is the nearest rank: with fewer than 100 jobs, "
        "the slowest job. A wrong answer is a caller not answered `interrupted` or another client "
        "not served.",
    ]
    return L


def targets_latency(res):
    out = []
    for runtime, r in res.items():
        s = r["all"]
        if s["answer_p50_ms"] is None:
            continue
        worst_p50 = max(s["answer_p50_ms"], s["next_p50_ms"])
        worst_p99 = max(s["answer_p99_ms"], s["next_p99_ms"])
        out.append(
            {
                "name": f"issue 12: {RUNTIMES[runtime]}, a runaway job's `interrupted` answer and the next "
                "request served p50 ≤ 10 ms, p99 ≤ 50 ms after its deadline",
                "value": f"answer p50 {s['answer_p50_ms']:.2f} / p99 {s['answer_p99_ms']:.2f} ms, next request "
                f"p50 {s['next_p50_ms']:.2f} / p99 {s['next_p99_ms']:.2f} ms ({s['jobs']} jobs, "
                f"{s['wrong']} wrong)",
                "verdict": "pass" if worst_p50 <= 10 and worst_p99 <= 50 and not s["wrong"] else "MISS",
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Progress: what a job that prints continuously costs, and what its client receives
# --------------------------------------------------------------------------------------------

PRINT_LINES = 200_000  # the tight loop's lines (50,000 with --quick): a few MB of answer
TIGHT = (
    "import time\n"
    "t = time.perf_counter()\n"
    "for n in range({lines}):\n"
    "    print('progress line', n)\n"
    "print('seconds', time.perf_counter() - t)\n"
)
STEADY_S = 2.0  # a job printing a line every millisecond for this long (1 s with --quick)
STEADY = (
    "import time\n"
    "end = time.perf_counter() + {secs}\n"
    "while time.perf_counter() < end:\n"
    "    print('progress line')\n"
    "    time.sleep(0.001)\n"
)


def _job(port, code, progress):
    """Run `code` (with `"progress": progress`); its answer's stdout and the progress messages."""
    req = {"type": "execute_code", "params": {"code": code, "_timeout_seconds": 120}}
    if progress:
        req["progress"] = True
    s = _connect(port)
    msgs, buf = [], b""
    try:
        s.sendall(json.dumps(req).encode())
        while True:
            values, buf = bw_json.read_values(s, 1, buf, timeout=180)
            v = values[0]
            if v.get("status") != "progress":
                break
            msgs.append(v)
    finally:
        s.close()
    if v.get("status") != "success":
        raise RuntimeError(f"printer job failed: {str(v)[:300]}")
    return v["result"]["result"], msgs


def _rate(msgs):
    """Messages/s as the service sent them (`elapsed_s`), the last one left out: it goes with the
    answer, whenever the job ends."""
    sent = [m["elapsed_s"] for m in msgs[:-1]]
    return (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 2 and sent[-1] > sent[0] else None


def _streamed(msgs, out):
    """Whether the messages carried all of the job's output, in order: a job that prints faster
    than it is sent loses the oldest unsent text beyond 1 MiB (`output_dropped_bytes`; the answer
    still has it all)."""
    streamed = "".join(m.get("output", "") for m in msgs)
    dropped = sum(m.get("output_dropped_bytes", 0) for m in msgs)
    whole = len(streamed.encode()) + dropped == len(out.encode()) and out.endswith(streamed[-4096:])
    return {"all_streamed": whole, "dropped_bytes": dropped}


def run_progress(bench, srv, runtime):
    lines = PRINT_LINES // 4 if bench.args.quick else PRINT_LINES
    secs = STEADY_S / 2 if bench.args.quick else STEADY_S
    rounds = 1 if bench.args.quick else 3
    on, off, steady = [], [], []
    for i in range(rounds):  # alternate, as the cost rows do: a burst elsewhere skews one round
        for progress in (True, False) if i % 2 == 0 else (False, True):
            out, msgs = _job(srv.port, TIGHT.format(lines=lines), progress)
            (on if progress else off).append(
                {
                    "prints_per_s": lines / float(out.rsplit("seconds", 1)[1]),
                    "messages": len(msgs),
                    **_streamed(msgs, out),
                }
            )
        out, msgs = _job(srv.port, STEADY.format(secs=secs), True)
        steady.append({"messages_per_s": _rate(msgs), **_streamed(msgs, out)})

    def med(rs, k):
        vals = [r[k] for r in rs if r[k] is not None]
        return statistics.median(vals) if vals else None

    out = {
        "lines": lines,
        "steady_s": secs,
        "rounds": rounds,
        "prints_per_s_on": med(on, "prints_per_s"),
        "prints_per_s_off": med(off, "prints_per_s"),
        "messages_per_s": med(steady, "messages_per_s"),
        "all_output_streamed": all(r["all_streamed"] for r in on + steady),
        "dropped_bytes": max(r["dropped_bytes"] for r in on + steady),
        "off_sent_no_progress": all(r["messages"] == 0 for r in off),
        "runs_on": on,
        "runs_off": off,
        "runs_steady": steady,
    }
    _say(
        f"  {'issue12-' + runtime:14s} {'progress, printing job':32s} {_fmt(out['messages_per_s'])} msgs/s; "
        f"prints/s {_fmt(out['prints_per_s_on'], 0)} streamed vs {_fmt(out['prints_per_s_off'], 0)} not"
    )
    return out


def render_progress(res):
    L = [
        "",
        f"Issue 12, progress: progress messages/s a client receives from a job printing a line every "
        f'millisecond for {STEADY_S:g} s (`"progress": true`: its stdout streamed as progress messages), '
        f"and what streaming costs a job printing {PRINT_LINES:,} lines as fast as it can (with and "
        "without `progress`); the median of alternating rounds:",
        "",
        "| Blender | progress messages/s received | all output streamed (or counted as dropped) "
        "| most dropped, bytes | job's prints/s streamed | not streamed | ratio |",
        "|---|--:|---|--:|--:|--:|--:|",
    ]
    for runtime, r in res.items():
        on, off = r["prints_per_s_on"], r["prints_per_s_off"]
        L.append(
            f"| {RUNTIMES[runtime]} | {_fmt(r['messages_per_s'])} | {'yes' if r['all_output_streamed'] else 'NO'} | "
            f"{r['dropped_bytes']:,} | {_fmt(on, 0)} | {_fmt(off, 0)} | {_fmt(on / off if on and off else None, 2)} |"
        )
    L += [
        "",
        "Messages are coalesced on the I/O thread (at most one per 50 ms, the last one with the answer); "
        "a streamed job's stdout is the core's `JobOutput`, whose native `write` keeps the text and "
        "appends it to the job's progress: the price of seeing the output live. Text a job prints "
        "faster than it is sent is kept up to 1 MiB; beyond, the oldest is dropped and counted.",
    ]
    return L


def targets_progress(res):
    out = []
    for runtime, r in res.items():
        rate = r["messages_per_s"]
        out.append(
            {
                "name": f"progress messages/s, printing job ({RUNTIMES[runtime]}): about 20 at most",
                "value": _fmt(rate),
                "verdict": "met" if rate is not None and rate <= 22 and r["all_output_streamed"] else "MISSED",
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# The cost of the interrupt machinery on the normal path
# --------------------------------------------------------------------------------------------

# "Without": what the runtime is before it installs its interrupts (runtime.install_interrupts):
# the core never sends the signal, and the signal has its default disposition. Switched by a job
# on the main thread, so both modes run on the same Blender, rounds alternating.
INTERRUPTS_OFF = (
    "import signal\n"
    "from blendwire import _core\n"
    "_core.enable_interrupts(False)\n"
    "signal.signal(_core.INTERRUPT_SIGNAL, signal.SIG_DFL)\n"
    "print(signal.getsignal(_core.INTERRUPT_SIGNAL) is signal.SIG_DFL, end='')"
)
INTERRUPTS_ON = (
    "import signal\n"
    "from blendwire import _core, runtime\n"
    "runtime.install_interrupts()\n"
    "print(signal.getsignal(_core.INTERRUPT_SIGNAL) is runtime._on_interrupt_signal, end='')"
)
COST_WORKLOADS = (("scene", "get_scene_info", SCENE), ("exec", "execute_code print(1)", EXEC1))
INTERRUPTER_COMM = "blendwire-inter"  # the interrupter thread's name, as /proc cuts it (15 chars)


def _tasks(pids):
    return [(pid, t) for pid in pids for t in _listdir(f"/proc/{pid}/task")]


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _run_ns(pid, tid):
    """CPU time a thread has run, in ns (schedstat; 0 when the kernel has none)."""
    v = _read(f"/proc/{pid}/task/{tid}/schedstat").split()
    return int(v[0]) if v else 0


def _switches(pid, tid):
    for line in _read(f"/proc/{pid}/task/{tid}/status").splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def _counters(pids):
    """(CPU ns of every Blender thread, CPU ns of the interrupter, its voluntary switches)."""
    total = inter = switches = 0
    for pid, tid in _tasks(pids):
        ns = _run_ns(pid, tid)
        total += ns
        if _read(f"/proc/{pid}/task/{tid}/comm").strip() == INTERRUPTER_COMM:
            inter += ns
            switches += _switches(pid, tid)
    return total, inter, switches


def _set_interrupts(port, on):
    out = _execute(port, INTERRUPTS_ON if on else INTERRUPTS_OFF)
    if out != "True":
        raise RuntimeError(f"switching interrupts {'on' if on else 'off'} did not take: {out!r}")


def _machine_busy_ns():
    """Busy CPU time of the whole machine, all cores, in ns (/proc/stat)."""
    v = [int(x) for x in _read("/proc/stat").split("\n", 1)[0].split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) * 1e9 / os.sysconf("SC_CLK_TCK")


def _cost_round(srv, sock, payload, window):
    """Calls on `sock` for `window` seconds (after 20 unmeasured): calls/s, CPU per call, and what
    the rest of the machine used meanwhile (other sessions compete for the same cores)."""
    for _ in range(20):
        _call(sock, payload)
    pids = srv.blender_pids()
    c0, m0, p0 = _counters(pids), _machine_busy_ns(), time.process_time_ns()
    n, fails, t0 = 0, 0, time.perf_counter()
    t_end = t0 + window
    while time.perf_counter() < t_end:
        r = _call(sock, payload)
        n += 1
        fails += r.get("status") != "success"
    wall = time.perf_counter() - t0
    c1, m1, p1 = _counters(pids), _machine_busy_ns(), time.process_time_ns()
    other = (m1 - m0) - (c1[0] - c0[0]) - (p1 - p0)
    return {
        "calls_per_s": (n - fails) / wall,
        "failures": fails,
        "cpu_us_per_call": (c1[0] - c0[0]) / 1e3 / max(n, 1),
        "interrupter_us_per_call": (c1[1] - c0[1]) / 1e3 / max(n, 1),
        "interrupter_wakeups_per_call": (c1[2] - c0[2]) / max(n, 1),
        "other_cpu_pct": max(0.0, 100 * other / 1e9 / wall),
    }


def _compare(rounds_with, rounds_without):
    """Medians of each side's rounds (failures summed), and with ÷ without: the median of the
    ratios of each pair of adjacent rounds (so a burst of load elsewhere skews one pair, not the
    median), with the quartiles of those ratios."""

    def side(rounds):
        m = {f: statistics.median(r[f] for r in rounds) for f in rounds[0]}
        m["failures"] = sum(r["failures"] for r in rounds)
        return m

    ratios = sorted(a["calls_per_s"] / b["calls_per_s"] for a, b in zip(rounds_with, rounds_without, strict=True))
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    w = {"with": side(rounds_with), "without": side(rounds_without)}
    w["ratio"], w["ratio_q1"], w["ratio_q3"] = statistics.median(ratios), q[0], q[2]
    w["rounds"] = {"with": rounds_with, "without": rounds_without}
    return w


def run_cost(bench, srv, runtime):
    quick = bench.args.quick
    pairs, window, warm = (1, 0.3, 50) if quick else (20, 0.25, 200)
    out = {"pairs": pairs, "window_s": window}
    try:
        for key, _label, payload in COST_WORKLOADS:
            sock = _connect(srv.port)
            rounds = {True: [], False: []}
            try:
                for _ in range(warm):
                    _call(sock, payload)
                for i in range(pairs):
                    for on in (True, False) if i % 2 == 0 else (False, True):
                        _set_interrupts(srv.port, on)
                        rounds[on].append(_cost_round(srv, sock, payload, window))
            finally:
                sock.close()
            w = out[key] = _compare(rounds[True], rounds[False])
            _say(
                f"  {'issue12-' + runtime:14s} {key + ', interrupts on/off':32s} {w['with']['calls_per_s']:10.1f} vs "
                f"{w['without']['calls_per_s']:.1f} calls/s = {w['ratio']:.3f}"
            )
    finally:
        _set_interrupts(srv.port, True)  # as the runtime left it, whatever happened
    return out


def render_cost(res):
    L = [
        "",
        "Issue 12, the interrupt machinery on the normal path: one persistent connection, the same "
        "Blender, rounds alternating with and without. *Without* = the runtime's state before "
        "`runtime.install_interrupts()`: the core never sends the interrupt signal "
        "(`_core.enable_interrupts(False)`) and the signal has no handler (switched by an "
        "`execute_code` job between rounds). The per-job bookkeeping of what the main thread runs "
        "(`MainThread::begin`/`end`, which status needs too) and the interrupter thread waking at "
        "each job's start and end run in both; the interrupter's own CPU is shown apart:",
        "",
        "| workload | Blender | with: calls/s | without: calls/s | with ÷ without (quartiles) | Blender CPU "
        "µs/call with | without | of it, interrupter thread µs/call | its wake-ups/call | other processes % | fail |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for runtime, r in res.items():
        for key, label, _p in COST_WORKLOADS:
            w = r.get(key)
            if not w:
                continue
            a, b = w["with"], w["without"]
            L.append(
                f"| {label} | {RUNTIMES[runtime]} | {a['calls_per_s']:,.0f} | {b['calls_per_s']:,.0f} | "
                f"{w['ratio']:.3f} ({w['ratio_q1']:.2f}–{w['ratio_q3']:.2f}) | {a['cpu_us_per_call']:.1f} | "
                f"{b['cpu_us_per_call']:.1f} | {a['interrupter_us_per_call']:.2f} | "
                f"{a['interrupter_wakeups_per_call']:.2f} | {(a['other_cpu_pct'] + b['other_cpu_pct']) / 2:.0f} | "
                f"{a['failures'] + b['failures']} |"
            )
    if res:
        r = next(iter(res.values()))
        L += [
            "",
            f"{r['pairs']} pairs of rounds per workload ({r['window_s']:g} s each, the order alternating); "
            "calls/s and CPU are medians over the rounds, with ÷ without the median of the pairs' "
            "ratios. CPU from the Blender process's per-thread schedstat (all threads); other processes "
            "= the machine's busy CPU (% of one core) minus Blender's and the client's.",
        ]
    return L


def targets_cost(res):
    out = []
    for runtime, r in res.items():
        ws = [(label, r[key]) for key, label, _p in COST_WORKLOADS if r.get(key)]
        if not ws:
            continue
        worst = min(w["ratio"] for _l, w in ws)
        out.append(
            {
                "name": f"issue 12: {RUNTIMES[runtime]}, calls/s with the interrupt handler and signal within 2 % "
                "of without (same run; the interrupter's wake-ups run in both, next line)",
                "value": "with ÷ without: " + ", ".join(f"{label} {w['ratio']:.3f}" for label, w in ws),
                "verdict": "pass" if worst >= 0.98 else "MISS",
            }
        )
        shares = [(label, w["with"]["interrupter_us_per_call"], w["with"]["cpu_us_per_call"]) for label, w in ws]
        top = max(i / c for _l, i, c in shares if c)
        out.append(
            {
                "name": f"issue 12: {RUNTIMES[runtime]}, what the switch leaves on: the interrupter thread "
                "≤ 2 % of Blender's CPU per call",
                "value": ", ".join(f"{label} {i:.1f} of {c:.1f} µs ({100 * i / c:.0f} %)" for label, i, c in shares),
                "verdict": "pass" if top <= 0.02 else "MISS",
            }
        )
    return out


MEASURES = [
    Measure("interrupt_latency", ("b", "gui"), run_latency, render_latency, targets_latency),
    Measure("interrupt_cost", ("b", "gui"), run_cost, render_cost, targets_cost),
    Measure("progress", ("b", "gui"), run_progress, render_progress, targets_progress),
]


# --------------------------------------------------------------------------------------------
# What bench.py calls
# --------------------------------------------------------------------------------------------


def _server(runtime):
    return f"issue12-{runtime}"


def run(bench, srv, runtime):
    for m in MEASURES:
        if runtime in m.runtimes:
            bench.results[(_server(runtime), m.key)] = m.run(bench, srv, runtime)


def _by_runtime(R, key):
    return {rt: R[(_server(rt), key)] for rt in RUNTIMES if (_server(rt), key) in R}


def render(R):
    lines = []
    for m in MEASURES:
        res = _by_runtime(R, m.key)
        if res:
            lines += m.render(res)
    return lines


def targets(R):
    out = []
    for m in MEASURES:
        res = _by_runtime(R, m.key)
        if res:
            out += m.targets(res)
    return out


def compare_packages(other, log_dir, pairs, window, this=None):
    """The normal path of this build (or the package in `this`) vs the blendwire package in `other`
    (another build, e.g. one without the interrupter thread), `blender -b`, servers started in turn
    (never two at once)."""
    rounds = {key: {True: [], False: []} for key, _l, _p in COST_WORKLOADS}
    for i in range(pairs):
        for mine in (True, False) if i % 2 == 0 else (False, True):
            log = os.path.join(log_dir, f"blendwire-{'this' if mine else 'other'}-{i}.log")
            package = this if mine else other
            srv = bench_servers.start_blendwire(False, log, package=package)
            try:
                core = _execute(srv.port, "import blendwire._core as c\nprint(c.__file__, end='')")
                expect = os.path.abspath(package) if package else os.path.dirname(bench_clients.VENV_BIN)
                if not core.startswith(expect + os.sep):
                    raise RuntimeError(f"the server runs the wrong build: {core}, not one under {expect}")
                for key, _label, payload in COST_WORKLOADS:
                    sock = _connect(srv.port)
                    try:
                        for _ in range(200):
                            _call(sock, payload)
                        rounds[key][mine].append(_cost_round(srv, sock, payload, window))
                    finally:
                        sock.close()
            finally:
                srv.stop(shutdown_port=srv.port)
    print(f"\n{this or 'This build'} (with) vs {other} (without); {pairs} servers each, {window:g} s per round:\n")
    print(
        "| workload | with: calls/s | without: calls/s | with ÷ without (quartiles) | CPU µs/call with | without "
        "| other processes % | fail |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for key, label, _p in COST_WORKLOADS:
        w = _compare(rounds[key][True], rounds[key][False])
        a, b = w["with"], w["without"]
        print(
            f"| {label} | {a['calls_per_s']:,.0f} | {b['calls_per_s']:,.0f} | {w['ratio']:.3f} "
            f"({w['ratio_q1']:.2f}–{w['ratio_q3']:.2f}) | {a['cpu_us_per_call']:.1f} | {b['cpu_us_per_call']:.1f} | "
            f"{(a['other_cpu_pct'] + b['other_cpu_pct']) / 2:.0f} | {a['failures'] + b['failures']} |"
        )
        print(f"  rounds with: {[round(r['calls_per_s']) for r in w['rounds']['with']]}", file=sys.stderr)
        print(f"  rounds without: {[round(r['calls_per_s']) for r in w['rounds']['without']]}", file=sys.stderr)


def main():
    """Only these rows, against a fresh `blendwire serve` (-b, and the GUI with --gui)."""
    import argparse
    import types

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gui", action="store_true", help="also in the GUI (Xvfb)")
    ap.add_argument("--measure", action="append", choices=[m.key for m in MEASURES], help="only these (repeatable)")
    ap.add_argument(
        "--other-package",
        metavar="DIR",
        help="instead: calls/s of this build vs the blendwire package in DIR (an unpacked wheel of "
        "another build), blender -b, servers in turn",
    )
    ap.add_argument("--package", metavar="DIR", help="with --other-package: the build to compare (default: the venv's)")
    ap.add_argument("--pairs", type=int, default=4, help="with --other-package: servers of each build")
    ap.add_argument("--window", type=float, default=2.0, help="with --other-package: seconds per round")
    args = ap.parse_args()
    ctx = types.SimpleNamespace(args=args, results={})
    if args.measure:
        MEASURES[:] = [m for m in MEASURES if m.key in args.measure]
    log_dir = tempfile.mkdtemp(prefix="blendwire-bench-interrupt-")
    if args.other_package:
        try:
            compare_packages(args.other_package, log_dir, args.pairs, args.window, args.package)
        finally:
            for srv in list(bench_servers.LIVE_SERVERS):
                srv.stop()
        return
    try:
        for runtime in ("b", "gui") if args.gui else ("b",):
            srv = bench_servers.start_blendwire(runtime == "gui", os.path.join(log_dir, f"blendwire-{runtime}.log"))
            try:
                run(ctx, srv, runtime)
            finally:
                srv.stop(shutdown_port=srv.port)
    finally:
        for srv in list(bench_servers.LIVE_SERVERS):
            srv.stop()
    bench_rounds.print_standalone(render(ctx.results), targets(ctx.results), log_dir)


if __name__ == "__main__":
    main()

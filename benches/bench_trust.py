"""Issue 22's rows of `scripts/bench`: what the trust layer (checkpoints, the audit log) costs.

The same build, side by side in one run: `blendwire serve` with its defaults (ON: a checkpoint
before every job that may change data, the audit log) and `blendwire serve --checkpoints 0
--audit-log off` (OFF), both serving at once, each with a state directory of its own in the run's
temp folder (XDG_STATE_HOME: the user's is never touched), rounds alternating ON/OFF so that the
machine's noise falls on both. bench.py's raw client (TCP_NODELAY, one persistent connection, read
until the bytes parse as one JSON object) for every row:

  * reads: `get_scene_info` calls/s (target: ON ≥ 95 % of OFF; reads take no checkpoint);
  * change: a small changing job on the default scene, `execute_code`
    `bpy.context.scene.frame_current += 1`, p50/p99 (target: ON − OFF ≤ 30 ms at p50);
  * heavy: the same job on the heavy scene (benches/fixtures/make_heavy_scene.py: 2,000 objects,
    1 M vertices; built once into a cache folder, served as `blendwire serve FILE.blend`), `-b`
    only (target: ON − OFF ≤ 1 s at p50);
  * busy: a busy agent, 100 changing jobs in a row on the default scene, total time (target: the
    share of ON's time that OFF does not spend, (ON − OFF) ÷ ON, ≤ 10 %).

Every changing job's answer is read for `"checkpoint"` / `"checkpoint_error"`: the table says how
many ON kept, so a row whose ON took none says so. The trust flags are found in `blendwire serve
--help`; while a build lacks them (they land with issue 22), OFF cannot be started: ON is measured
alone and the rows' targets say "not measured" with the missing flag.

bench.py calls `run(bench, log_dir, runtimes)` after its other rows, then `render(results)` and
`targets(results)`; results are stored in `bench.results` under ("issue22-on-<b|gui>", workload)
and ("issue22-off-<b|gui>", workload) with bench.py's round statistics.

Standalone (only these rows):
    nice .venv/bin/python benches/bench_trust.py [--quick] [--no-gui] [--only reads,change,heavy,busy]
"""

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bw_json  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_clients  # noqa: E402
import bench_rounds  # noqa: E402
import bench_servers  # noqa: E402

FIXTURE = os.path.join(ROOT, "benches", "fixtures", "make_heavy_scene.py")
# What OFF passes, per flag, when `blendwire serve --help` lists it.
OFF_FLAGS = {"--checkpoints": ["--checkpoints", "0"], "--audit-log": ["--audit-log", "off"]}
READ = json.dumps(bench_clients.SCENE).encode()
CHANGE = json.dumps(
    {"type": "execute_code", "params": {"code": "import bpy\nbpy.context.scene.frame_current += 1"}}
).encode()
BUSY_JOBS = 100
ROWS = ("reads", "change", "heavy", "busy")
# The GUI measures reads only: there a changing job's time is mostly the redraw it causes (Xvfb
# draws with the CPU: up to a second per job on a busy 2-core machine, docs/benchmarks.md), which
# drowns a 30 ms difference; the checkpoint's own cost is measured in -b.
RUNTIME_ROWS = {"b": ROWS, "gui": ("reads",)}
LABELS = {
    "reads": "1 persistent conn., get_scene_info",
    "change": "changing job (`frame_current += 1`), default scene",
    "heavy": "changing job, heavy scene (2,000 objects, 1 M vertices)",
    "busy": f"busy agent: {BUSY_JOBS} changing jobs in a row, default scene",
}


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def serve_help():
    """This build's `blendwire serve --help`."""
    cmd = [os.path.join(bench_clients.VENV_BIN, "blendwire"), "serve", "--help"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


def off_args(help_text):
    """(OFF's flags, the trust flags this build lacks)."""
    args, missing = [], []
    for flag, argv in OFF_FLAGS.items():
        if re.search(re.escape(flag) + r"(?![\w-])", help_text):
            args += argv
        else:
            missing.append(flag)
    return args, missing


# ---- the heavy scene --------------------------------------------------------------------------


def heavy_scene(blender):
    """The fixture's .blend in the cache folder, built there first if this fixture script and this
    Blender have not built it yet."""
    with open(FIXTURE, "rb") as f:
        script = f.read()
    version = subprocess.run([blender, "--version"], capture_output=True, timeout=60).stdout.split(b"\n")[0]
    key = hashlib.sha256(script + b"\0" + version).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "blendwire-bench")
    path = os.path.join(cache, f"heavy-{key}.blend")
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        _say(f"issue 22: building the heavy scene into {path}")
        cmd = [blender, "-b", "--factory-startup", "--python", FIXTURE, "--", path]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not os.path.exists(path):
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    return path


# ---- servers: ON and OFF at once --------------------------------------------------------------


def _start(state, name, rt, log_dir, extra, timeout):
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = os.path.join(log_dir, f"state-{state}-{name}")
    os.makedirs(env["XDG_STATE_HOME"], mode=0o700, exist_ok=True)
    log = os.path.join(log_dir, f"issue22-{state}-{name}.log")
    srv = bench_servers.start_blendwire(rt == "gui", log, timeout, extra=extra, env=env)
    srv.state_home = env["XDG_STATE_HOME"]
    return srv


def start_pair(rt, log_dir, off, blend=None):
    """{"on": server, "off": server or absent}: the defaults and OFF (when the build has the flags),
    both serving `blend` (a .blend path) or the default scene."""
    extra, name = ([blend], f"{rt}-heavy") if blend else ([], rt)
    timeout = 300.0 if blend else 90.0
    servers = {"on": _start("on", name, rt, log_dir, extra, timeout)}
    if off is not None:
        try:
            servers["off"] = _start("off", name, rt, log_dir, off + extra, timeout)
        except BaseException:
            servers["on"].stop(shutdown_port=servers["on"].port)
            raise
    if blend:
        for srv in servers.values():  # the file is really what it serves
            info = bw_json.request(srv.port, "get_scene_info", timeout=120.0)
            if (info.get("result") or {}).get("object_count", 0) < 2000:
                raise RuntimeError(f"{srv.cmd} does not serve the heavy scene: {str(info)[:300]}")
    return servers


def stop_pair(bench, servers, name):
    """Stop both; what each left in its state directory (checkpoints, audit log) is counted, then
    removed: a run must not leave gigabytes of heavy-scene checkpoints in /tmp."""
    for state, srv in servers.items():
        srv.stop(shutdown_port=srv.port)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(srv.state_home) for f in fs)
        bench.results[("issue22", "meta")].setdefault("state_bytes", {})[f"{state}-{name}"] = size
        _say(f"  issue22-{state}-{name}: {size / 1e6:,.1f} MB in its state directory (removed)")
        shutil.rmtree(srv.state_home, ignore_errors=True)


# ---- rounds ------------------------------------------------------------------------------------


class _Caller:
    """One persistent connection sending one request; counts the checkpoints its answers name."""

    def __init__(self, port, payload):
        self.conn = bw_json.Conn(port, bench_clients.HOST, timeout=120.0)
        self.payload = payload
        self.kept = self.failed = 0

    def __call__(self):
        resp = self.conn.request(self.payload)
        if isinstance(resp, dict):
            self.kept += "checkpoint" in resp
            self.failed += "checkpoint_error" in resp
        return bench_clients.is_success(resp)


def alternate(bench, servers, rt, workload, payload, rounds, max_calls, window, warmup):
    """`rounds` rounds on each server, ON and OFF taking turns to go first; stored per server."""
    callers = {state: _Caller(srv.port, payload) for state, srv in servers.items()}
    per = {state: [] for state in servers}
    try:
        for call in callers.values():
            bench_clients.warm_up(call, warmup)
            call.kept = call.failed = 0  # the warm-up's do not count
        order = list(servers)
        for i in range(rounds):
            for state in order if i % 2 == 0 else order[::-1]:
                pids = servers[state].blender_pids()
                c0, m0 = bench_servers.cpu_seconds(pids), bench_servers.machine_busy_seconds()
                rec = bench_clients.run_loop(callers[state], max_calls, time.monotonic() + window)
                per[state].append(
                    bench_clients.round_stats(
                        [rec], bench_servers.cpu_seconds(pids) - c0, bench_servers.machine_busy_seconds() - m0
                    )
                )
    finally:
        for call in callers.values():
            call.conn.close()
    for state, rounds_ in per.items():
        bench.store(f"issue22-{state}-{rt}", workload, rounds_)
        r = bench.results[(f"issue22-{state}-{rt}", workload)]
        r["checkpoints_kept"], r["checkpoint_errors"] = callers[state].kept, callers[state].failed
        r["median"]["total_s"] = statistics.median(x["wall_s"] for x in rounds_)
    if len(per) == 2:  # ON's calls/s over OFF's, round by round (neighbours in time): the median
        on_off = zip(per["on"], per["off"], strict=True)
        pairs = [a["calls_per_s"] / b["calls_per_s"] for a, b in on_off if b["calls_per_s"]]
        bench.results[(f"issue22-on-{rt}", workload)]["median"]["ratio_to_off"] = pairs and statistics.median(pairs)


def run(bench, log_dir, runtimes=("b", "gui"), only=ROWS):
    """Every row: per runtime, ON and OFF on the default scene, then (`-b`) on the heavy scene."""
    a = bench.args
    n = max(2, a.rounds)  # rounds per server (ON and OFF take turns)
    off, missing = off_args(serve_help())
    off = off if off else None  # no trust flag at all: OFF cannot be started
    meta = {"off_args": off, "missing_flags": missing, "runtimes": list(runtimes), "rows": list(only)}
    bench.results[("issue22", "meta")] = meta
    if missing:
        _say(f"issue 22: this build's `blendwire serve` has no {', '.join(missing)}: OFF turns off only what it has")
    both = "ON and OFF" if off else "ON (OFF not started)"
    for rt in runtimes:
        rows = set(only) & set(RUNTIME_ROWS[rt]) - {"heavy"}
        if not rows:
            continue
        _say(f"issue 22: blendwire serve{' --gui' if rt == 'gui' else ''}, {both}, default scene:")
        servers = start_pair(rt, log_dir, off)
        try:
            if "reads" in rows:  # many short rounds: a 5 % difference stands out of the noise
                window = 0.25 if a.quick else 0.5
                alternate(bench, servers, rt, "reads", READ, 4 * n if a.quick else 7 * n, 20000, window, 200)
            if "change" in rows:
                alternate(bench, servers, rt, "change", CHANGE, n, 20 if a.quick else 40, 30.0, 5)
            if "busy" in rows:
                alternate(bench, servers, rt, "busy", CHANGE, a.rounds, BUSY_JOBS, 600.0, 5)
        finally:
            stop_pair(bench, servers, rt)
    if "heavy" in only and "b" in runtimes:
        blend = heavy_scene(os.environ.get("BLENDER", "/usr/bin/blender"))
        meta["heavy_scene"] = blend
        _say(f"issue 22: blendwire serve FILE.blend (the heavy scene), {both}:")
        servers = start_pair("b", log_dir, off, blend)
        try:
            alternate(bench, servers, "b", "heavy", CHANGE, n, 3 if a.quick else 5, 120.0, 2)
        finally:
            stop_pair(bench, servers, "b-heavy")


# ---- tables and targets -------------------------------------------------------------------------


def _m(R, state, rt, row):
    r = R.get((f"issue22-{state}-{rt}", row))
    return r and r["median"]


def _f(v, digits=1):
    return bench_rounds.fmt(v, digits)


def _cost(row, on, off):
    """What ON pays over OFF, as the row's target counts it, and that number (None: not measured)."""
    if row == "busy" and on and not off:
        return f"ON {on['total_s']:.2f} s, OFF not measured", None
    if not (on and off):
        return "—", None
    if row == "reads":
        x = on.get("ratio_to_off")
        cpu = [m["server_cpu_pct"] * 1e4 / m["calls_per_s"] for m in (on, off) if m.get("server_cpu_pct")]
        cpu_text = f"; Blender CPU {cpu[0]:.0f} vs {cpu[1]:.0f} µs/call" if len(cpu) == 2 else ""
        return (f"{x:.1%} of OFF's calls/s (median of the rounds' ratios){cpu_text}", x) if x else ("—", None)
    if row == "busy":
        x = (on["total_s"] - off["total_s"]) / on["total_s"] if on["total_s"] else None
        return f"{on['total_s']:.2f} vs {off['total_s']:.2f} s: {x:.1%} of ON's time" if x is not None else "—", x
    d = on["p50_ms"] - off["p50_ms"]
    return f"{d:+,.1f} ms at p50", d


def render(R):
    meta = R.get(("issue22", "meta"))
    if not meta:
        return []
    wanted = " ".join(x for argv in OFF_FLAGS.values() for x in argv)
    missing = ", ".join(meta["missing_flags"])
    if not meta["missing_flags"]:
        note = ":"
    elif meta["off_args"]:
        note = f". This build's `blendwire serve` has no {missing}: OFF passes only `{' '.join(meta['off_args'])}`."
    else:
        note = f". This build's `blendwire serve` has no {missing}: OFF was not started, ON alone is measured."
    lines = [
        "",
        f"Issue 22, the trust layer's cost: the same build with its defaults (ON) vs `{wanted}` (OFF), both "
        "serving at once, rounds alternating; one persistent raw connection; medians of the rounds" + note,
        "",
        "| workload | Blender | ON calls/s | p50 ms | p99 ms | fail | checkpoints kept / failed "
        "| OFF calls/s | p50 ms | p99 ms | fail | ON's cost |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for rt in ("b", "gui"):
        for row in ROWS:
            on, off_ = _m(R, "on", rt, row), _m(R, "off", rt, row)
            if not (on or off_):
                continue
            cells = []
            for state, m in (("on", on), ("off", off_)):
                if not m:
                    cells.append("— | — | — | —" + (" | —" if state == "on" else ""))
                    continue
                cells.append(f"{_f(m['calls_per_s'])} | {_f(m['p50_ms'], 3)} | {_f(m['p99_ms'], 3)} | {m['failures']}")
                if state == "on":
                    r = R[(f"issue22-on-{rt}", row)]
                    cells[-1] += " | —" if row == "reads" else f" | {r['checkpoints_kept']} / {r['checkpoint_errors']}"
            rt_label = "`-b`" if rt == "b" else "GUI (Xvfb)"
            lines.append(f"| {LABELS[row]} | {rt_label} | {cells[0]} | {cells[1]} | {_cost(row, on, off_)[0]} |")
    return lines


TARGETS = {
    "reads": ("persistent reads keep ≥ 95 % of OFF's calls/s", lambda x: x >= 0.95),
    "change": ("a changing job on the default scene pays ≤ 30 ms p50 for its checkpoint", lambda x: x <= 30),
    "heavy": ("a changing job on the heavy scene pays ≤ 1 s p50 for its checkpoint", lambda x: x <= 1000),
    "busy": (f"a busy agent ({BUSY_JOBS} changing jobs) spends ≤ 10 % of its time in checkpoints", lambda x: x <= 0.10),
}


def targets(R):
    meta = R.get(("issue22", "meta"))
    if not meta:
        return []
    out = []
    for rt in meta["runtimes"]:
        for row in RUNTIME_ROWS[rt]:
            if row not in meta["rows"]:
                continue
            name, ok = TARGETS[row]
            on, off = _m(R, "on", rt, row), _m(R, "off", rt, row)
            text, x = _cost(row, on, off)
            flags = (
                meta["missing_flags"] if row == "reads" else [f for f in meta["missing_flags"] if f == "--checkpoints"]
            )
            if x is None or flags:
                why = f"this build's `blendwire serve` has no {', '.join(flags)}" if flags else "the row did not run"
                out.append(
                    {"name": f"issue 22: {rt_name(rt)}, {name}", "value": "—", "verdict": f"not measured: {why}"}
                )
                continue
            fails = on["failures"] + off["failures"]
            kept = R[(f"issue22-on-{rt}", row)]["checkpoints_kept"]
            verdict = "pass" if ok(x) and not fails else "MISS"
            if row != "reads" and not kept:
                verdict = "not measured: ON kept no checkpoint"
            out.append(
                {
                    "name": f"issue 22: {rt_name(rt)}, {name}",
                    "value": text + (f", {fails} failed calls" if fails else ""),
                    "verdict": verdict,
                }
            )
    return out


def rt_name(rt):
    return "`-b`" if rt == "b" else "GUI"


def main():
    """Only these rows."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke test)")
    ap.add_argument("--no-gui", action="store_true", help="`blender -b` only")
    ap.add_argument("--only", default=",".join(ROWS), help=f"{','.join(ROWS)} (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    args.sync_s = 0.6
    log_dir = tempfile.mkdtemp(prefix="blendwire-bench-trust-")
    bench = bench_rounds.Bench(args, None)  # every row here is one client: no pool
    try:
        only = tuple(x.strip() for x in args.only.split(","))
        run(bench, log_dir, ("b",) if args.no_gui else ("b", "gui"), only)
    finally:
        for srv in list(bench_servers.LIVE_SERVERS):
            srv.stop()
    bench_rounds.print_standalone(render(bench.results), targets(bench.results), log_dir)


if __name__ == "__main__":
    main()

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

Issue 22's rows (benches/bench_trust.py): the trust layer's cost, `blendwire serve` with its defaults
(checkpoints, audit log) vs `--checkpoints 0 --audit-log off`, both serving at once: persistent reads
(-b and GUI), a small changing job on the default scene and on a heavy scene (2,000 objects, 1 M
vertices), and a busy agent's 100 changing jobs (-b).

Every workload uses the same raw-protocol client code for both servers (send the JSON, read until
the bytes parse as one JSON object, TCP_NODELAY). Warm-up calls are excluded; each workload runs
ROUNDS rounds, each bounded in calls and in time; the table shows the median over rounds.
Every process started here is stopped in a `finally` (also on Ctrl-C / SIGTERM).
"""

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bw_net  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_agents  # noqa: E402  (issue 13's rows: the agents' add-on protocols)
import bench_interrupt  # noqa: E402  (issue 12's rows: interrupting runaway jobs, and what that costs)
import bench_mcp  # noqa: E402  (issue 14's rows: MCP servers through one official `mcp` client)
import bench_trust  # noqa: E402  (issue 22's rows: what checkpoints and the audit log cost)
from bench_clients import (  # noqa: E402
    BIG_BYTES,
    BIG_EXEC,
    LOOPBACK_SERVER,
    MULTI_PER_PROC,
    MULTI_PROCS,
    N_CONCURRENT,
    STANDIN,
    TICK_BUDGET_MS,
    client_worker_init,
)
from bench_report import render, targets  # noqa: E402
from bench_rounds import WORKLOADS, Bench  # noqa: E402
from bench_servers import (  # noqa: E402
    LIVE_SERVERS,
    Server,
    bridge_status,
    proc_alive,
    proc_comm,
    start_blendwire,
    start_marked,
    start_peer,
    under_xvfb,
)
from blendwire import process  # noqa: E402


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
    mine = {os.getpid()} | set(process.descendants(os.getpid()))
    # Zombies do not count: this VM's init reaps exited orphans only now and then.
    others = [
        p
        for p in (int(d) for d in os.listdir("/proc") if d.isdigit())
        if p not in mine and proc_comm(p).startswith("blender") and proc_alive(p, proc_comm(p))
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

    pool = mp.get_context("spawn").Pool(N_CONCURRENT, initializer=client_worker_init)
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
            st0 = bridge_status(srv.port)
            bench.concurrent("gui", srv, "concurrent8_scene", "persistent_scene", bw_conc)
            st1 = bridge_status(srv.port)
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
                under_xvfb([args.blender, "--python-expr", "print('bench: plain ready', flush=True)"]),
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
            env["BENCH_STANDIN_PORT"] = str(bw_net.free_port())
            srv = start_marked(
                "standin",
                under_xvfb([args.blender, "--python", STANDIN]),
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

        print(
            "issue 22 (the trust layer's cost: checkpoints and the audit log on vs off):", file=sys.stderr, flush=True
        )
        bench_trust.run(bench, log_dir, ("b",) if args.no_gui else ("b", "gui"))
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

"""`Bench`: workloads run in rounds against one server, their medians stored by (server, workload);
shared by bench.py and the row modules (bench_agents, bench_interrupt, bench_mcp)."""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_clients import (
    BATCH,
    N_CONCURRENT,
    client_connect,
    client_worker,
    client_worker_multi,
    is_success,
    make_caller,
    median_of,
    read_json_big,
    round_stats,
    run_loop,
    warm_up,
)
from bench_servers import cpu_seconds, machine_busy_seconds, proc_status

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
        call, close = make_caller(kind, srv.port)
        rounds = []
        try:
            warm_up(call, warmup)
            for _ in range(self.args.rounds):
                bpids = srv.blender_pids()
                c0, m0 = cpu_seconds(bpids), machine_busy_seconds()
                rec = run_loop(call, max_calls, time.monotonic() + window)
                st = round_stats([rec], cpu_seconds(bpids) - c0, machine_busy_seconds() - m0, BATCH.get(kind, 1))
                rounds.append(st)
        finally:
            close()
        self.store(server, workload, rounds)

    def concurrent(self, server, srv, workload, kind, limits):
        max_calls, window, warmup = limits
        self.pooled_rounds(
            server,
            srv,
            workload,
            client_worker,
            self.args.sync_s,
            N_CONCURRENT,
            lambda start_at: (kind, srv.port, warmup, start_at, window, max_calls),
        )

    def concurrent_multi(self, server, srv, workload, kind, limits, procs, per_proc):
        """procs processes x per_proc persistent connections each (selectors), all at once."""
        max_calls, window, warmup = limits
        self.pooled_rounds(
            server,
            srv,
            workload,
            client_worker_multi,
            self.args.sync_s + 0.02 * procs * per_proc,
            procs,
            lambda start_at: (kind, srv.port, per_proc, warmup, start_at, window, max_calls),
        )

    def pooled_rounds(self, server, srv, workload, worker, delay, n_jobs, job):
        """Rounds of `n_jobs` pool processes running `worker(job(start_at))`, all starting together."""
        rounds = []
        for _ in range(self.args.rounds):
            start_at = time.monotonic() + delay
            bpids = srv.blender_pids()
            res = self.pool.map_async(worker, [job(start_at)] * n_jobs)
            # CPU counters are read from the common start time to the pool's return: that includes
            # the tail of the round's fan-in, a small overcount.
            time.sleep(max(0.0, start_at - time.monotonic()))
            c0, m0 = cpu_seconds(bpids), machine_busy_seconds()
            recs = res.get()
            rounds.append(round_stats(recs, cpu_seconds(bpids) - c0, machine_busy_seconds() - m0))
        self.store(server, workload, rounds)

    def big_transfer(self, server, port, payload, n, window):
        """n transfers (bounded by window seconds) of one big response on one persistent
        connection; seconds per transfer (median) and MB/s."""
        s = client_connect(port)
        times, size, fails = [], 0, 0
        try:
            s.sendall(payload)
            read_json_big(s)  # warm-up
            t_end = time.monotonic() + window
            for _ in range(self.args.rounds * n):
                a = time.perf_counter()
                s.sendall(payload)
                resp, size = read_json_big(s)
                b = time.perf_counter()
                if is_success(resp):
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
        c0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        cpu = cpu_seconds(pids) - c0
        wall = time.monotonic() - t0
        rss = sum(proc_status(p).get("VmRSS", 0) for p in pids)
        thr = sum(proc_status(p).get("Threads", 0) for p in pids)
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

    def store(self, server, workload, rounds):
        med = median_of(rounds)
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


def target_lines(targets):
    """One Markdown line per target verdict."""
    return [f"- {t['name']}: {t['value']} → **{t['verdict']}**" for t in targets]


def print_standalone(table, targets, log_dir):
    """What a row module's standalone run prints: its tables, its target verdicts, where the logs are."""
    print("\n".join(table + target_lines(targets)))
    print(f"logs: {log_dir}", file=sys.stderr)


def fmt(v, digits):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"

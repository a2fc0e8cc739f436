"""Issue 4 inside Blender (Blender 3.4 -b and the bpy 5.0.1 module), against `_core` directly:
a flood at a full queue, the tick budget under a flood, a start/stop storm, dispatchers that block
or raise, and token auth (refused requests never run; the token never reaches a log record).

Every wait polls a condition up to a deadline; thread joins are bounded (a hang is a failure).
"""

import json
import logging
import os
import random
import threading
import time

import bwtest
import pytest
from blender_util import in_thread, pump_while
from blendwire import _core, errors
from bwtest import Conn, assert_error, assert_success, wait_for

SLOW = os.environ.get("BLENDWIRE_SLOW", "0") == "1"
STOP_TIMEOUTS = [float(x) for x in os.environ.get("STOP_TIMEOUTS", "0.01,0.5,2").split(",")]


# ---- helpers -----------------------------------------------------------------------------------


def rss_kib(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def join_all(threads, timeout, what):
    alive = [t.name for t in bwtest.join_all(threads, timeout)]
    assert not alive, f"{what}: {len(alive)} threads still running after {timeout}s (deadlock?): {alive[:5]}"


def listening_inodes():
    """Inodes of this process's sockets that are in LISTEN state (IPv4 and IPv6) -> local port."""
    return {inode: local for inode, state, local, _ in bwtest.tcp_sockets() if state == "0A"}


def fill_queue(port, n, type_="hold", timeout=600.0):
    """`n` connections, each with one request that waits in the queue (nobody drains). Returns
    the connections; their responses come once the main thread runs the jobs."""
    conns = []
    for i in range(n):
        c = Conn(port)
        c.sock.sendall(json.dumps({"type": type_, "params": {"i": i, "_timeout_seconds": timeout}}).encode())
        conns.append(c)
    wait_for(lambda: _core.status()["bridge"]["queue_depth"] == n, 60, f"{n} queued jobs")
    return conns


class Tally:
    """Responses of one flood connection, counted by (status, error_code), with one example each
    (the responses themselves are not kept: the test measures this process's memory)."""

    def __init__(self):
        self.counts = {}
        self.examples = {}

    def add(self, resp):
        key = (resp.get("status"), resp.get("error_code"))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.examples.setdefault(key, resp)

    def total(self):
        return sum(self.counts.values())


def flood(port, n_threads, per_thread, batch, type_="echo"):
    """`n_threads` threads, each on its own connection, pipelining `per_thread` requests in
    batches of `batch`; returns (thread list, results) where results[i] is a Tally or an
    exception."""
    results = [None] * n_threads
    one = json.dumps({"type": type_, "params": {"flood": True}}).encode()

    def run(i):
        try:
            p = Conn(port)
            got = Tally()
            try:
                left = per_thread
                while left:
                    k = min(batch, left)
                    p.sock.sendall(one * k)
                    for resp in p.read_many(k, timeout=120, recv_size=1 << 20):
                        got.add(resp)
                    left -= k
            finally:
                p.close()
            results[i] = got
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), name=f"flood-{i}", daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    return threads, results


# ---- a flood at a full queue --------------------------------------------------------------------


@pytest.mark.parametrize("total", [pytest.param(100_000, id="100k")])
def test_flood_at_full_queue_gets_busy_at_once_and_memory_stays_bounded(core, recorder, total):
    """64 jobs fill the queue and nothing drains it; then `total` requests flood in on 8
    connections. Each must be answered `busy` (were one to wait, it would wait forever: the main
    thread does not drain until the flood is over). RSS stays bounded; then draining works."""
    core.set_dispatcher(recorder)
    core.set_queue_capacity(64)
    _, port = core.start_service("127.0.0.1", 0, ["hold", "echo"], default_timeout=600.0)
    held = fill_queue(port, 64)

    # warm-up flood: allocator arenas, buffers and per-connection state reach their steady size
    threads, results = flood(port, 8, 2_000, 500)
    join_all(threads, 120, "warm-up flood")
    for r in results:
        assert not isinstance(r, BaseException), r
    rss0 = rss_kib()
    busy0 = core.status()["bridge"]["busy_rejections"]

    per = total // 8
    threads, results = flood(port, 8, per, 500)
    peak = [rss0]
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], rss_kib())
        assert core.status()["bridge"]["queue_depth"] == 64
        threads[0].join(0.05)
    join_all(threads, 300, "flood")
    for r in results:
        assert not isinstance(r, BaseException), r
        assert list(r.counts) == [("error", "busy")], r.examples
        assert r.total() == per
        assert "queue is full" in r.examples[("error", "busy")]["message"], r.examples
    st = core.status()["bridge"]
    assert st["busy_rejections"] - busy0 == 8 * per
    assert st["queue_depth"] == 64
    assert recorder.calls == [], "a rejected request reached the dispatcher"
    grown_mib = (max(peak[0], rss_kib()) - rss0) / 1024
    # 100,000 rejected requests: keeping even 500 bytes each would be 48 MiB.
    assert grown_mib < 24, f"RSS grew {grown_mib:.1f} MiB during a flood of {8 * per} busy requests"

    # draining works: the 64 held jobs run and their callers get their answers
    assert core.tick(60_000.0) == 0
    for c in held:
        assert assert_success(c.read(30))["echo"] == "hold"
        c.close()
    assert len(recorder.calls) == 64
    # and the queue takes new work again
    t, box = in_thread(lambda: bwtest.request(port, "echo", {"after": 1}))
    wait_for(lambda: core.status()["bridge"]["queue_depth"] == 1, 30, "a new job queued")
    core.tick(60_000.0)
    t.join(30)
    assert assert_success(box["result"])["params"] == {"after": 1}


# ---- tick under a flood -------------------------------------------------------------------------


def test_tick_stays_within_budget_plus_one_job_under_a_flood(core, recorder):
    """The GUI keeps drawing: under a flood, one tick never starts a job once its budget is spent.
    Checked from the handlers' own timings: in every tick, the jobs before the last one took less
    than the budget in total (the tick checks the budget between jobs), and at least one job runs."""
    budget_ms, job_ms = 5.0, 1.0
    runs = []  # (tick number, duration in ms) per job

    tick_no = [0]

    def work(params):
        t0 = time.perf_counter()
        while (time.perf_counter() - t0) * 1000 < job_ms:
            pass
        runs.append((tick_no[0], (time.perf_counter() - t0) * 1000))
        return "done"

    recorder.handlers["work"] = work
    core.set_dispatcher(recorder)
    core.set_queue_capacity(64)
    _, port = core.start_service("127.0.0.1", 0, ["work"], default_timeout=600.0)
    held = fill_queue(port, 64, type_="work")
    threads, results = flood(port, 4, 1_000, 50, type_="work")

    def drained():
        if not (any(t.is_alive() for t in threads) or core.status()["bridge"]["queue_depth"]):
            return True
        tick_no[0] += 1
        core.tick(budget_ms)
        return False

    wait_for(drained, 240, "the flood to be drained by ticking", interval=0)
    join_all(threads, 60, "flood")
    for r in results:
        assert not isinstance(r, BaseException), r
        assert set(r.counts) <= {("success", None), ("error", "busy")}, r.examples
        assert r.total() == 1_000
    for c in held:
        assert_success(c.read(30))
        c.close()

    per_tick = {}
    for n, ms in runs:
        per_tick.setdefault(n, []).append(ms)
    assert len(runs) >= 64 and len(per_tick) >= 64 // int(budget_ms / job_ms + 1)
    over = {n: d for n, d in per_tick.items() if sum(d[:-1]) >= budget_ms}
    assert not over, (
        f"ticks that started a job after their {budget_ms} ms budget was spent "
        f"(job durations in ms): {dict(list(over.items())[:5])}"
    )
    assert max(len(d) for d in per_tick.values()) > 1, "never more than one job per tick: budget unused"
    st = core.status()["bridge"]
    assert st["busy_rejections"] > 0, "the flood never met a full queue"
    assert st["max_job_ms"] > 0 and st["max_tick_ms"] > 0


# ---- start/stop storm ---------------------------------------------------------------------------


def run_storm(core, seconds, fixed, stop_on_double=False):
    """50 threads start and stop the service at random (port 0 or `fixed`, random stop timeouts)
    while 4 threads make requests to whatever address is current and a monitor counts this
    process's listening sockets. Returns (starts, unexpected exceptions, listener sets seen with
    more than one listener, most listeners at once). Fails on a deadlock (bounded joins)."""
    stop = threading.Event()
    unexpected, starts, listener_max = [], [0], [0]
    doubles = []

    def stormer(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            action = rnd.random()
            try:
                if action < 0.45:
                    core.start_service("127.0.0.1", 0 if rnd.random() < 0.5 else fixed, ["echo"], read_timeout=5.0)
                    starts[0] += 1
                elif action < 0.9:
                    core.stop_service(rnd.choice(STOP_TIMEOUTS))
                else:
                    core.service_address()
                    core.status()
            except errors.ServiceError:
                pass  # already running, or PortInUse (a ServiceError)
            except BaseException as e:
                unexpected.append(repr(e))

    def requester():
        while not stop.is_set():
            addr = core.service_address()
            if addr is None:
                continue
            try:
                with Conn(addr[1], timeout=10) as c:
                    resp = c.request({"type": "nope", "params": {}}, timeout=10)
                assert_error(resp, "unknown_rpc_command")
            except (ConnectionError, OSError):
                pass  # stopped under our feet: a refused or closed connection is fine
            except BaseException as e:
                unexpected.append(repr(e))

    def monitor():
        while not stop.is_set():
            ls = listening_inodes()
            listener_max[0] = max(listener_max[0], len(ls))
            if len(ls) > 1:
                doubles.append(ls)

    threads = [threading.Thread(target=stormer, args=(i,), name=f"storm-{i}", daemon=True) for i in range(50)]
    threads += [threading.Thread(target=requester, name=f"req-{i}", daemon=True) for i in range(4)]
    threads.append(threading.Thread(target=monitor, name="monitor", daemon=True))
    for t in threads:
        t.start()
    bwtest.poll_until(lambda: stop_on_double and doubles, seconds, interval=0.05)
    stop.set()
    join_all(threads, 60, "start/stop storm")
    return starts[0], unexpected, doubles, listener_max[0]


def check_final_state(core, fixed):
    """service_address() agrees with the listeners that exist; then a clean stop and start."""
    addr = core.service_address()
    ls = listening_inodes()
    if addr is None:
        assert ls == {}, f"no service_address() but listeners {ls}"
        assert core.status()["service"]["running"] is False
    else:
        assert list(ls.values()) == [addr[1]], (addr, ls)
        assert core.status()["service"]["running"] is True
        assert_error(bwtest.request(addr[1], "nope", timeout=30), "unknown_rpc_command")
    core.stop_service(2.0)
    assert core.service_address() is None and listening_inodes() == {}
    _, port = core.start_service("127.0.0.1", fixed, ["echo"])
    assert port == fixed and list(listening_inodes().values()) == [fixed]


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(3.0, id="3s"),
        pytest.param(10.0, id="10s", marks=pytest.mark.slow),
    ],
)
def test_start_stop_storm(core, seconds):
    """Never two listeners, no deadlock, no exception but ServiceError/PortInUse, a consistent
    final state. (Before cff778f, stop_service let go of its lock before closing the listener:
    this storm saw up to 10 listeners at once.)"""
    fixed = bwtest.free_port()
    starts, unexpected, doubles, listener_max = run_storm(core, seconds, fixed)
    assert not doubles, f"{listener_max} listeners at once, e.g. {doubles[:2]} (inode: port)"
    assert not unexpected, unexpected[:5]
    # (listener_max may be 0 on a loaded machine: the monitor thread competes for the GIL with 54
    # others; check_final_state then proves a start really listens.)
    assert starts > 0 and listener_max <= 1, "the storm never started a service"
    check_final_state(core, fixed)


# ---- dispatchers that block or raise ------------------------------------------------------------


class NastyError(Exception):
    def __str__(self):
        raise RuntimeError("__str__ of the exception fails too")


def test_dispatcher_that_raises_or_blocks_never_stops_others(core, recorder, tmp_path):
    """Handlers raising any exception (even one whose __str__ raises, or a BaseException) are
    answered as errors and the next request is served; a handler blocking the main thread holds
    up only main-thread work: other connections are still accepted, answered at once where no
    main thread is needed, time out cleanly where it is, and are all served once it returns."""
    release = threading.Event()

    def block(params):
        release.wait(120)
        return "unblocked"

    def nasty(params):
        raise NastyError()

    def base(params):
        raise GeneratorExit("a BaseException from a handler")

    recorder.handlers.update(block=block, nasty=nasty, base=base, boom=lambda p: 1 / 0)
    core.set_dispatcher(recorder)
    _, port = core.start_service("127.0.0.1", 0, ["block", "nasty", "base", "boom", "echo"])

    def client():
        try:
            return client_steps()
        finally:
            release.set()  # never leave the main thread blocked when a step fails

    def client_steps():
        with Conn(port) as c:
            out = [c.request({"type": t, "params": {}}) for t in ("boom", "nasty", "base", "echo")]
        blocker = Conn(port)
        blocker.send({"type": "block", "params": {}})
        wait_for(lambda: recorder.types()[-1:] == ["block"], 30, "the blocking handler to run")
        # the main thread is blocked now
        for _ in range(20):
            assert_error(bwtest.request(port, "not_there", timeout=30), "unknown_rpc_command")
        with Conn(port) as c:
            late = c.request({"type": "echo", "params": {"_timeout_seconds": 0.3}}, timeout=30)
        assert_error(late, "timeout")
        waiting = [in_thread(lambda i=i: bwtest.request(port, "echo", {"i": i}, timeout=60)) for i in range(5)]
        # 6: the expired job stays queued (not run) until the main thread gets to it
        wait_for(lambda: _core.status()["bridge"]["queue_depth"] == 6, 30, "5 jobs waiting behind the blocker")
        release.set()
        assert assert_success(blocker.read(30)) == "unblocked"
        blocker.close()
        for t, box in waiting:
            t.join(60)
            assert assert_success(box["result"])["echo"] == "echo"
        out.append(bwtest.request(port, "echo", {"last": 1}))
        return out

    _, (r_boom, r_nasty, r_base, r_echo, r_last) = pump_while(client)
    assert_error(r_boom, "handler_exception")
    assert "ZeroDivisionError" in r_boom["message"], r_boom
    assert "NastyError" in assert_error(r_nasty, "handler_exception")["message"], r_nasty
    assert "GeneratorExit" in assert_error(r_base, "handler_exception")["message"], r_base
    assert _core.status()["bridge"]["expired"] >= 1
    assert assert_success(r_echo)["echo"] == "echo"
    assert assert_success(r_last)["params"] == {"last": 1}


# ---- token --------------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def texts(self):
        out = []
        for r in self.records:
            out.append(r.getMessage())
            out.append(repr(r.args))
            if r.exc_info:
                out.append(logging.Formatter().formatException(r.exc_info))
        return out


def test_token_refuses_requests_without_it_and_is_never_logged(core, recorder):
    token = "tok-" + os.urandom(8).hex()
    log = logging.getLogger("blendwire")
    cap = Capture()
    old_level = log.level
    log.addHandler(cap)
    log.setLevel(logging.DEBUG)
    core.set_log_level("DEBUG")
    try:
        core.set_dispatcher(recorder)
        _, port = core.start_service("127.0.0.1", 0, ["echo"], token=token, max_request_bytes=4096)

        def client():
            out = {}
            with Conn(port) as c:
                out["none"] = c.request({"type": "echo", "params": {"x": 1}})
                out["wrong"] = c.request({"type": "echo", "params": {}, "token": token[:-1]})
                out["in_params"] = c.request({"type": "echo", "params": {"token": token}})
                out["not_str"] = c.request({"type": "echo", "params": {}, "token": 12345})
                out["legacy"] = c.request({"code": "print('ran')"})
                out["shutdown"] = c.request({"type": "server_shutdown", "params": {}})
                out["ok"] = c.request({"type": "echo", "params": {"y": 2}, "token": token})
            # hostile input carrying the token: malformed, oversized, unknown command
            with Conn(port) as c:
                c.send(b'{"token": "' + token.encode() + b'", "type": echo}')
                out["bad_json"] = c.read(30)
            with Conn(port) as c:
                out["unknown"] = c.request({"type": "nope", "params": {}, "token": token})
            with Conn(port) as c:
                c.send(b'{"token": "' + token.encode() + b'", "pad": "' + b"x" * 8192 + b'"}')
                out["too_large"] = c.read(30)
            client_ = _core.Client("127.0.0.1", port, 30.0, token=token)
            try:
                out["client"] = client_.call("echo", {"z": 3})
            finally:
                client_.close()
            return out

        _, out = pump_while(client)
        core.flush_logs()
        for key in ("none", "wrong", "in_params", "not_str", "legacy", "shutdown"):
            resp = assert_error(out[key], "unauthorized")
            assert "token" in resp["message"], resp
            assert token not in json.dumps(resp), resp
        assert assert_success(out["ok"])["params"] == {"y": 2}
        assert out["client"]["params"] == {"z": 3}
        assert_error(out["bad_json"])
        assert_error(out["too_large"], "request_too_large")
        assert_error(out["unknown"])
        # only the two authorised requests ran, and the service was not shut down
        assert [p for _, p in recorder.calls] == [{"y": 2}, {"z": 3}]
        assert core.service_address() is not None
        st = core.status()["service"]
        assert st["errors"].get("unauthorized", 0) >= 6, st
        assert cap.records, "no log records captured at DEBUG: the check below would prove nothing"
        leaked = [t for t in cap.texts() if token in t or token[:-1] in t]
        assert not leaked, f"the token appears in log records: {leaked[:3]}"
    finally:
        log.removeHandler(cap)
        log.setLevel(old_level)
        core.set_log_level("INFO")

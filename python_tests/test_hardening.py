"""Issue 4 against real Blender (`blendwire serve` on Debian's blender -b): load with zero failures
and RSS back after it, hostile input (random bytes, deep nesting, 100 MB without a closing brace,
1,000 idle connections, a stalled half request), a long handler, and Blender quitting under load.

The service's limits are serve's defaults (64 MiB requests, 256 connections, 30 s read timeout,
queue of 1024). Every wait polls a condition up to a deadline.
"""

import json
import os
import random
import selectors
import socket
import threading
import time

import bwtest
import pytest
from bwtest import Conn, assert_error, assert_success, stdout_of, wait_for

pytestmark = pytest.mark.runtimes("background")

MAX_CONNECTIONS = 256  # serve's default
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # serve's default


# ---- helpers -----------------------------------------------------------------------------------


def exec_req(code, **params):
    return {"type": "execute_code", "params": {"code": code, **params}}


def blender_pid(server):
    """The pid of the process that serves (Blender, or the Python running bpy)."""
    return int(stdout_of(assert_success(bwtest.execute(server.port, "import os\nprint(os.getpid())"))))


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def core_status(server):
    return assert_success(bwtest.request(server.port, "get_status"))


def wait_idle(server, timeout=30):
    """Until the service has no connection open but the one asking and an empty queue."""

    def idle():
        st = core_status(server)
        return st["service"]["connections_open"] <= 1 and st["bridge"]["queue_depth"] == 0 and st

    return wait_for(idle, timeout, "the service to be idle (no other connections, empty queue)", interval=0.05)


def assert_still_serves(server):
    r = assert_success(bwtest.request(server.port, "get_scene_info", timeout=30))
    assert "object_count" in r
    assert stdout_of(assert_success(bwtest.execute(server.port, "print('alive')", timeout=30))) == "alive\n"


def run_threads(fn, n, timeout, what):
    """Run fn(i) on n threads; return the list of exceptions they raised (bounded joins)."""
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:
            errors.append(f"{what} #{i}: {e!r}")

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    alive = len(bwtest.join_all(threads, timeout))
    assert not alive, f"{what}: {alive} of {n} threads still running after {timeout}s"
    return errors


def one_shot_load(port, n):
    """n sequential one-shot connections (connect, get_scene_info, close); raises on any failure."""
    req = json.dumps({"type": "get_scene_info", "params": {}}).encode()
    for i in range(n):
        with socket.create_connection((bwtest.HOST, port), timeout=30) as s:
            s.sendall(req)
            try:
                resp = bwtest.read_json(s, whole=True)[0]
            except ConnectionError as e:
                raise AssertionError(f"call {i}: {e}") from None
        assert resp.get("status") == "success", (i, resp)


def persistent_load(port, clients, calls):
    """`clients` threads, each one persistent connection making `calls` calls (mixed commands,
    each answer checked). Returns the failures."""

    def client(i):
        with Conn(port, timeout=120) as c:
            for k in range(calls):
                if k % 2:
                    out = stdout_of(assert_success(c.request(exec_req(f"print({i} * 1000 + {k})"))))
                    assert out == f"{i * 1000 + k}\n", out
                else:
                    assert "object_count" in assert_success(c.request({"type": "get_scene_info", "params": {}}))

    return run_threads(client, clients, 600, "persistent client")


def assert_rss_settles(pid, baseline_kib, timeout=60.0):
    """RSS back within 10% of `baseline_kib` (polled: freed memory may take a moment to return)."""
    last = [0]

    def back():
        last[0] = rss_kib(pid)
        return last[0] <= baseline_kib * 1.10

    try:
        wait_for(back, timeout, "RSS back within 10% of its value after warm-up", interval=0.25)
    except AssertionError:
        raise AssertionError(
            f"RSS {last[0] / 1024:.1f} MiB, more than 10% above "
            f"{baseline_kib / 1024:.1f} MiB after warm-up, {timeout}s after the load"
        ) from None


# ---- load ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(10_000, id="10k"),
    ],
)
def test_sequential_one_shot_connections(server, n):
    pid = blender_pid(server)
    one_shot_load(server.port, 500)  # warm-up
    wait_idle(server)
    base = rss_kib(pid)
    before = core_status(server)["service"]
    one_shot_load(server.port, n)
    st = wait_idle(server)
    assert st["service"]["connections_total"] - before["connections_total"] >= n
    assert_rss_settles(pid, base)
    assert_still_serves(server)


@pytest.mark.parametrize(
    "clients,calls",
    [
        pytest.param(200, 100, id="200x100"),
    ],
)
def test_concurrent_persistent_clients(server, clients, calls):
    pid = blender_pid(server)
    assert persistent_load(server.port, clients, 10) == []  # warm-up: as many connections at once
    wait_idle(server)
    base = rss_kib(pid)
    threads0 = proc_status(pid, "Threads")
    errors = persistent_load(server.port, clients, calls)
    assert errors == [], errors[:5]
    st = wait_idle(server)
    assert st["bridge"]["queue_depth"] == 0
    assert_rss_settles(pid, base)
    assert proc_status(pid, "Threads") == threads0, "threads left over after the load"
    assert_still_serves(server)


# ---- hostile input ---------------------------------------------------------------------------------


def test_random_bytes(server):
    """Random bytes (seeded, some with JSON punctuation mixed in), then the client closes its
    side: every answer is a clean error, the connection is closed, nothing runs, and the service
    still serves."""
    rnd = random.Random(4)
    alphabet = bytes(range(256))
    punct = b'{}[]":,\\ \n'
    runs0 = core_status(server)["bridge"]["completed"]
    answered = 0
    for i in range(30):
        n = rnd.choice([1, 7, 100, 4096, 65536, 300_000])
        pool = punct if i % 3 == 0 else alphabet
        blob = bytes(rnd.choice(pool) for _ in range(min(n, 5000))) * max(1, n // 5000)
        with socket.create_connection((bwtest.HOST, server.port), timeout=30) as s:
            try:
                s.sendall(blob)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server closed first (e.g. a frame over a limit): read what it said
            data, closed = bwtest.read_until_eof(s, 30)
        assert closed, f"blob #{i} ({n} bytes): the connection was not closed after the client's EOF"
        for resp in bwtest.parse_all(data):
            assert_error(resp)
            answered += 1
    assert answered >= 10, "hardly any junk was answered with an error"
    # no job ran for the junk (get_status is answered by the service itself, not by a job)
    assert core_status(server)["bridge"]["completed"] == runs0
    assert_still_serves(server)


def send_reading(port, chunks, timeout=120):
    """Send `chunks` while a reader thread takes the answer (so an answer sent before the server
    closes is read even if our sending runs into the closed connection). Returns a dict with
    "response" and "eof", or "error"."""
    c = Conn(port, timeout=timeout)
    got = {}

    def reader():
        try:
            got["response"] = c.read(timeout=timeout)
            got["eof"] = c.at_eof(30)
        except (ConnectionError, TimeoutError, OSError) as e:
            got["error"] = repr(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for chunk in chunks:
            c.sock.sendall(chunk)
    except OSError:
        pass  # closed by the server while we were still sending: expected
    t.join(timeout + 30)
    c.close()
    assert not t.is_alive(), f"no answer and no close within {timeout + 30} s"
    assert "response" in got, f"no error response before the close: {got}"
    return got


def test_deeply_nested_json(server):
    ok = {"type": "get_scene_info", "params": {"deep": json.loads("[" * 50 + "]" * 50)}}
    with Conn(server.port) as c:
        assert "object_count" in assert_success(c.request(ok))
    for depth in (101, 1000, 1_000_000):
        data = b'{"type": "get_scene_info", "params": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
        got = send_reading(server.port, [data])
        resp = assert_error(got["response"], "too_deep")
        assert "100" in resp["message"], resp
        assert got["eof"], "the connection was not closed after a too-deep request"
    assert_still_serves(server)


def test_100_mb_without_closing_brace_is_cut_at_the_size_limit(server):
    pid = blender_pid(server)
    chunk = b"x" * (1 << 20)
    got = send_reading(server.port, [b'{"type": "execute_code", "params": {"code": "'] + [chunk] * 100)
    resp = assert_error(got["response"], "request_too_large")
    assert str(MAX_REQUEST_BYTES) in resp["message"], resp
    assert got["eof"], "the connection stayed open after request_too_large"
    assert_still_serves(server)
    # the buffer is gone with the connection
    wait_idle(server)
    assert rss_kib(pid) < 1024 * 1024, "RSS over 1 GiB after one oversized request"


def test_1000_idle_connections_over_the_limit_get_a_clear_error(server):
    wait_idle(server)
    sel = selectors.DefaultSelector()
    socks, answers, closed = [], {}, set()
    try:
        for _ in range(1000):
            s = socket.create_connection((bwtest.HOST, server.port), timeout=30)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
            answers[s] = b""
        refused = 1000 - MAX_CONNECTIONS

        def pump_reads():
            for key, _ in sel.select(0.05):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                if chunk:
                    answers[s] += chunk
                else:
                    closed.add(s)
                    sel.unregister(s)
            return len(closed) >= refused

        wait_for(pump_reads, 60, f"{refused} connections over the limit to be answered and closed", interval=0)
        assert len(closed) == refused, f"{len(closed)} closed, expected exactly {refused}"
        for s in closed:
            resp = assert_error(json.loads(answers[s]), "too_many_connections")
            assert str(MAX_CONNECTIONS) in resp["message"], resp
        kept = [s for s in socks if s not in closed]
        assert all(answers[s] == b"" for s in kept)
        # every connection within the limit is a real, working connection
        req = json.dumps({"type": "get_polyhaven_status", "params": {}}).encode()
        for s in kept:
            s.setblocking(True)
            s.settimeout(30)
            s.sendall(req)
        for s in kept:
            try:
                resp = bwtest.read_json(s, answers[s], whole=True)[0]
            except ConnectionError:
                raise AssertionError("a connection within the limit was closed") from None
            assert_success(resp)
    finally:
        for s in socks:
            s.close()
        sel.close()
    st = wait_idle(server)
    assert st["service"]["errors"].get("too_many_connections", 0) >= refused
    assert_still_serves(server)


@pytest.mark.slow
def test_half_request_then_stall_is_closed_after_the_read_timeout(server):
    """Default read timeout: 30 s after the first byte of an incomplete request."""
    with Conn(server.port, timeout=90) as c:
        c.send(b'{"type": "get_scene_info", "par')
        t0 = time.monotonic()
        resp = assert_error(c.read(90), "incomplete_request")
        waited = time.monotonic() - t0
        assert "30" in resp["message"], resp
        assert c.at_eof(30), "the connection stayed open after incomplete_request"
    assert waited >= 29, f"closed after {waited:.1f} s, before the 30 s read timeout"
    assert_still_serves(server)


def test_serve_limit_flags_stall_and_connection_limit(serve_factory):
    """`serve --read-timeout/--max-connections/--queue-capacity` reach the service."""
    sp = serve_factory("background", extra=["--read-timeout", "0.5", "--max-connections", "2", "--queue-capacity", "8"])
    with Conn(sp.port) as stalled, Conn(sp.port) as second:
        stalled.send(b'{"type": "get_scene_info", "par')
        resp = assert_error(stalled.read(60), "incomplete_request")
        assert "0.5 s" in resp["message"], resp
        assert stalled.at_eof(30)
        wait_for(
            lambda: (
                assert_success(second.request({"type": "get_status", "params": {}}))["service"]["connections_open"] == 1
            ),
            30,
            "the stalled connection to be gone",
        )
        status = assert_success(second.request({"type": "get_status", "params": {}}))
        assert status["bridge"]["capacity"] == 8
        with Conn(sp.port) as third, Conn(sp.port) as fourth:
            assert_success(third.request({"type": "get_scene_info", "params": {}}))
            resp = assert_error(fourth.read(30), "too_many_connections")
            assert "limit 2" in resp["message"]

    def served_again():
        # The service sees our closes a moment after we make them; until then it is still full.
        try:
            return bwtest.request(sp.port, "get_scene_info", timeout=10)["status"] == "success"
        except (ConnectionError, OSError):
            return False

    wait_for(served_again, 30, "the service to take a connection again")


# ---- a long handler -----------------------------------------------------------------------------------


def long_handler_case(server, blocker_code, release):
    """While `blocker_code` holds the main thread: a caller with a small _timeout_seconds gets a
    `timeout` naming it; other callers wait (default) and are served afterwards; with a full queue
    (capacity set to 2 inside Blender) others get `busy` at once. No leak once it ends."""
    pid = blender_pid(server)
    wait_idle(server)
    threads0 = proc_status(pid, "Threads")
    blocker = Conn(server.port, timeout=300)
    try:
        blocker.send(exec_req(blocker_code, _timeout_seconds=600))
        wait_for(lambda: os.path.exists(release[0]), 60, "the long handler to start")
        # a caller with a small timeout
        with Conn(server.port) as c:
            resp = assert_error(c.request(exec_req("print('late')", _timeout_seconds=1), timeout=60), "timeout")
        assert "1 s" in resp["message"] and "_timeout_seconds" in resp["message"], resp
        # callers that wait (queue has room)
        waiting = [Conn(server.port, timeout=300) for _ in range(3)]
        for i, c in enumerate(waiting):
            c.send(exec_req(f"print('waited {i}')", _timeout_seconds=600))
        # and the answer without the main thread is immediate
        assert_error(bwtest.request(server.port, "no_such_command", timeout=30), "unknown_rpc_command")
    finally:
        release[1]()
    assert stdout_of(assert_success(blocker.read(300))) == "released\n"
    blocker.close()
    for i, c in enumerate(waiting):
        assert stdout_of(assert_success(c.read(60))) == f"waited {i}\n"
        c.close()
    st = wait_idle(server)
    assert st["bridge"]["queue_depth"] == 0
    assert st["bridge"]["expired"] + st["bridge"]["cancelled"] >= 1
    assert proc_status(pid, "Threads") == threads0
    assert_still_serves(server)


def test_long_handler_caller_times_out_others_wait(server, tmp_flag_dir):
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    long_handler_case(server, bwtest.blocking_code(started, release), (started, lambda: bwtest.touch(release)))


@pytest.mark.slow
def test_handler_running_60_seconds(server, tmp_flag_dir):
    started = os.path.join(tmp_flag_dir, "started")
    code = f"import time\nopen({started!r}, 'w').close()\ntime.sleep(60)\nprint('released')\n"
    long_handler_case(server, code, (started, lambda: None))


def test_full_queue_behind_a_long_handler_answers_busy_at_once(server, tmp_flag_dir):
    """Queue capacity 2 (set inside Blender), a long handler holding the main thread, two jobs
    waiting: every further caller gets `busy` at once. (The queue is seen full from the first
    `busy`; callers before that may wait in the queue and time out.)"""
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    set_cap = "from blendwire import _core\n_core.set_queue_capacity({})\nprint('ok')"
    assert_success(bwtest.execute(server.port, set_cap.format(2)))
    busy0 = core_status(server)["bridge"]["busy_rejections"]
    blocker = Conn(server.port, timeout=300)
    queued, probes = [], []
    try:
        blocker.send(exec_req(bwtest.blocking_code(started, release)))
        bwtest.wait_file(started)
        queued = [Conn(server.port, timeout=120) for _ in range(2)]
        for c in queued:
            c.send(exec_req("print('queued')", _timeout_seconds=600))

        def probe():
            resp = bwtest.execute(server.port, "print('probe')", timeout=30, _timeout_seconds=2)
            probes.append(resp)
            return resp.get("error_code") == "busy"

        wait_for(probe, 60, "a busy answer", interval=0)
        for _ in range(50):
            assert_error(bwtest.execute(server.port, "print('no room')", timeout=30, _timeout_seconds=600), "busy")
    finally:
        bwtest.touch(release)
    assert_success(blocker.read(120))
    blocker.close()
    for resp in probes:
        assert resp.get("error_code") in ("busy", "timeout"), resp
    for c in queued:
        resp = c.read(60)
        assert resp.get("status") == "success" or resp.get("error_code") == "busy", resp
        c.close()
    assert_success(bwtest.execute(server.port, set_cap.format(1024)))
    st = core_status(server)["bridge"]
    assert st["capacity"] == 1024
    assert st["busy_rejections"] - busy0 >= 51
    assert_still_serves(server)


# ---- Blender quitting during load -----------------------------------------------------------------------


def test_server_shutdown_while_8_clients_hammer(serve_factory):
    sp = serve_factory("background")
    stop = threading.Event()
    outcomes = [None] * 8
    counts = [0] * 8

    def hammer(i):
        try:
            with Conn(sp.port, timeout=60) as c:
                while True:
                    req = exec_req(f"print({i})") if counts[i] % 2 else {"type": "get_scene_info", "params": {}}
                    resp = c.request(req, timeout=60)
                    counts[i] += 1
                    if resp.get("status") != "success":
                        outcomes[i] = ("error", resp)
                        return
                    if stop.is_set() and counts[i] > 10_000:
                        outcomes[i] = ("still serving", resp)
                        return
        except ConnectionError as e:
            outcomes[i] = ("closed", repr(e))
        except TimeoutError as e:
            outcomes[i] = ("timeout", repr(e))
        except OSError as e:
            outcomes[i] = ("closed", repr(e))

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: min(counts) >= 50, 60, "every client to have made 50 calls")
    resp = bwtest.request(sp.port, "server_shutdown", timeout=30)
    assert_success(resp)
    stop.set()
    assert not bwtest.join_all(threads, 60), f"clients hang after server_shutdown: {outcomes}"
    for kind, detail in outcomes:
        assert kind in ("closed", "error"), (kind, detail)
        if kind == "error":
            assert_error(detail)
    rc = sp.wait_exit(30)
    assert rc == 0, f"exit status {rc} after server_shutdown under load\n{sp.output()}"
    assert bwtest.connection_refused(sp.port)

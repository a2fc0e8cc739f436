"""blendwire._core inside Blender: the main-thread bridge (pump, tick, deadlines, busy) and the service."""

import json
import os
import signal
import threading

import bpy
import bwtest
import pytest
from blender_util import in_thread, pump_while, runtime_name
from blendwire import _core, errors
from bwtest import Conn, assert_error, assert_success, wait_for


def expected_runtime():
    """Which Blender these tests must be in (BLENDWIRE_TEST_HOST is set by scripts/blender_pytest.py)."""
    return "background" if os.environ.get("BLENDWIRE_TEST_HOST") == "blender" else "bpy"


def test_runs_in_the_expected_blender():
    assert runtime_name() == expected_runtime()
    if expected_runtime() == "background":
        assert bpy.app.version[:2] == (3, 4), bpy.app.version_string  # Debian's Blender
    else:
        assert bpy.app.version[:2] == (5, 0), bpy.app.version_string  # bpy 5.0.1 from PyPI


def test_version_and_status_shape(core):
    assert isinstance(core.__version__, str) and core.__version__
    st = core.status()
    assert st["version"] == core.__version__
    assert st["service"]["running"] is False
    for key in (
        "queue_depth",
        "capacity",
        "completed",
        "failed",
        "expired",
        "cancelled",
        "busy_rejections",
        "results_dropped",
    ):
        assert isinstance(st["bridge"][key], int), (key, st)
    assert st["bridge"]["capacity"] == 1024
    assert core.service_address() is None


# ---- pump ------------------------------------------------------------------------------------


def test_pump_runs_jobs_until_stop_pump(service, recorder):
    port = service

    def client():
        out = []
        with Conn(port) as c:
            for i in range(50):
                out.append(c.request({"type": "echo", "params": {"i": i}}))
        for i in range(10):
            out.append(bwtest.request(port, "echo", {"one_shot": i}))
        return out

    reason, responses = pump_while(client)
    assert reason == "stopped"
    results = [assert_success(r) for r in responses]
    assert results[:50] == [{"echo": "echo", "params": {"i": i}} for i in range(50)]
    assert [r["params"]["one_shot"] for r in results[50:]] == list(range(10))
    assert recorder.types() == ["echo"] * 60
    st = _core.status()
    assert st["bridge"]["completed"] >= 60
    assert st["service"]["running"] is True and st["service"]["port"] == port


def test_stop_pump_before_pump_is_kept(core):
    core.stop_pump("early")
    assert core.pump() == "early"


def test_pump_returns_shutdown_on_server_shutdown(service, recorder):
    port = service

    def client():
        return bwtest.request(port, "server_shutdown")

    dog = threading.Timer(120, lambda: _core.stop_pump("watchdog"))
    t, box = in_thread(client)
    dog.start()
    try:
        reason = _core.pump()
    finally:
        dog.cancel()
    t.join(30)
    assert reason == "shutdown"
    assert assert_success(box["result"]) == {"message": "Server shutdown initiated"}
    assert "server_shutdown" not in recorder.types()  # built in, not dispatched


def test_main_thread_only_runs_in_pump_or_tick(service, recorder):
    """Jobs wait in the queue until the main thread pumps; they are not run by network threads."""
    port = service
    t, box = in_thread(lambda: bwtest.request(port, "echo", {"x": 1}))
    wait_for(lambda: _core.status()["bridge"]["queue_depth"] == 1, 30, "the job to be queued")
    assert recorder.calls == []
    assert _core.tick(1000.0) == 0
    t.join(30)
    assert assert_success(box["result"]) == {"echo": "echo", "params": {"x": 1}}


def test_signal_handler_exception_propagates_out_of_pump(service):
    port = service

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGUSR1, handler)
    dog = threading.Timer(120, lambda: _core.stop_pump("watchdog"))

    def client():
        # an answered job proves the pump is running before the signal is sent
        assert_success(bwtest.request(port, "echo"))
        os.kill(os.getpid(), signal.SIGUSR1)

    try:
        t, box = in_thread(client)
        dog.start()
        with pytest.raises(Interrupted):
            _core.pump()
    finally:
        dog.cancel()
        signal.signal(signal.SIGUSR1, previous)
    t.join(30)
    assert "error" not in box, box


# ---- dispatcher results and errors ------------------------------------------------------------


def test_dispatcher_errors(service, recorder):
    port = service

    def boom(params):
        def deep_in_handler():
            raise ValueError("boom-xyz")

        deep_in_handler()

    def fail(params):
        raise errors.CommandError("clean failure", "my_code")

    recorder.handlers.update(boom=boom, fail=fail, bad_result=lambda p: {"x": object()})

    def client():
        with Conn(port) as c:
            return [c.request({"type": t, "params": {}}) for t in ("boom", "fail", "bad_result", "echo")]

    _, (r_boom, r_fail, r_bad, r_echo) = pump_while(client)
    assert_error(r_boom, "handler_exception")
    assert "boom-xyz" in r_boom["message"] and "Traceback" in r_boom["message"], r_boom
    assert "deep_in_handler" in r_boom["message"], r_boom
    assert_error(r_fail, "my_code")
    assert r_fail["message"] == "clean failure"
    assert_error(r_bad)  # not JSON-serialisable: an error, not a crash
    assert assert_success(r_echo)["echo"] == "echo"
    assert _core.status()["bridge"]["failed"] >= 2


def test_handler_results_convert_to_json(service, recorder):
    import collections
    import math

    loop = []
    loop.append(loop)
    cases = {
        "plain": {
            "t": (1, "a"),
            "b": True,
            "f": False,
            "big": 2**64 - 1,
            "neg": -(2**63),
            "x": 1.5,
            "s": "é😀",
            "n": None,
            "l": [[], {}],
            "nested": {"k": [{"v": 0.1}]},
        },
        "subclass": collections.OrderedDict([("b", 1), ("a", [2])]),
        "self_containing": loop,
        "too_big_int": 2**80,
        "nan": math.nan,
    }
    recorder.handlers["convert"] = lambda p: cases[p["case"]]

    def client():
        with Conn(service) as c:
            return {name: c.request({"type": "convert", "params": {"case": name}}) for name in cases}

    _, got = pump_while(client)
    assert assert_success(got["plain"]) == {
        "t": [1, "a"],
        "b": True,
        "f": False,
        "big": 2**64 - 1,
        "neg": -(2**63),
        "x": 1.5,
        "s": "é😀",
        "n": None,
        "l": [[], {}],
        "nested": {"k": [{"v": 0.1}]},
    }
    assert list(assert_success(got["subclass"]).items()) == [("b", 1), ("a", [2])]
    # A list that contains itself is an error answer, not a crashed Blender.
    assert_error(got["self_containing"], "unserializable_result")
    assert "nested more than" in got["self_containing"]["message"], got["self_containing"]
    # Outside the fast path pythonize decides, as before: an int JSON cannot hold is an error that
    # says what handlers may return; NaN becomes null (as serde_json does).
    assert_error(got["too_big_int"], "unserializable_result")
    assert "handlers must return JSON data" in got["too_big_int"]["message"]
    assert assert_success(got["nan"]) is None


def test_no_dispatcher(core):
    host, port = core.start_service("127.0.0.1", 0, ["echo"])

    def client():
        return bwtest.request(port, "echo")

    _, resp = pump_while(client)
    assert_error(resp, "no_dispatcher")


def test_unknown_command_answered_without_main_thread(service, recorder):
    # no pump, no tick: the service answers by itself
    resp = bwtest.request(service, "not_registered_xyz", timeout=30)
    assert_error(resp, "unknown_rpc_command")
    text = json.dumps(resp)
    assert "echo" in text and "boom" in text, resp
    assert recorder.calls == []


def test_params_reach_dispatcher_and_unicode_round_trips(service, recorder):
    params = {"s": "é😀日本", "n": [1, 2.5, None, True], "d": {"k": "v"}}

    def client():
        return bwtest.request(service, "echo", params)

    _, resp = pump_while(client)
    got = assert_success(resp)["params"]
    for k, v in params.items():
        assert got[k] == v


# ---- tick --------------------------------------------------------------------------------------


def test_tick_on_empty_queue_returns_0(service):
    assert _core.tick(8.0) == 0


def test_tick_drains_queue_and_returns_pending(service, recorder):
    port = service
    threads = [in_thread(lambda i=i: bwtest.request(port, "echo", {"i": i})) for i in range(5)]
    wait_for(lambda: _core.status()["bridge"]["queue_depth"] == 5, 30, "5 queued jobs")
    assert recorder.calls == []
    assert _core.tick(60_000.0) == 0
    assert sorted(p["i"] for _, p in recorder.calls) == list(range(5))
    for t, box in threads:
        t.join(30)
        assert assert_success(box["result"])["echo"] == "echo"


def test_tick_budget_is_checked_between_jobs(service, recorder):
    import time

    def slow(params):  # each job takes longer than the whole budget
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            pass
        return "slow-done"

    recorder.handlers["slow"] = slow
    port = service
    threads = [in_thread(lambda: bwtest.request(port, "slow")) for _ in range(5)]
    wait_for(lambda: _core.status()["bridge"]["queue_depth"] == 5, 30, "5 queued jobs")
    pending = _core.tick(1.0)
    assert len(recorder.calls) == 1, "a 1 ms budget lets exactly one 20 ms job run"
    assert pending == 4 == _core.status()["bridge"]["queue_depth"]
    assert _core.tick(60_000.0) == 0
    assert len(recorder.calls) == 5
    for t, box in threads:
        t.join(30)
        assert assert_success(box["result"]) == "slow-done"


# ---- deadlines, gone clients, busy -------------------------------------------------------------


def test_expired_job_is_not_run(service, recorder):
    port = service
    before = _core.status()["bridge"]["expired"]
    t, box = in_thread(lambda: bwtest.request(port, "mark", {"_timeout_seconds": 0.3}, timeout=60))
    wait_for(lambda: _core.status()["bridge"]["queue_depth"] == 1, 30, "the job to be queued")
    t.join(60)  # the service answers `timeout` by itself once the deadline passes
    assert not t.is_alive()
    assert_error(box["result"], "timeout")
    _core.tick(60_000.0)
    assert recorder.calls == [], "a job whose deadline had passed was run"
    assert _core.status()["bridge"]["expired"] >= before + 1
    assert _core.status()["bridge"]["queue_depth"] == 0


def test_job_of_disconnected_client_is_not_run(core, recorder):
    """The client goes away while its job waits (long before the job's deadline): the service
    notices, and the job is never run."""
    core.set_dispatcher(recorder)
    _, port = core.start_service("127.0.0.1", 0, ["mark", "echo"], default_timeout=600.0)
    st0 = core.status()
    gone0 = st0["bridge"]["expired"] + st0["bridge"]["cancelled"]
    c = Conn(port)
    c.send({"type": "mark", "params": {}})
    wait_for(lambda: core.status()["bridge"]["queue_depth"] == 1, 30, "the job to be queued")
    c.close()
    wait_for(
        lambda: core.status()["service"]["connections_open"] == 0,
        20,
        "the service to notice the closed connection of a client whose job is queued",
    )
    core.tick(60_000.0)
    assert recorder.calls == [], "the job of a client that had gone was run"
    st = core.status()
    assert st["bridge"]["expired"] + st["bridge"]["cancelled"] >= gone0 + 1
    # and the service still serves
    t, box = in_thread(lambda: bwtest.request(port, "echo"))
    wait_for(lambda: core.status()["bridge"]["queue_depth"] == 1, 30, "the next job")
    core.tick(60_000.0)
    t.join(30)
    assert_success(box["result"])


def test_full_queue_answers_busy_at_once(service, recorder):
    port = service
    _core.set_queue_capacity(2)
    assert _core.status()["bridge"]["capacity"] == 2
    busy0 = _core.status()["bridge"]["busy_rejections"]
    threads = [in_thread(lambda i=i: bwtest.request(port, "echo", {"i": i}, timeout=60)) for i in range(5)]

    def answered():
        return [box["result"] for t, box in threads if "result" in box]

    # without any pumping, three of the five are answered `busy`
    wait_for(lambda: len(answered()) >= 3, 30, "three busy answers")
    for resp in answered():
        assert_error(resp, "busy")
    assert _core.status()["bridge"]["queue_depth"] == 2
    assert _core.status()["bridge"]["busy_rejections"] == busy0 + 3
    assert _core.tick(60_000.0) == 0
    for t, box in threads:
        t.join(30)
        assert "error" not in box, box
    statuses = sorted(box["result"]["status"] for _, box in threads)
    assert statuses == ["error", "error", "error", "success", "success"]
    assert len(recorder.calls) == 2


# ---- service lifecycle -------------------------------------------------------------------------


def test_stop_service_frees_port_at_once(core, recorder):
    core.set_dispatcher(recorder)
    host, port = core.start_service("127.0.0.1", 0, ["echo"])
    assert core.service_address() == (host, port)
    idle = Conn(port)  # an open connection is closed by stop_service
    _, resp = pump_while(lambda: bwtest.request(port, "echo"))
    assert_success(resp)
    assert core.stop_service(2.0) is True
    assert core.service_address() is None
    assert bwtest.port_is_bindable(port), "port still taken right after stop_service returned"
    assert bwtest.connection_refused(port)
    assert idle.at_eof(10), "an open connection was not closed by stop_service"
    idle.close()
    assert core.stop_service(2.0) is False
    # the same port again
    assert core.start_service("127.0.0.1", port, ["echo"])[1] == port
    assert core.stop_service(2.0) is True
    assert bwtest.port_is_bindable(port)


def test_stop_service_drops_queued_jobs(core, recorder):
    core.set_dispatcher(recorder)
    _, port = core.start_service("127.0.0.1", 0, ["mark"])
    c = Conn(port)
    c.send({"type": "mark", "params": {}})
    wait_for(lambda: core.status()["bridge"]["queue_depth"] == 1, 30, "the job to be queued")
    assert core.stop_service(2.0) is True
    assert c.at_eof(10), "stop_service did not close the connection"
    c.close()
    assert core.tick(60_000.0) == 0
    assert recorder.calls == [], "a job of a stopped service was run"
    assert core.status()["bridge"]["queue_depth"] == 0


def test_start_service_on_taken_port(core):
    with bwtest.taken_port() as port:
        with pytest.raises(errors.PortInUse) as e:
            core.start_service("127.0.0.1", port, ["echo"])
    assert str(port) in str(e.value)
    assert isinstance(e.value, errors.ServiceError) and isinstance(e.value, OSError)
    assert core.service_address() is None


def test_start_service_twice(service):
    with pytest.raises(errors.ServiceError):
        _core.start_service("127.0.0.1", 0, ["echo"])
    assert _core.service_address()[1] == service


def test_start_service_bad_host(core):
    with pytest.raises(errors.ServiceError):
        core.start_service("not a host name !!", 0, ["echo"])
    assert core.service_address() is None


def test_request_over_size_limit_closes_connection(core, recorder):
    core.set_dispatcher(recorder)
    _, port = core.start_service("127.0.0.1", 0, ["echo"], max_request_bytes=1024)
    with Conn(port) as c:
        c.send(json.dumps({"type": "echo", "params": {"blob": "x" * 4096}}).encode())
        resp = assert_error(c.read(30))
        assert "1024" in resp["message"] or "large" in resp["message"].lower() or "limit" in resp["message"].lower()
        assert c.at_eof(30), "the connection should be closed after an oversized request"
    # the service keeps serving
    assert_error(bwtest.request(port, "nope_xyz", timeout=30), "unknown_rpc_command")
    assert recorder.calls == []


def test_many_connections_open_and_close(service):
    port = service
    before = _core.status()["service"]["connections_total"]

    def client():
        for _ in range(200):
            assert_success(bwtest.request(port, "echo"))

    pump_while(client)
    st = _core.status()["service"]
    assert st["connections_total"] >= before + 200
    wait_for(lambda: _core.status()["service"]["connections_open"] == 0, 30, "all connections closed")


def test_core_client_against_core_service(service):
    port = service

    def client():
        c = _core.Client("127.0.0.1", port, 30.0)
        try:
            out = [c.call("echo", {"i": i}) for i in range(20)]
            assert c.connected
            with pytest.raises(errors.CommandError) as e:
                c.call("not_registered_xyz")
            assert e.value.error_code == "unknown_rpc_command"
            whole = c.request({"type": "echo", "params": {}})
        finally:
            c.close()
        assert not c.connected
        return out, whole

    _, (out, whole) = pump_while(client)
    assert out == [{"echo": "echo", "params": {"i": i}} for i in range(20)]
    assert whole["status"] == "success"


# ---- the main thread's state and interrupts ------------------------------------------------------


def test_a_handler_past_its_deadline_is_interrupted_and_the_status_names_it(service, recorder):
    from blendwire import runtime

    port = service
    runtime.install_interrupts()
    seen = {}

    def spin(params):
        seen["main_thread"] = _core.status()["main_thread"]
        try:
            while True:
                pass
        except Exception:  # Interrupted is not an Exception: this does not swallow it
            seen["swallowed"] = True

    recorder.handlers["slow"] = spin
    assert _core.status()["main_thread"] == {"state": "idle"}
    assert _core.interrupt_message() is None
    _, resp = pump_while(lambda: bwtest.request(port, "slow", {"_timeout_seconds": 0.5}, timeout=60))
    message = assert_error(resp, "interrupted")["message"]
    assert "'slow' interrupted after" in message and "(deadline 0.5 s)" in message, message
    assert "in spin" in message, message  # the last frames say where it was
    assert "swallowed" not in seen
    mt = seen["main_thread"]
    assert mt["state"] == "running" and mt["command"] == "slow" and mt["interrupt_pending"] is False, mt
    assert mt["client"].startswith("127.0.0.1:"), mt
    assert _core.status()["main_thread"] == {"state": "idle"}
    assert issubclass(errors.Interrupted, BaseException) and not issubclass(errors.Interrupted, Exception)

"""`blendwire.Client`: one persistent connection, thread-safe, reconnects, one exception per failure."""

import os
import threading

import pytest

import bwtest

blendwire = pytest.importorskip("blendwire")
from blendwire import errors  # noqa: E402

pytestmark = pytest.mark.runtimes("background", "bpy")


@pytest.fixture
def client(server):
    c = blendwire.Client(server.host, server.port, timeout=60)
    yield c
    c.close()


def test_call_returns_result(client):
    info = client.call("get_scene_info")
    assert info["object_count"] >= 3
    assert client.call("get_object_info", {"name": "Cube"})["mesh"]["vertices"] == 8
    assert client.connected is True


def test_properties(client, server):
    assert client.host == server.host
    assert client.port == server.port
    assert client.timeout == 60


def test_execute_returns_stdout(client):
    assert client.execute("print('from execute')") == "from execute\n"
    assert client.execute("print('quotes \\' \" and é✓')") == "quotes ' \" and é✓\n"


def test_scene_info(client):
    info = client.scene_info()
    assert "Cube" in {o["name"] for o in info["objects"]}


def test_request_returns_whole_response(client):
    resp = client.request({"type": "get_polyhaven_status", "params": {}})
    assert resp["status"] == "success" and resp["result"]["enabled"] is False
    legacy = client.request({"code": "print(5)"})
    assert legacy["response"] == "OK" and legacy["output"] == "5\n"


def test_context_manager_closes(server):
    with blendwire.Client(server.host, server.port, timeout=60) as c:
        assert c.call("get_polyhaven_status")["enabled"] is False
        assert c.connected
    assert c.connected is False


def test_many_threads_on_one_client(client):
    n_threads, per = 8, 40
    failures, answers = [], {}

    def worker(t):
        for i in range(per):
            try:
                r = client.call("execute_code", {"code": f"print('{t}/{i}')"})
                answers[(t, i)] = r["result"]
            except Exception as e:  # noqa: BLE001 - counted as a failure
                failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert failures == []
    # every thread got its own answer, never another thread's
    assert answers == {(t, i): f"{t}/{i}\n" for t in range(n_threads) for i in range(per)}


def test_command_error_has_error_code(client):
    with pytest.raises(errors.CommandError) as e:
        client.call("no_such_command_xyz")
    assert e.value.error_code == "unknown_rpc_command"
    assert "no_such_command_xyz" in str(e.value)
    # the connection is still usable
    assert client.call("get_polyhaven_status")["enabled"] is False


def test_handler_exception_is_command_error(client):
    with pytest.raises(errors.CommandError) as e:
        client.execute("raise KeyError('k-xyz')")
    assert "k-xyz" in str(e.value)
    assert isinstance(e.value, errors.BlendwireError)


def test_missing_param_is_command_error(client):
    with pytest.raises(errors.CommandError) as e:
        client.call("get_object_info", {})
    assert "name" in str(e.value)


@pytest.mark.background
def test_connection_failed_on_closed_port():
    port = bwtest.free_port()
    c = blendwire.Client("127.0.0.1", port, timeout=2)
    with pytest.raises(errors.ConnectionFailed) as e:
        c.call("get_scene_info")
    assert isinstance(e.value, ConnectionError)
    assert c.connected is False


def test_timeout_then_client_still_correct(server, tmp_flag_dir):
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    c = blendwire.Client(server.host, server.port, timeout=3.0)
    try:
        with pytest.raises(errors.Timeout) as e:
            c.call("execute_code", {"code": bwtest.blocking_code(started, release)})
        assert isinstance(e.value, TimeoutError)
    finally:
        bwtest.touch(release)
    # The late answer of the timed-out call must never be taken for the next call's answer.
    c2 = blendwire.Client(server.host, server.port, timeout=60)
    try:
        assert c2.call("execute_code", {"code": "print('sync')"})["result"] == "sync\n"
    finally:
        c2.close()
    for i in range(3):
        assert c.call("execute_code", {"code": f"print('after-timeout-{i}')"})["result"] == f"after-timeout-{i}\n"
    c.close()


@pytest.mark.background
def test_reconnects_after_server_restart(serve_factory):
    port = bwtest.free_port()
    first = serve_factory("background", port=port)
    c = blendwire.Client("127.0.0.1", port, timeout=120)
    try:
        assert c.call("get_polyhaven_status")["enabled"] is False
        first.shutdown()  # server_shutdown from a raw socket; exits 0
        assert bwtest.connection_refused(port)
        serve_factory("background", port=port)
        # the old connection is gone; the client notices before sending and reconnects
        assert c.call("execute_code", {"code": "print('second server')"})["result"] == "second server\n"
        assert c.connected
    finally:
        c.close()


@pytest.mark.background
def test_server_shutdown_through_client(serve_factory):
    sp = serve_factory("background")
    with blendwire.Client(sp.host, sp.port, timeout=60) as c:
        assert c.call("server_shutdown")["message"] == "Server shutdown initiated"
    assert sp.wait_exit() == 0, sp.output()

"""`blendwire.Client`: one persistent connection, thread-safe, reconnects, one exception per failure."""

import contextlib
import json
import os
import threading

import bwtest
import pytest

blendwire = pytest.importorskip("blendwire")
from blendwire import errors  # noqa: E402

pytestmark = pytest.mark.runtimes("background", "bpy", "gui")


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
            except Exception as e:
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


@contextlib.contextmanager
def _client_of_a_shut_down_server(serve_factory):
    """(port, client): a background server on a fixed port, a Client connected to it by one call,
    then the server shut down; the client is closed after the `with` block."""
    port = bwtest.free_port()
    first = serve_factory("background", port=port)
    c = blendwire.Client("127.0.0.1", port, timeout=120)
    try:
        assert c.call("get_polyhaven_status")["enabled"] is False
        first.shutdown()  # server_shutdown from a raw socket; exits 0
        yield port, c
    finally:
        c.close()


@pytest.mark.background
def test_reconnects_after_server_restart(serve_factory):
    with _client_of_a_shut_down_server(serve_factory) as (port, c):
        assert bwtest.connection_refused(port)
        serve_factory("background", port=port)
        # the old connection is gone; the client notices before sending and reconnects
        assert c.call("execute_code", {"code": "print('second server')"})["result"] == "second server\n"
        assert c.connected


@pytest.mark.background
def test_server_shutdown_through_client(serve_factory):
    sp = serve_factory("background")
    with blendwire.Client(sp.host, sp.port, timeout=60) as c:
        assert c.call("server_shutdown")["message"] == "Server shutdown initiated"
    assert sp.wait_exit() == 0, sp.output()


# ---- call_many: pipelined calls on the one connection ------------------------------------------


def test_call_many_runs_in_order_and_returns_results_in_order(client):
    key = "bw_call_many_order"
    client.execute(f"import bpy; bpy.app.driver_namespace[{key!r}] = []")
    calls = []
    for i in range(300):
        if i % 3 == 0:
            calls.append(
                ("execute_code", {"code": f"import bpy; bpy.app.driver_namespace[{key!r}].append({i}); print({i})"})
            )
        elif i % 3 == 1:
            calls.append(("get_object_info", {"name": "Cube"}))
        else:
            calls.append("get_scene_info")
    results = client.call_many(calls)
    assert len(results) == 300
    for i, r in enumerate(results):
        if i % 3 == 0:
            assert r["result"] == f"{i}\n"
        elif i % 3 == 1:
            assert r["name"] == "Cube"
        else:
            assert r["object_count"] >= 3
    ran = client.execute(f"import bpy; print(bpy.app.driver_namespace.pop({key!r}))")
    assert ran == f"{list(range(0, 300, 3))}\n"


def test_call_many_errors_in_place_or_raised_after_all_answers(client):
    calls = [
        ("get_object_info", {"name": "Cube"}),
        ("get_object_info", {"name": "NoSuchObject"}),
        ("nope", {}),
        "get_scene_info",
    ]
    got = client.call_many(calls, return_errors=True)
    assert got[0]["name"] == "Cube" and got[3]["object_count"] >= 3
    assert isinstance(got[1], errors.CommandError) and got[1].error_code == "not_found"
    assert isinstance(got[2], errors.CommandError) and got[2].error_code == "unknown_rpc_command"
    with pytest.raises(errors.CommandError) as e:
        client.call_many(calls)
    assert e.value.error_code == "not_found"  # the first failure
    # Every answer was read: the connection is still in step.
    assert client.call("get_object_info", {"name": "Cube"})["name"] == "Cube"
    assert client.call_many([]) == []


def test_call_many_with_large_requests_and_answers_does_not_deadlock(client):
    # 300 KB requests (more than the in-flight byte bound) and 2 MB answers, interleaved with
    # small ones: both sides' socket buffers fill, neither side may wait for the other forever.
    big_code = "x = '" + "a" * 300_000 + "'\nprint('b' * 2_000_000)"
    calls = [
        ("execute_code", {"code": big_code}) if i % 2 else ("execute_code", {"code": f"print({i})"}) for i in range(16)
    ]
    results = client.call_many(calls)
    for i, r in enumerate(results):
        assert r["result"] == ("b" * 2_000_000 + "\n" if i % 2 else f"{i}\n")


def test_call_many_rejects_malformed_items(client):
    for bad in ([3], [("a", {}, "extra")], [(1, {})], [{"type": "get_scene_info"}]):
        with pytest.raises(TypeError, match="call_many: item 0"):
            client.call_many(bad)
    with pytest.raises(TypeError, match="params must be a dict"):
        client.call_many([("get_scene_info", [1])])


# ---- against scripted peers: one exception type per failure kind ------------------------------


def test_protocol_error_on_garbage_reply():
    with bwtest.FakeServer(lambda conn, data: conn.sendall(b"this is not json\x00\xff")) as fake:
        c = blendwire.Client("127.0.0.1", fake.port, timeout=30)
        with pytest.raises(errors.ProtocolError):
            c.call("get_scene_info")
        c.close()


def test_protocol_error_on_non_object_reply():
    with bwtest.FakeServer(lambda conn, data: conn.sendall(b"[1, 2, 3]")) as fake:
        c = blendwire.Client("127.0.0.1", fake.port, timeout=30)
        with pytest.raises(errors.ProtocolError):
            c.call("get_scene_info")
        c.close()


def test_timeout_when_peer_never_answers():
    release = threading.Event()
    with bwtest.FakeServer(lambda conn, data: release.wait(60)) as fake:
        c = blendwire.Client("127.0.0.1", fake.port, timeout=1.0)
        try:
            with pytest.raises(errors.Timeout):
                c.call("get_scene_info")
        finally:
            release.set()
            c.close()


def test_connection_lost_when_peer_closes_after_request():
    with bwtest.FakeServer(lambda conn, data: conn.close()) as fake:
        c = blendwire.Client("127.0.0.1", fake.port, timeout=30)
        with pytest.raises(errors.ConnectionLost) as e:
            c.call("get_scene_info")
        assert isinstance(e.value, ConnectionError)
        c.close()
        assert fake.connections == 1, "a call whose connection was lost after sending was retried"


def test_call_many_connection_lost_says_how_many_were_answered():
    def behaviour(conn, data):
        conn.sendall(b'{"status": "success", "result": 1}')
        conn.close()

    with bwtest.FakeServer(behaviour) as fake:
        c = blendwire.Client("127.0.0.1", fake.port, timeout=30)
        with pytest.raises(errors.ConnectionLost, match="1 of 3 requests were answered"):
            c.call_many(["a", "b", "c"])
        c.close()
        assert fake.connections == 1, "a pipelined batch was resent"


def test_reply_split_in_pieces_and_utf8_is_read_whole():
    reply = json.dumps({"status": "success", "result": {"s": "é😀" * 1000}}, ensure_ascii=False).encode()

    def behaviour(conn, data):
        cut = reply.index("😀".encode()) + 1  # inside a 4-byte character
        conn.sendall(reply[:cut])
        conn.sendall(reply[cut : cut + 1])
        conn.sendall(reply[cut + 1 :])
        conn.recv(1)  # keep the connection open until the client closes

    with bwtest.FakeServer(behaviour) as fake:
        with blendwire.Client("127.0.0.1", fake.port, timeout=30) as c:
            assert c.call("anything") == {"s": "é😀" * 1000}


@pytest.mark.background
def test_connection_lost_when_server_dies_mid_call(serve_factory, tmp_flag_dir):
    sp = serve_factory("background")
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    c = blendwire.Client(sp.host, sp.port, timeout=120)
    box = {}

    def call():
        try:
            box["result"] = c.call("execute_code", {"code": bwtest.blocking_code(started, release)})
        except Exception as e:
            box["error"] = e

    t = threading.Thread(target=call, daemon=True)
    try:
        t.start()
        bwtest.wait_file(started)
        sp.kill()  # SIGKILL blendwire and its Blender while the call is in flight
    finally:
        bwtest.touch(release)
    t.join(60)
    assert not t.is_alive()
    assert isinstance(box.get("error"), errors.ConnectionLost), box
    c.close()


@pytest.mark.background
def test_call_waits_for_a_restarting_server(serve_factory):
    """The server is down when the call starts and comes back within the client's timeout."""
    with _client_of_a_shut_down_server(serve_factory) as (port, c):
        box = {}

        def call():
            try:
                box["result"] = c.call("execute_code", {"code": "print('back')"})
            except Exception as e:
                box["error"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        serve_factory("background", port=port)
        t.join(120)
        assert not t.is_alive()
        assert "error" not in box, box
        assert box["result"]["result"] == "back\n"

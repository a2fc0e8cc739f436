"""The BLD Remote MCP wire protocol over raw sockets, against `blendwire serve` in every runtime.

Unframed JSON in and out; responses are read by accumulating bytes until they parse (bwtest.Conn).
"""

import base64
import json
import os
import socket

import bwtest
import pytest
from bwtest import Conn, assert_error, assert_success, stdout_of


def exec_req(code, **params):
    return {"type": "execute_code", "params": {"code": code, **params}}


# ---- framing ---------------------------------------------------------------------------------


def test_two_requests_in_one_write(server):
    with Conn(server.port) as c:
        c.send(json.dumps(exec_req("print('first')")).encode() + json.dumps(exec_req("print('second')")).encode())
        assert stdout_of(assert_success(c.read())) == "first\n"
        assert stdout_of(assert_success(c.read())) == "second\n"


def test_many_pipelined_requests_answer_in_order(server):
    n = 25
    payload = b"".join(json.dumps(exec_req(f"print({i})")).encode() for i in range(n))
    with Conn(server.port) as c:
        c.send(payload)
        got = [stdout_of(assert_success(c.read())) for _ in range(n)]
    assert got == [f"{i}\n" for i in range(n)]


def test_request_in_one_byte_pieces(server):
    data = json.dumps(exec_req("print('pieces')")).encode()
    with Conn(server.port) as c:
        c.send_pieces(data, [1] * len(data))
        assert stdout_of(assert_success(c.read())) == "pieces\n"


@pytest.mark.parametrize("text", ["é", "😀", "日本"], ids=["2-byte", "4-byte", "3-byte"])
def test_utf8_character_split_across_writes(server, text):
    data = json.dumps(exec_req(f"print({text!r})"), ensure_ascii=False).encode("utf-8")
    first = text.encode("utf-8")
    at = data.index(first)
    with Conn(server.port) as c:
        # cut after the first byte of the multi-byte character, and again one byte later
        c.send_pieces(data, [at + 1, 1])
        assert stdout_of(assert_success(c.read())) == text + "\n"


def test_whitespace_between_requests_is_ignored(server):
    with Conn(server.port) as c:
        c.send(b"\n  " + json.dumps(exec_req("print(3)")).encode() + b"\r\n\t")
        assert stdout_of(assert_success(c.read())) == "3\n"
        c.send(b" " + json.dumps(exec_req("print(4)")).encode())
        assert stdout_of(assert_success(c.read())) == "4\n"


def test_persistent_connection_many_requests(server):
    with Conn(server.port) as c:
        for i in range(200):
            if i % 3 == 0:
                result = assert_success(c.request({"type": "get_scene_info", "params": {}}))
                assert "object_count" in result
            else:
                assert stdout_of(assert_success(c.request(exec_req(f"print({i} * 2)")))) == f"{i * 2}\n"


def test_one_shot_connection_gets_whole_response_in_first_read(server):
    """The real peer client reads once with recv(8192): the answer must come in one write."""
    with socket.create_connection((bwtest.HOST, server.port), timeout=60) as s:
        s.sendall(json.dumps({"type": "get_scene_info", "params": {}}).encode())
        data = s.recv(8192)
    assert json.loads(data.decode("utf-8"))["status"] == "success"


# ---- legacy forms --------------------------------------------------------------------------


def test_legacy_code_form(server):
    with Conn(server.port) as c:
        resp = c.request({"code": "print(1)"})
    assert resp.get("response") == "OK", resp
    assert resp.get("message") == "Code executed successfully", resp
    assert resp.get("output") == "1\n", resp


def test_legacy_code_form_failure(server):
    with Conn(server.port) as c:
        resp = c.request({"code": "1/0"})
    assert resp.get("response") == "FAILED", resp
    assert resp.get("message", "").startswith("Error executing code"), resp
    assert "division by zero" in resp["message"], resp


def test_legacy_message_form(server):
    with Conn(server.port) as c:
        resp = c.request({"message": "hello"})
    assert resp.get("response") == "OK", resp
    assert resp.get("message") == "Printed message: hello", resp


# ---- commands --------------------------------------------------------------------------------


def test_get_scene_info(server):
    r = assert_success(bwtest.request(server.port, "get_scene_info"))
    for key in ("name", "object_count", "objects", "materials_count", "frame_current", "frame_start", "frame_end"):
        assert key in r, (key, r)
    assert isinstance(r["object_count"], int) and r["object_count"] >= len(r["objects"])
    assert len(r["objects"]) <= 10
    names = {o["name"]: o for o in r["objects"]}
    assert "Cube" in names, r
    cube = names["Cube"]
    assert cube["type"] == "MESH"
    assert cube["location"] == [0.0, 0.0, 0.0]
    assert cube["visible"] is True
    # Blender's factory scene
    assert (r["frame_current"], r["frame_start"], r["frame_end"]) == (1, 1, 250), r
    assert r["materials_count"] >= 1, r


def test_get_object_info_cube(server):
    r = assert_success(bwtest.request(server.port, "get_object_info", {"name": "Cube"}))
    assert r["name"] == "Cube" and r["type"] == "MESH"
    for key in ("location", "rotation", "scale", "dimensions"):
        assert len(r[key]) == 3, (key, r)
    assert r["scale"] == pytest.approx([1.0, 1.0, 1.0])
    assert r["dimensions"] == pytest.approx([2.0, 2.0, 2.0])
    assert r["visible"] is True
    assert isinstance(r["materials"], list)
    assert r["mesh"] == {"vertices": 8, "edges": 12, "polygons": 6}


def test_get_object_info_unknown_object(server):
    resp = assert_error(bwtest.request(server.port, "get_object_info", {"name": "NoSuchObject_xyz"}))
    assert "NoSuchObject_xyz" in resp["message"]


def test_get_object_info_without_name(server):
    resp = assert_error(bwtest.request(server.port, "get_object_info", {}))
    assert "name" in resp["message"], resp


def test_execute_code_result_fields(server):
    r = assert_success(bwtest.execute(server.port, "import sys\nprint('out')\nprint('err', file=sys.stderr)"))
    assert r["executed"] is True
    assert r["result"] == "out\n"
    assert r["output"]["stdout"] == "out\n"
    assert "err" in r["output"]["stderr"]
    assert isinstance(r["duration"], (int, float)) and r["duration"] >= 0
    assert r.get("result_is_base64") in (False, None)


def test_execute_code_base64_both_ways(server):
    code = "print('héllo ✓')"
    r = assert_success(
        bwtest.execute(
            server.port, base64.b64encode(code.encode()).decode(), code_is_base64=True, return_as_base64=True
        )
    )
    assert r["result_is_base64"] is True
    assert base64.b64decode(r["result"]).decode("utf-8") == "héllo ✓\n"


def test_execute_code_has_bpy_and_fresh_globals(server):
    r = assert_success(bwtest.execute(server.port, "print(bpy.app.version_string)\nleak_xyz = 1"))
    assert r["result"].strip().startswith(server.version.split(".")[0])
    resp = assert_error(bwtest.execute(server.port, "print(leak_xyz)"))
    assert "leak_xyz" in resp["message"]


def test_execute_code_exception_has_traceback(server):
    resp = assert_error(bwtest.execute(server.port, "def inner_fn():\n    1/0\ninner_fn()"))
    assert "Code execution error" in resp["message"], resp
    assert "ZeroDivisionError" in resp["message"] or "division by zero" in resp["message"], resp
    assert "Traceback" in resp["message"] and "inner_fn" in resp["message"], resp


def test_execute_code_syntax_error(server):
    resp = assert_error(bwtest.execute(server.port, "def (:"))
    assert "SyntaxError" in resp["message"] or "syntax" in resp["message"].lower(), resp


def test_execute_code_without_code(server):
    resp = assert_error(bwtest.request(server.port, "execute_code", {}))
    assert "code" in resp["message"], resp


def test_get_polyhaven_status(server):
    r = assert_success(bwtest.request(server.port, "get_polyhaven_status"))
    assert r["enabled"] is False


def test_persist_put_get_remove(server):
    key = f"k-{os.getpid()}-{server.runtime}"
    value = {"a": [1, 2, 3], "s": "é"}
    assert_success(bwtest.request(server.port, "put_persist_data", {"key": key, "data": value}))
    got = assert_success(bwtest.request(server.port, "get_persist_data", {"key": key}))
    assert got == {"data": value, "found": True}
    removed = assert_success(bwtest.request(server.port, "remove_persist_data", {"key": key}))
    assert removed["removed"] is True
    got = assert_success(bwtest.request(server.port, "get_persist_data", {"key": key, "default": "dflt"}))
    assert got == {"data": "dflt", "found": False}
    removed = assert_success(bwtest.request(server.port, "remove_persist_data", {"key": key}))
    assert removed["removed"] is False


def test_persist_is_shared_with_execute_code_connections(server):
    """Data put by one connection is seen by another one (it lives in the Blender process)."""
    key = f"shared-{server.runtime}"
    assert_success(bwtest.request(server.port, "put_persist_data", {"key": key, "data": 42}))
    with Conn(server.port) as other:
        got = assert_success(other.request({"type": "get_persist_data", "params": {"key": key}}))
    assert got["data"] == 42
    assert_success(bwtest.request(server.port, "remove_persist_data", {"key": key}))


def test_viewport_screenshot(server, tmp_path):
    path = str(tmp_path / "shot.png")
    resp = bwtest.request(server.port, "get_viewport_screenshot", {"filepath": path, "max_size": 200})
    if server.runtime == "gui":
        r = assert_success(resp)
        assert r["success"] is True
        assert 0 < r["width"] <= 200 and 0 < r["height"] <= 200, r
        assert os.path.getsize(r["filepath"]) > 0
    else:
        resp = assert_error(resp)
        assert "background" in resp["message"].lower() or "gui" in resp["message"].lower(), resp


# ---- bad input -------------------------------------------------------------------------------


def test_malformed_json_answers_error_and_service_keeps_serving(server):
    with Conn(server.port) as c:
        c.send(b'{"type": get_scene_info, "params": {}}')
        assert_error(c.read())
    assert_success(bwtest.request(server.port, "get_polyhaven_status"))


@pytest.mark.parametrize("value", [b"[1, 2, 3]", b'"get_scene_info"', b"42", b"null"])
def test_json_value_not_an_object(server, value):
    with Conn(server.port) as c:
        c.send(value + b" ")  # a trailing space ends a bare number
        assert_error(c.read())
    assert_success(bwtest.request(server.port, "get_polyhaven_status"))


def test_unknown_command_lists_known_commands(server):
    resp = assert_error(bwtest.request(server.port, "no_such_command_xyz"), "unknown_rpc_command")
    assert "no_such_command_xyz" in resp["message"], resp
    text = json.dumps(resp)
    for known in ("get_scene_info", "get_object_info", "execute_code", "server_shutdown", "get_persist_data"):
        assert known in text, (known, resp)


def test_missing_type_is_unknown_command(server):
    with Conn(server.port) as c:
        assert_error(c.request({"params": {}}), "unknown_rpc_command")


def test_params_not_an_object(server):
    with Conn(server.port) as c:
        assert_error(c.request({"type": "get_object_info", "params": ["Cube"]}))
        # the connection still works
        assert_success(c.request({"type": "get_polyhaven_status", "params": {}}))


def test_error_then_success_on_same_connection(server):
    with Conn(server.port) as c:
        assert_error(c.request({"type": "no_such_command_xyz", "params": {}}))
        assert_error(c.request(exec_req("raise RuntimeError('x')")))
        assert stdout_of(assert_success(c.request(exec_req("print('still here')")))) == "still here\n"


def test_client_disconnects_mid_request(server):
    data = json.dumps(exec_req("print('never')")).encode()
    for cut in (1, len(data) // 2, len(data) - 1):
        c = Conn(server.port)
        c.send(data[:cut])
        c.close()
    assert stdout_of(assert_success(bwtest.execute(server.port, "print('alive')"))) == "alive\n"


def test_client_disconnects_while_its_job_runs(server, tmp_flag_dir):
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    try:
        c = Conn(server.port)
        c.send(exec_req(bwtest.blocking_code(started, release)))
        bwtest.wait_file(started)
        c.close()
    finally:
        bwtest.touch(release)
    assert stdout_of(assert_success(bwtest.execute(server.port, "print('alive')"))) == "alive\n"


# ---- deadlines -------------------------------------------------------------------------------


def test_timeout_seconds_expires_a_waiting_job_which_never_runs(server, tmp_flag_dir):
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    marker = os.path.join(tmp_flag_dir, "expired-job-ran")
    blocker = Conn(server.port)
    try:
        blocker.send(exec_req(bwtest.blocking_code(started, release)))
        bwtest.wait_file(started)  # the main thread is now busy with the blocker
        with Conn(server.port) as c:
            resp = c.request(exec_req(f"open({marker!r}, 'w').close()", _timeout_seconds=0.5), timeout=60)
        assert_error(resp, "timeout")
    finally:
        bwtest.touch(release)
    assert stdout_of(assert_success(blocker.read())) == "released\n"
    blocker.close()
    # FIFO: once a later job has run, the expired one would have run before it.
    assert stdout_of(assert_success(bwtest.execute(server.port, "print('after')"))) == "after\n"
    assert not os.path.exists(marker), "a job whose _timeout_seconds had passed was run anyway"


def test_timeout_seconds_large_value_is_fine(server):
    r = assert_success(bwtest.execute(server.port, "print('ok')", _timeout_seconds=3600))
    assert r["result"] == "ok\n"


def test_concurrent_connections_all_answered(server):
    import threading

    n_threads, per = 8, 25
    errors, results = [], {}

    def worker(t):
        try:
            with Conn(server.port) as c:
                for i in range(per):
                    out = stdout_of(assert_success(c.request(exec_req(f"print('{t}-{i}')"))))
                    results[(t, i)] = out
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results == {(t, i): f"{t}-{i}\n" for t in range(n_threads) for i in range(per)}


@pytest.mark.runtimes("background")
def test_request_over_default_size_limit(server):
    """A request over 64 MiB gets an error (or at least a closed connection), never unbounded
    buffering, and the service keeps serving."""
    import threading

    c = Conn(server.port, timeout=120)
    got = {}

    def reader():
        try:
            got["response"] = c.read(timeout=120)
        except (ConnectionError, TimeoutError, OSError) as e:
            got["closed"] = repr(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    head = b'{"type": "execute_code", "params": {"code": "'
    chunk = b"x" * (1 << 20)
    try:
        c.sock.sendall(head)
        for _ in range(66):  # 66 MiB, never closed: the server must stop at its limit
            c.sock.sendall(chunk)
    except OSError:
        pass  # the server closed the connection while we were still sending: expected
    t.join(120)
    c.close()
    assert not t.is_alive(), "no answer and no close after an oversized request"
    if "response" in got:
        assert_error(got["response"])
    assert_success(bwtest.request(server.port, "get_polyhaven_status"))

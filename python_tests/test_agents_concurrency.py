"""Every agent dialect at once against one `blendwire serve --mcp-addon-port`: BLD Remote clients on
the main port (persistent), blender-mcp clients on the add-on port (persistent, two requests in
flight), and Blender Lab clients (one NUL-framed request per connection), all hammering the same
Blender from threads, in every runtime (background, bpy, and the GUI in the `gui` phase); the
blender-mcp commands answered by blendwire itself, and by blender-mcp 1.9.4's own add-on file hosted
with `--blender-mcp-addon`.

Every request carries a token of its own (client, call) that the answer must bring back, so an
answer delivered to the wrong request or connection fails the test; afterwards the service is idle
and answers each dialect again. Waits are on conditions with deadlines; nothing asserts on timings.
"""

import json
import pathlib
import socket
import threading

import bwtest
import pytest
from bwtest import Conn, assert_success

ANSWER_WAIT = 120.0
CLIENTS = 4  # per dialect
CALLS = 50  # per client
ROOT = pathlib.Path(__file__).resolve().parent.parent
# blender-mcp 1.9.4's own add-on file (scripts/setup installs it into .venv-blender-mcp).
ADDON = next(iter(sorted(ROOT.glob(".venv-blender-mcp/lib/python*/site-packages/blender_mcp/bundled/addon.py"))), None)


@pytest.fixture(scope="module")
def server(request):
    """`blendwire serve --port 0 --mcp-addon-port 0` (no blender-mcp add-on: blendwire answers its
    core commands); `.addon_port` is the second listener's port."""
    sp = bwtest.start_serve(request.param, extra=["--mcp-addon-port", "0"])
    with_addon_port(sp)
    yield sp
    sp.shutdown()


def with_addon_port(sp):
    assert sp.ready.addon_port, sp.output()
    sp.addon_port = sp.ready.addon_port
    return sp


def _code(token):
    return f"print({token!r})"


def bld_remote_client(port, cid, record):
    """BLD Remote (main port): one persistent connection, get_scene_info and execute_code in turn."""
    with Conn(port, timeout=ANSWER_WAIT) as c:
        for i in range(CALLS):
            token = f"bld-{cid}-{i}"
            if i % 2:
                resp = c.request({"type": "get_scene_info", "params": {}})
                ok = resp.get("status") == "success" and "name" in resp["result"]
            else:
                resp = c.request({"type": "execute_code", "params": {"code": _code(token)}})
                ok = resp.get("status") == "success" and bwtest.stdout_of(resp["result"]) == token + "\n"
            record(token, ok, resp)


def blender_mcp_client(port, cid, record):
    """blender-mcp (add-on port): one persistent connection, two requests in flight at a time
    (pipelined), answered in order: an execute_code with a token, then get_scene_info."""
    with Conn(port, timeout=ANSWER_WAIT) as c:
        for i in range(0, CALLS, 2):
            token = f"mcp-{cid}-{i}"
            c.send(
                json.dumps({"type": "execute_code", "params": {"code": _code(token)}}).encode()
                + json.dumps({"type": "get_scene_info", "params": {}}).encode()
            )
            code_resp, scene_resp = c.read_many(2)
            # blender-mcp's shape: {"status": "success", "result": {"executed": true, "result": stdout}}
            ok = code_resp.get("status") == "success" and code_resp["result"].get("result") == token + "\n"
            record(token, ok, code_resp)
            ok = scene_resp.get("status") == "success" and "object_count" in scene_resp["result"]
            record(token + "-scene", ok, scene_resp)


def lab_request(port, token):
    req = {"type": "execute", "code": f"print({token!r})\nresult['token'] = {token!r}", "strict_json": True}
    with socket.create_connection((bwtest.HOST, port), timeout=ANSWER_WAIT) as s:
        s.sendall((json.dumps(req) + "\0").encode())
        data, closed = bwtest.read_until_eof(s, timeout=ANSWER_WAIT)
    assert closed and data.endswith(b"\0"), data[-200:]
    answer = json.loads(data[:-1])
    answer.pop("checkpoint", None)  # the core adds it to every changing job's answer (test_checkpoints.py)
    return answer


def blender_lab_client(port, cid, record):
    """Blender Lab (add-on port): a new connection per request, NUL-framed, closed after the answer."""
    for i in range(CALLS):
        token = f"lab-{cid}-{i}"
        resp = lab_request(port, token)
        record(token, resp == {"status": "ok", "result": {"token": token}, "stdout": token + "\n"}, resp)


@pytest.mark.parametrize("hosted", [False, True], ids=["blendwire-answers", "addon-hosted"])
def test_every_dialect_at_once_answers_every_request_with_its_own_answer(server, serve_factory, hosted):
    """Without the blender-mcp add-on (blendwire answers its core commands), and with 1.9.4's own
    add-on file hosted (`--blender-mcp-addon`: its command table answers them)."""
    if hosted:
        if ADDON is None:
            pytest.skip("no .venv-blender-mcp (scripts/setup makes it)")
        server = with_addon_port(
            serve_factory(server.runtime, extra=["--mcp-addon-port", "0", "--blender-mcp-addon", str(ADDON)])
        )
    lock = threading.Lock()
    answered, wrong, crashed = [], [], []

    def record(token, ok, resp):
        with lock:
            answered.append(token)
            if not ok:
                wrong.append((token, resp))

    start = threading.Barrier(3 * CLIENTS)

    def run(fn, port, cid):
        try:
            start.wait(ANSWER_WAIT)
            fn(port, cid, record)
        except BaseException as e:  # reported below, with the client that failed
            with lock:
                crashed.append((fn.__name__, cid, repr(e)))

    threads = [
        threading.Thread(target=run, args=(fn, port, cid), daemon=True)
        for fn, port in (
            (bld_remote_client, server.port),
            (blender_mcp_client, server.addon_port),
            (blender_lab_client, server.addon_port),
        )
        for cid in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    stuck = bwtest.join_all(threads, ANSWER_WAIT * 3)
    assert not stuck, f"{len(stuck)} clients still waiting; crashed: {crashed}"
    assert not crashed, crashed
    assert not wrong, wrong[:5]
    assert len(answered) == 3 * CLIENTS * CALLS, len(answered)
    assert len(set(answered)) == len(answered), "a token answered twice"

    # Afterwards: idle, and every dialect answered again.
    def idle():
        st = assert_success(bwtest.request(server.port, "get_status", timeout=ANSWER_WAIT))
        return st if st["main_thread"]["state"] == "idle" else None

    st = bwtest.poll_until(idle, ANSWER_WAIT, interval=0.05)
    assert st, "the main thread did not become idle"
    conns = st["service"]["mcp_addon"]["connections"]
    assert conns["blender_mcp"] >= CLIENTS and conns["blender_lab"] >= CLIENTS * CALLS, conns
    assert "name" in assert_success(bwtest.request(server.port, "get_scene_info"))
    with Conn(server.addon_port, timeout=ANSWER_WAIT) as c:
        assert c.request({"type": "get_scene_info", "params": {}})["status"] == "success"
    assert lab_request(server.addon_port, "after") == {
        "status": "ok",
        "result": {"token": "after"},
        "stdout": "after\n",
    }

"""The MCP add-on listener (`blendwire serve --mcp-addon-port`): blender-mcp's and Blender Lab's
protocols beside the BLD Remote service, in every runtime.

Raw sockets for Blender Lab's wire (one NUL-terminated JSON request per connection, a NUL-terminated
answer, then close): execute, the `result` namespace, stdout/stderr, strict_json both ways, the
error answers (every request shape, a request in 1-byte writes with UTF-8 characters split, a raw
NUL inside a string ending the request), the weak sandbox (which here never ends Blender), the size
limit, an incomplete
request ("Client timed out"), deferred answers (`check_is_finished`, also in `-b`), a runaway loop
interrupted at its deadline with the next request served and the status showing it while it runs;
blender-mcp's wire (unframed, persistent, pipelined) reaching its dispatcher; and the real Blender
Lab client `blender-mcp-connect==0.1.0` (in .venv-blmcp, legacy mode through BLENDER_MCP_HOST /
BLENDER_MCP_PORT) driven by the official `mcp` client over stdio. Every wait polls a condition up
to a deadline; nothing asserts on timings.
"""

import contextlib
import json
import os
import pathlib
import socket
import tempfile
import threading

import anyio
import bwtest
import pytest
from bwtest import Conn, assert_success

# Jobs of this module's services are interrupted after this many seconds (--default-timeout).
DEADLINE = 5
ANSWER_WAIT = 60.0
ROOT = pathlib.Path(__file__).resolve().parent.parent
BLMCP = ROOT / ".venv-blmcp" / "bin" / "blender-mcp-connect"


@pytest.fixture(scope="module")
def server(request):
    """`blendwire serve --port 0 --mcp-addon-port 0` for one runtime; `.addon_port` is the second
    listener's port (from the ready handshake)."""
    sp = bwtest.start_serve(request.param, extra=["--mcp-addon-port", "0", "--default-timeout", str(DEADLINE)])
    assert sp.ready.addon_port, sp.output()
    sp.addon_port = sp.ready.addon_port
    yield sp
    sp.shutdown()


def lab_raw(port, data: bytes, timeout=ANSWER_WAIT, pieces=None):
    """Send `data` (in 1-byte writes when `pieces`), read up to the NUL; the answer and whether the
    server closed the connection after it."""
    with socket.create_connection((bwtest.HOST, port), timeout=timeout) as s:
        if pieces:
            for i in range(len(data)):
                s.sendall(data[i : i + 1])
        else:
            s.sendall(data)
        buf = bytearray()
        while b"\0" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf.extend(chunk)
        assert b"\0" in buf, f"no NUL-terminated answer: {bytes(buf[:300])!r}"
        answer, _, rest = bytes(buf).partition(b"\0")
        assert rest == b"", rest
        assert answer.isascii(), "Blender Lab's answers are ASCII JSON"
        closed = s.recv(1) == b""
        return without_checkpoint(json.loads(answer)), closed


def without_checkpoint(answer):
    """The answer without the checkpoint id the core adds to every job that may change data
    (test_checkpoints.py tests it): the dialect's own fields are compared here."""
    checkpoint = answer.pop("checkpoint", None)
    assert checkpoint is None or (isinstance(checkpoint, str) and checkpoint), answer
    return answer


def lab(port, code, strict_json=True, **kw):
    req = {"type": "execute", "code": code, "strict_json": strict_json}
    answer, closed = lab_raw(port, (json.dumps(req) + "\0").encode(), **kw)
    assert closed, "one request per connection: closed after the answer"
    return answer


def status(server):
    return assert_success(bwtest.request(server.port, "get_status", host=server.host, timeout=10))


# ---- both listeners ---------------------------------------------------------------------------------


def test_both_listeners_serve_at_once(server):
    # BLD Remote on the main port, unchanged.
    assert assert_success(bwtest.request(server.port, "get_scene_info"))["object_count"] >= 0
    # blender-mcp on the second one: persistent, pipelined, answered by its dispatcher as is.
    with Conn(server.addon_port) as c:
        c.send({"type": "no_such_command", "params": {}})
        c.send({"type": "no_such_command_2", "params": {}})
        first, second = c.read_many(2, timeout=ANSWER_WAIT)
        assert first["status"] == "error" and "no_such_command" in first["message"], first
        assert second["status"] == "error" and "no_such_command_2" in second["message"], second
        # The core's own commands answer there too.
        st = c.request({"type": "get_status", "params": {}}, timeout=ANSWER_WAIT)
        addon = st["result"]["service"]["mcp_addon"]
        assert addon["port"] == server.addon_port and addon["connections"]["blender_mcp"] >= 1, addon
        assert c.request({"type": "cancel", "params": {"id": "nothing"}})["result"]["cancelled"] is False
    # Blender Lab on the same second port.
    answer = lab(server.addon_port, "import bpy\nresult['scenes'] = len(bpy.data.scenes)")
    assert answer == {"status": "ok", "result": {"scenes": 1}}, answer
    assert status(server)["service"]["mcp_addon"]["connections"]["blender_lab"] >= 1


def test_blender_mcp_requests_reach_the_dispatcher_with_their_timeout(server):
    with Conn(server.addon_port) as c:
        resp = c.request({"type": "get_scene_info", "params": {"_timeout_seconds": 30}}, timeout=ANSWER_WAIT)
        # The placeholder table (or the full one): the whole response of blendwire.handlers.blender_mcp.
        assert resp.get("status") in ("success", "error") and "error_code" not in resp, resp


# ---- Blender Lab: execute ---------------------------------------------------------------------------


def test_lab_namespace_output_and_ascii(server):
    answer = lab(
        server.addon_port,
        "import sys\nassert result == {}\nprint('hi é')\nprint('warn', file=sys.stderr)\nresult['x'] = '☃'\n",
    )
    assert answer == {"status": "ok", "result": {"x": "☃"}, "stdout": "hi é\n", "stderr": "warn\n"}, answer
    # Fresh namespace per request: nothing of the last one is left.
    assert lab(server.addon_port, "result['had_x'] = 'x' in globals()") == {"status": "ok", "result": {"had_x": False}}


def test_lab_strict_json_both_ways(server):
    code = "import bpy\nresult['scene'] = bpy.data.scenes[0]\nresult['ok'] = [1, 2]"
    strict = lab(server.addon_port, code, strict_json=True)
    assert strict["status"] == "error" and "not JSON" in strict["message"], strict
    loose = lab(server.addon_port, code, strict_json=False)
    assert loose["status"] == "ok", loose
    assert loose["result"]["ok"] == [1, 2] and "bpy.data.scenes" in loose["result"]["scene"], loose


def test_lab_errors(server):
    failed = lab(server.addon_port, "print('before')\n1 / 0\n")
    assert failed["status"] == "error" and "ZeroDivisionError" in failed["message"], failed
    assert "Traceback" in failed["message"] and failed["stdout"] == "before\n", failed
    not_dict = lab(server.addon_port, "result = 42")
    assert not_dict["status"] == "error" and "wrap" in not_dict["message"], not_dict
    other, _ = lab_raw(server.addon_port, b'{"type": "ping"}\0')
    assert other["status"] == "error" and "ping" in other["message"], other
    buggy, _ = lab_raw(server.addon_port, b'{"type": "execute", "code": "x = 1"}\0')
    assert buggy["status"] == "error" and "buggy" in buggy["message"], buggy
    bad_json, _ = lab_raw(server.addon_port, b'{"type": "execute", "code": }\0')
    assert bad_json["status"] == "error", bad_json
    # Bytes after the first NUL are ignored; a request in 1-byte writes is one request.
    after, closed = lab_raw(
        server.addon_port,
        (json.dumps({"type": "execute", "code": "result['n'] = 1", "strict_json": True}) + "\0junk{}\0").encode(),
    )
    assert after == {"status": "ok", "result": {"n": 1}} and closed, after
    slow, _ = lab_raw(
        server.addon_port,
        (json.dumps({"type": "execute", "code": "result['s'] = '\\u0000'", "strict_json": True}) + "\0").encode(),
        pieces=True,
    )
    assert slow == {"status": "ok", "result": {"s": "\0"}}, slow


def test_lab_every_request_shape(server):
    """Each malformed shape gets one NUL-terminated error answer (never silence, never a wait for
    the read timeout), then the connection is closed; valid extras are ignored."""
    shapes = [
        (b"\0", "not JSON"),  # an empty request
        (b"[1, 2]\0", "expected a JSON object"),
        (b'"execute"\0', "got a string"),
        (b'{"code": "x = 1", "strict_json": true}\0', "Missing request type"),
        (b'{"type": 7, "code": "x = 1", "strict_json": true}\0', "Unknown request type: 7"),
        (b'{"type": "execute", "code": 5, "strict_json": true}\0', "'code'"),
        (b'{"type": "execute", "code": "x = 1", "strict_json": "yes"}\0', "buggy"),
        (b'{"type": "execute", "code": "x = 1", "strict_json": true, "id": {"a": 1}}\0', '"id" must be'),
    ]
    for data, words in shapes:
        answer, closed = lab_raw(server.addon_port, data)
        assert answer["status"] == "error" and words in answer["message"], (data, answer)
        assert closed, data
    # Unknown fields are ignored; an integer id names the job.
    extra, _ = lab_raw(
        server.addon_port,
        b'{"type": "execute", "code": "result[\'a\'] = 1", "strict_json": true, "extra": [1], "id": 5}\0',
    )
    assert extra == {"status": "ok", "result": {"a": 1}}, extra


def test_lab_request_in_one_byte_writes_with_split_utf8(server):
    req = {"type": "execute", "code": "result['s'] = '\u2603 \u00e9'\nprint('\u2603')", "strict_json": True}
    data = (json.dumps(req, ensure_ascii=False) + "\0").encode()
    assert len(data) != len(data.decode()), "the request carries multi-byte UTF-8 characters, split by the writes"
    answer, closed = lab_raw(server.addon_port, data, pieces=True)
    assert answer == {"status": "ok", "result": {"s": "\u2603 \u00e9"}, "stdout": "\u2603\n"} and closed, answer


def test_lab_raw_nul_inside_a_string_ends_the_request(server):
    """A Lab client reads and writes up to a NUL, and JSON escapes NUL in strings as \\u0000, so a
    raw NUL byte can only be a frame's end: a request with one inside a string is malformed JSON,
    answered at once (also when nothing follows the NUL) and closed; nothing after it runs."""
    marker = "nul_after_frame_ran"
    tail = json.dumps(
        {"type": "execute", "code": f"import bpy\nbpy.data.scenes[0][{marker!r}] = 1", "strict_json": True}
    ).encode()
    for data in (
        b'{"type": "execute", "code": "result[\'s\'] = \'a\0b\'", "strict_json": true}\0',  # whole, NUL inside
        b'{"type": "execute", "code": "result[\'s\'] = \'a\0',  # the NUL, then nothing: no wait for a timeout
        b'{"type": "execute", "code": "x = \'\0\'"}' + tail + b"\0",  # a second request after it is not run
    ):
        answer, closed = lab_raw(server.addon_port, data, timeout=DEADLINE * 2)
        assert answer["status"] == "error" and answer["message"].startswith("Invalid request: malformed JSON"), (
            data,
            answer,
        )
        assert closed, data
    ran = bwtest.execute(server.port, f"import bpy\nprint({marker!r} in bpy.data.scenes[0], end='')")
    assert bwtest.stdout_of(assert_success(ran)) == "False"


def test_lab_sandbox_refuses_and_blender_stays_up(server):
    for code, words in [
        ("import sys\nsys.exit(3)", "sys.exit() is not allowed"),
        ("raise SystemExit(0)", "SystemExit"),
        ("exit()", "SystemExit"),
        ("import bpy\nbpy.ops.wm.quit_blender()", "would quit Blender"),
        ("import bpy\nbpy.ops.wm.read_factory_settings()", "factory settings"),
        ("import bpy\nbpy.ops.wm.read_userpref()", "preferences"),
    ]:
        answer = lab(server.addon_port, code)
        assert answer["status"] == "error" and words in answer["message"], (code, answer)
    # The refusals hold while sent code runs (and are lifted after it: Blender's own quit works).
    assert lab(server.addon_port, "import sys\nresult['exit_is_back'] = sys.exit.__name__") == {
        "status": "ok",
        "result": {"exit_is_back": "_exit_refused"},
    }, "sys.exit is refused while sent code runs"
    assert server.proc.poll() is None
    assert_success(bwtest.request(server.port, "get_scene_info"))


def test_lab_deferred_answer_in_every_runtime(server):
    code = (
        "import sys\n"
        "print('first run')\n"
        "calls = [0]\n"
        "def check_is_finished():\n"
        "    calls[0] += 1\n"
        "    return {'calls': calls[0]} if calls[0] >= 3 else None\n"
    )
    answer = lab(server.addon_port, code)
    assert answer == {"status": "ok", "result": {"calls": 3}, "stdout": "first run\n"}, answer
    raising = lab(server.addon_port, "def check_is_finished():\n    raise ValueError('nope')\n")
    assert raising["status"] == "error" and "ValueError: nope" in raising["message"], raising
    wrong = lab(server.addon_port, "def check_is_finished():\n    return 7\n")
    assert wrong["status"] == "error" and "int" in wrong["message"], wrong


def test_lab_runaway_loop_is_interrupted_and_status_shows_it(server):
    answers = []
    t = threading.Thread(target=lambda: answers.append(lab(server.addon_port, "while True:\n    pass\n")), daemon=True)
    t.start()

    def running():
        mt = status(server)["main_thread"]
        return mt if mt["state"] == "running" and mt["command"] == "blender_lab:execute" else None

    mt = bwtest.poll_until(running, ANSWER_WAIT)
    assert mt, status(server)
    t.join(ANSWER_WAIT)
    assert answers, "no answer to the runaway request"
    assert answers[0]["status"] == "error" and answers[0]["error_code"] == "interrupted", answers[0]
    assert "interrupted after" in answers[0]["message"], answers[0]
    # The next request is served.
    assert lab(server.addon_port, "result['after'] = True") == {"status": "ok", "result": {"after": True}}


def pending_lab_requests(server):
    code = "import blendwire.handlers.blender_lab as bl\nprint(len(bl._Pending.entries))"
    return int(bwtest.stdout_of(assert_success(bwtest.execute(server.port, code))).strip())


def test_lab_deferred_request_is_dropped_when_its_client_leaves(server):
    before = pending_lab_requests(server)
    req = {"type": "execute", "code": "def check_is_finished():\n    return None\n", "strict_json": True}
    with socket.create_connection((bwtest.HOST, server.addon_port), timeout=ANSWER_WAIT) as s:
        s.sendall((json.dumps(req) + "\0").encode())
        assert bwtest.poll_until(lambda: pending_lab_requests(server) == before + 1, ANSWER_WAIT)
    assert bwtest.poll_until(lambda: pending_lab_requests(server) == before, ANSWER_WAIT), "not dropped"


def test_lab_deferred_request_is_dropped_when_its_client_leaves_before_the_answer(server):
    """The client leaves while the job that leaves check_is_finished() still runs: the pending
    answer it makes is dropped once the job ends, not kept for a client that is gone."""
    before = pending_lab_requests(server)
    code = "import time\ntime.sleep(0.5)\ndef check_is_finished():\n    return None\n"
    req = {"type": "execute", "code": code, "strict_json": True}
    with socket.create_connection((bwtest.HOST, server.addon_port), timeout=ANSWER_WAIT) as s:
        s.sendall((json.dumps(req) + "\0").encode())
        assert bwtest.poll_until(lambda: status(server)["main_thread"]["state"] == "running", ANSWER_WAIT)
    assert bwtest.poll_until(lambda: pending_lab_requests(server) == before, ANSWER_WAIT), "kept for a client that left"


def test_lab_request_cancelled_by_its_id(server):
    answers = []
    req = {"type": "execute", "code": "while True:\n    pass\n", "strict_json": True, "id": "lab-runaway"}
    t = threading.Thread(
        target=lambda: answers.append(lab_raw(server.addon_port, (json.dumps(req) + "\0").encode())[0]), daemon=True
    )
    t.start()
    with Conn(server.addon_port) as c:

        def cancelled():
            r = c.request({"type": "cancel", "params": {"id": "lab-runaway"}}, timeout=ANSWER_WAIT)
            return r["result"]["cancelled"]

        assert bwtest.poll_until(cancelled, ANSWER_WAIT, interval=0.05)
    t.join(ANSWER_WAIT)
    assert answers and answers[0]["error_code"] == "cancelled", answers


@pytest.mark.runtimes("background")
def test_lab_limits(server):
    big = {"type": "execute", "code": "x = '" + "a" * (10 * 1024 * 1024) + "'", "strict_json": True}
    answer, _ = lab_raw(server.addon_port, (json.dumps(big) + "\0").encode())
    assert answer["status"] == "error" and "too large" in answer["message"], answer["message"][:200]
    # A request that stops half-way: "Client timed out" (Blender Lab's words), then closed.
    with socket.create_connection((bwtest.HOST, server.addon_port), timeout=ANSWER_WAIT) as s:
        s.sendall(b'{"type": "execute", "co')
        data, closed = bwtest.read_until_eof(s, timeout=ANSWER_WAIT)
    assert data.endswith(b"\0") and json.loads(data[:-1]) == {"status": "error", "message": "Client timed out"}, data
    # An idle connection that sent nothing may be a blender-mcp client between calls: kept.
    with socket.create_connection((bwtest.HOST, server.addon_port), timeout=ANSWER_WAIT) as s:
        assert bwtest.poll_until(lambda: status(server)["service"]["connections_open"] >= 2, 10)
        s.sendall(b'{"type": "get_status", "params": {}}')
        assert bwtest.read_json(s, timeout=ANSWER_WAIT)[0]["status"] == "success"


# ---- the real Blender Lab client ------------------------------------------------------------------

# Tools of blender-mcp-connect that need neither the internet nor a GUI (the render tools answer
# through check_is_finished in the GUI, where they start a render job), and those that need a GUI.
# Not called: the `*_for_cli` tools, which start a Blender of their own on a .blend file.
NO_GUI_TOOLS = {
    "execute_blender_code": {"code": "import bpy\nresult['objects'] = len(bpy.data.objects)"},
    "get_objects_summary": {},
    "get_object_detail_summary": {"name": "Cube"},
    "get_blendfile_summary_datablocks": {},
    "get_blendfile_summary_path_info": {},
    "get_blendfile_summary_missing_files": {},
    "get_blendfile_summary_of_linked_libraries": {},
    "get_blendfile_summary_usage_guess": {},
    "get_python_api_docs": {"identifier": "bpy.types.Object"},
    # Searched in the client alone (its bundled docs, no Blender): a word in few pages, as "mesh" (in
    # nearly every page) costs half a minute of the client's CPU per runtime.
    "search_api_docs": {"query": "Decimate"},
    "search_manual_docs": {"query": "Decimate"},
    "render_thumbnail_to_path": {"output_path": "thumbnail.png"},
    "render_viewport_to_path": {"output_path": "viewport.png"},
}
GUI_TOOLS = {
    "get_screenshot_of_area_as_image": {"area_ui_type": "VIEW_3D"},
    "get_screenshot_of_window_as_image": {},
    "get_screenshot_of_window_as_json": {},
    "jump_to_tab_by_name": {"name": "Layout"},
    "jump_to_tab_by_space_type": {"space_type": "VIEW_3D"},
    "jump_to_view3d_object_by_name": {"name": "Cube"},
    "jump_to_view3d_object_data_by_name": {"name": "Cube"},
}


@contextlib.asynccontextmanager
async def blmcp_session(port):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=str(BLMCP),
        args=[],
        env={"BLENDER_MCP_HOST": bwtest.HOST, "BLENDER_MCP_PORT": str(port), "PATH": os.environ.get("PATH", "")},
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


# Tools that use a bpy API newer than some runtimes' Blender (Debian's 3.4): their error is the
# Blender API's, passed through as the add-on would.
NEWER_API = {"get_blendfile_summary_missing_files": "file_path_foreach"}


def test_the_real_blender_lab_client(server, serve_factory):
    if not BLMCP.exists():
        pytest.skip("blender-mcp-connect is not installed (scripts/setup makes .venv-blmcp)")
    # A service with the default deadline (30 s): a render in -b is one long C call, longer than
    # this module's deadline.
    plain = serve_factory(server.runtime, extra=["--mcp-addon-port", "0"])
    assert plain.ready.addon_port, plain.output()
    # The render tools render the scene as it is set: with Workbench, not the factory EEVEE (its
    # 1920x1080 render alone took 25-50 s in -b here). Their path through the service is the same
    # for every engine: one long C call in -b, a render job with deferred answers in the GUI.
    assert_success(bwtest.execute(plain.port, "import bpy\nbpy.context.scene.render.engine = 'BLENDER_WORKBENCH'"))
    results = {}

    async def body():
        async with blmcp_session(plain.ready.addon_port) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            calls = {**NO_GUI_TOOLS, **(GUI_TOOLS if server.runtime == "gui" else {})}
            if server.runtime == "bpy":
                # A render in the bpy module takes longer than the default deadline on this
                # machine (one long C call: answered `timeout`); --default-timeout is the remedy.
                calls = {k: v for k, v in calls.items() if not k.startswith("render_")}
            assert set(calls) <= tools, sorted(tools)
            for name, args in calls.items():
                r = await session.call_tool(name, args)
                text = "".join(c.text if c.type == "text" else f"<{c.type}>" for c in r.content)
                results[name] = (getattr(r, "is_error", None) or getattr(r, "isError", False), text)

    anyio.run(body)
    failed = {k: v for k, v in results.items() if v[0] or '"status": "error"' in v[1]}
    too_old = {k for k, v in failed.items() if k in NEWER_API and f"no attribute '{NEWER_API[k]}'" in v[1]}
    assert not too_old or not plain.version.startswith(("4.", "5.")), failed
    assert not {k: v for k, v in failed.items() if k not in too_old}, failed
    assert '"objects"' in results["execute_blender_code"][1], results["execute_blender_code"]
    for name in ("search_api_docs", "search_manual_docs"):
        assert "decimate" in results[name][1].lower(), results[name]


# ---- settings and token -----------------------------------------------------------------------------


def run_cli(*args, env=None):
    import subprocess

    return subprocess.run(
        bwtest.blendwire_command() + list(args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_the_port_rules_are_the_cores_before_blender_starts():
    same = run_cli("serve", "--port", "7001", "--mcp-addon-port", "7001")
    assert same.returncode == 1 and "--mcp-addon-port must differ from the command service's port" in same.stderr
    bad_env = run_cli("serve", "--port", "7001", env={"BLENDWIRE_MCP_ADDON_PORT": "nine"})
    assert bad_env.returncode == 1 and "$BLENDWIRE_MCP_ADDON_PORT" in bad_env.stderr, bad_env.stderr
    assert "BLENDWIRE_MCP_ADDON_PORT" in run_cli("serve", "--help").stdout


@pytest.mark.runtimes("background")
def test_the_token_rule_holds_on_both_dialects(server, serve_factory):
    sp = serve_factory("background", extra=["--mcp-addon-port", "0"], env={"BLENDWIRE_TOKEN": "s3cret"})
    port = sp.ready.addon_port
    assert port, sp.output()
    code = {"type": "execute", "code": "result['ran'] = True", "strict_json": True}
    refused, _ = lab_raw(port, (json.dumps(code) + "\0").encode())
    assert refused["status"] == "error" and refused["error_code"] == "unauthorized", refused
    allowed, _ = lab_raw(port, (json.dumps({**code, "token": "s3cret"}) + "\0").encode())
    assert allowed == {"status": "ok", "result": {"ran": True}}, allowed
    with Conn(port) as c:
        assert c.request({"type": "get_scene_info", "params": {}})["error_code"] == "unauthorized"
        assert c.request({"type": "get_status", "params": {}, "token": "s3cret"})["status"] == "success"
        # server_shutdown on this listener too (with the token: serve_factory's own sends none).
        assert c.request({"type": "server_shutdown", "params": {}, "token": "s3cret"})["status"] == "success"
    assert sp.wait_exit() == 0, sp.output()

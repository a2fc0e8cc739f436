"""`blendwire mcp --http` and `blendwire serve --mcp-http` driven by the official MCP Python SDK
(`mcp` from PyPI) over Streamable HTTP, against real `blendwire serve` processes: the handshake,
the tool list, calls, four agents at once on one endpoint, progress and cancellation; and the
guard rails: a foreign Origin, a Host that is not the listener's, a missing or wrong bearer token
are refused (403 / 401) and nothing runs in Blender.

Every wait polls a condition with a deadline; nothing asserts on timings.
"""

import base64
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile

import anyio
import bwtest
import httpx2
import mcp_types
import pytest
from bwtest import assert_success, wait_for
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from test_cancel_progress import check_progress_and_cancel
from test_interrupt import ANSWER_WAIT
from test_mcp import TOOLS, failed, ok, ok_json, png_size, text_of

pytestmark = pytest.mark.runtimes("background", "bpy")

LISTENING_RE = re.compile(r"MCP over Streamable HTTP at (http://\S+/mcp)")
TOKEN = "http-secret-token"


class McpProcess:
    """A `blendwire mcp --http 0 ...` subprocess; .url once it listens, its stderr in a temp file."""

    def __init__(self, blender_port, *extra, env=None, http="0"):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="blendwire-mcp-http-", suffix=".log", delete=False)
        cmd = bwtest.blendwire_command() + ["mcp", "--http", http, "--blender-port", str(blender_port), *extra]
        full_env = {k: v for k, v in os.environ.items() if k != "BLENDWIRE_TOKEN"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=full_env
        )
        found = wait_for(lambda: LISTENING_RE.search(self.stderr()) or self.proc.poll() is not None, 30, "the URL line")
        assert found and self.proc.poll() is None, self.stderr()
        self.url = LISTENING_RE.search(self.stderr())[1]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stderr(self):
        with open(self.log.name) as f:
            return f.read()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def endpoint(server):
    mp = McpProcess(server.port)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def token_endpoint(server):
    mp = McpProcess(server.port, env={"BLENDWIRE_TOKEN": TOKEN})
    yield mp
    mp.close()


@contextlib.asynccontextmanager
async def http_session(url, headers=None, message_handler=None):
    """An initialized ClientSession over Streamable HTTP."""
    async with httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30, read=300)) as client:
        async with streamable_http_client(url, http_client=client) as (read, write):
            async with ClientSession(read, write, message_handler=message_handler) as session:
                session.init_result = await session.initialize()
                yield session


def completed(server):
    bridge = assert_success(bwtest.request(server.port, "get_status", host=server.host, timeout=10))["bridge"]
    return bridge["completed"] + bridge["failed"]


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


def post(port, message, headers):
    """One raw POST to /mcp (http.client sends our Host header as given): (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        base = {
            "Host": f"127.0.0.1:{port}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        conn.request("POST", "/mcp", json.dumps(message), {**base, **headers})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def raw_session(port, headers):
    """A session opened by hand (initialize, initialized): the headers that name it."""
    status, response_headers, text = post(port, INITIALIZE, headers)
    assert status == 200, (status, text)
    session = {"Mcp-Session-Id": response_headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
    status, _, text = post(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {**headers, **session})
    assert status == 202, (status, text)
    return session


def tool_call(code):
    return {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "execute_code", "arguments": {"code": code}},
    }


# ---- the protocol over HTTP -----------------------------------------------------------------------


def test_initialize_list_tools_and_call(server, endpoint):
    async def body():
        async with http_session(endpoint.url) as s:
            assert s.init_result.server_info.name == "blendwire"
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == set(TOOLS)
            info = ok_json(await s.call_tool("get_scene_info", {}))
            assert "object_count" in info, info
            assert text_of(ok(await s.call_tool("execute_code", {"code": "print(6 * 7)"}))) == "42\n"
            assert "name is required" in failed(await s.call_tool("get_object_info", {}))

    anyio.run(body)


def test_four_agents_at_once_each_call_its_own_job(server, endpoint):
    before = completed(server)
    calls = 3

    async def agent(n, outputs):
        async with http_session(endpoint.url) as s:
            for i in range(calls):
                code = f"print('agent {n} call {i}')"
                outputs.append(text_of(ok(await s.call_tool("execute_code", {"code": code}))))

    async def body():
        outputs = {n: [] for n in range(4)}
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(agent, n, outputs[n])
        for n in range(4):
            assert outputs[n] == [f"agent {n} call {i}\n" for i in range(calls)], outputs

    anyio.run(body)
    assert completed(server) - before == 4 * calls


def test_progress_and_cancel_over_http(server, endpoint):
    async def body():
        async with http_session(endpoint.url) as s:
            await check_progress_and_cancel(s, server)
        assert "cancelling its Blender job" in endpoint.stderr()

    anyio.run(body)


# ---- resources, the scene subscription, the prompt ---------------------------------------------------

RESOURCE_NOT_FOUND = -32002
SETUP = (  # idempotent: each transport's test runs it on the same Blender
    "m = bpy.data.materials.get('res mat') or bpy.data.materials.new('res mat')\n"
    "c = bpy.data.collections.get('res coll')\n"
    "if c is None:\n"
    "    c = bpy.data.collections.new('res coll')\n"
    "    bpy.context.scene.collection.children.link(c)\n"
    "o = bpy.data.objects.get('res obj')\n"
    "if o is None:\n"
    "    o = bpy.data.objects.new('res obj', bpy.data.meshes.new('res mesh'))\n"
    "    c.objects.link(o)\n"
    "    o.data.materials.append(m)\n"
    "o.location = (4, 5, 6)\n"
)


def read_json(result):
    (content,) = result.contents
    assert content.mime_type == "application/json", content
    return json.loads(content.text)


async def check_resources(s, server, tmp_path):
    listed = {str(r.uri) for r in (await s.list_resources()).resources}
    assert listed == {"blender://scene", "blender://materials", "blender://collections", "blender://status"}
    (template,) = (await s.list_resource_templates()).resource_templates
    assert template.uri_template == "blender://object/{name}"
    ok(await s.call_tool("execute_code", {"code": SETUP}))

    scene = read_json(await s.read_resource("blender://scene"))
    assert scene["name"] and scene["object_count"] >= 1, scene
    obj = read_json(await s.read_resource("blender://object/res%20obj"))
    assert obj["name"] == "res obj" and obj["location"] == [4.0, 5.0, 6.0] and obj["materials"] == ["res mat"], obj
    materials = {m["name"]: m for m in read_json(await s.read_resource("blender://materials"))}
    assert materials["res mat"]["users"] >= 1, materials
    collections = {c["name"]: c for c in read_json(await s.read_resource("blender://collections"))}
    assert collections["res coll"]["objects"] == ["res obj"], collections
    assert "res coll" in collections[bpy_scene_collection(collections)]["children"], collections
    with pytest.raises(MCPError) as missing:
        await s.read_resource("blender://object/no%20such%20object")
    assert missing.value.code == RESOURCE_NOT_FOUND and "no such object" in str(missing.value.error.message)
    with pytest.raises(MCPError) as unknown:
        await s.read_resource("blender://nothing")
    assert unknown.value.code == RESOURCE_NOT_FOUND and "blender://object/{name}" in unknown.value.error.message

    # The status comes without Blender's main thread: read while a job holds it.
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    with bwtest.Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        c.send({"type": "execute_code", "params": {"code": bwtest.blocking_code(started, release)}})
        try:
            await anyio.to_thread.run_sync(lambda: bwtest.wait_file(started, ANSWER_WAIT))
            status = read_json(await s.read_resource("blender://status"))
            assert status["main_thread"]["state"] == "running", status
        finally:
            bwtest.touch(release)
        assert_success(c.read())


def bpy_scene_collection(collections):
    """The scene's root collection is listed first; its name depends on the Blender version."""
    return next(iter(collections))


def test_a_call_is_answered_as_json_unless_progress_streams_first(server, endpoint):
    """rmcp answers every call of a session as an event stream; a call whose only message is its
    response comes back as application/json (a client then keeps its connection), one with
    progress stays an event stream: the notifications, then the response."""
    port = endpoint.port
    session = raw_session(port, {})
    status, headers, text = post(port, tool_call("print(1)"), session)
    assert status == 200 and headers["content-type"] == "application/json", (status, headers, text)
    answer = json.loads(text)
    assert answer["id"] == 2 and not answer["result"].get("isError"), answer
    call = tool_call("print(1)")
    call["params"]["_meta"] = {"progressToken": "p"}
    status, headers, text = post(port, call, session)
    assert status == 200 and headers["content-type"].startswith("text/event-stream"), (status, headers, text)
    messages = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
    assert messages[-1]["id"] == 2 and not messages[-1]["result"].get("isError"), messages
    assert messages[:-1] and all(m["method"] == "notifications/progress" for m in messages[:-1]), messages


def test_resources_and_prompt_over_http(server, endpoint, tmp_path):
    async def body():
        async with http_session(endpoint.url) as s:
            caps = s.init_result.capabilities
            assert caps.resources.subscribe is True and caps.prompts is not None, caps
            await check_resources(s, server, tmp_path)

            (prompt,) = (await s.list_prompts()).prompts
            assert prompt.name == "blender_workflow" and [a.name for a in prompt.arguments] == ["task"], prompt
            got = await s.get_prompt("blender_workflow", {"task": "add a red cube"})
            (message,) = got.messages
            text = message.content.text
            for needle in ("get_scene_info", "execute_code", "timeout_seconds", "blendwire.progress", "add a red cube"):
                assert needle in text, (needle, text)
            with pytest.raises(MCPError):
                await s.get_prompt("no_such_prompt")

    anyio.run(body)


@pytest.mark.runtimes("background")
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_resources_prompt_and_subscription_over_stdio(server, tmp_path):
    async def body():
        params = StdioServerParameters(
            command=bwtest.blendwire_command()[0],
            args=bwtest.blendwire_command()[1:] + ["mcp", "--blender-port", str(server.port)],
        )
        updates = []
        async with (
            stdio_client(params, errlog=sys.stderr) as (read, write),
            ClientSession(read, write, message_handler=recorder(updates)) as s,
        ):
            await s.initialize()
            await check_resources(s, server, tmp_path)
            (prompt,) = (await s.list_prompts()).prompts
            assert "execute_code" in (await s.get_prompt(prompt.name)).messages[0].content.text

            await s.subscribe_resource("blender://scene")
            ok(await s.call_tool("execute_code", {"code": "bpy.data.objects['res obj'].location.z = 7"}))
            # Reading the scene at once does not swallow the update (other subscribers need it).
            assert [7.0] == [
                o["location"][2]
                for o in read_json(await s.read_resource("blender://scene"))["objects"]
                if o["name"] == "res obj"
            ]
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: updates, ANSWER_WAIT, "a scene update"))
            assert updates == ["blender://scene"], updates

    anyio.run(body)


def recorder(updates):
    """A message_handler that records the URIs of resources/updated notifications."""

    async def on_message(message):
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    return on_message


# resources/subscribe is the handshake protocol's (what ClientSession negotiates); the SDK warns that
# 2026-07-28 replaces it with subscriptions/listen.
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_scene_subscription_is_updated_once_after_jobs_that_changed_it(server):
    mp = McpProcess(server.port)  # a fresh server: no subscriber or scene snapshot yet
    updates = {"first": [], "second": []}

    async def body():
        async with (
            http_session(mp.url, message_handler=recorder(updates["first"])) as s,
            http_session(mp.url, message_handler=recorder(updates["second"])) as s2,
            http_session(mp.url) as other,
        ):
            await s.subscribe_resource("blender://scene")
            # Another agent's jobs count: five that each add an object, all at once.
            async with anyio.create_task_group() as tg:
                for n in range(5):
                    code = f"bpy.context.scene.collection.objects.link(bpy.data.objects.new('sub{n}', None))"
                    tg.start_soon(other.call_tool, "execute_code", {"code": code})
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: updates["first"], ANSWER_WAIT, "a scene update"))
            assert updates["first"][0] == "blender://scene"
            first = len(updates["first"])
            assert first < 5, updates  # coalesced

            # A job that changes nothing makes no update: wait until the server has read the
            # scene again after it (one more completed job), then look.
            before = completed(server)
            ok(await other.call_tool("execute_code", {"code": "print(len(bpy.data.objects))"}))
            await anyio.to_thread.run_sync(
                lambda: wait_for(lambda: completed(server) >= before + 2, ANSWER_WAIT, "the scene re-read")
            )
            assert len(updates["first"]) == first, updates

            # Unsubscribed: the next change reaches the other subscriber only.
            await s2.subscribe_resource("blender://scene")
            await s.unsubscribe_resource("blender://scene")
            ok(await other.call_tool("execute_code", {"code": "bpy.data.objects['sub0'].location.x = 9"}))
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: updates["second"], ANSWER_WAIT, "an update"))
            assert updates["second"] == ["blender://scene"] and len(updates["first"]) == first, updates

    try:
        anyio.run(body)
    finally:
        mp.close()


# ---- refused: foreign Origin, bad Host, missing or wrong token; nothing runs -----------------------


def test_foreign_origin_and_bad_host_are_refused_and_run_nothing(server, endpoint, tmp_path):
    ran = tmp_path / "ran"
    code = f"open({str(ran)!r}, 'w').close()\nprint('ran')"
    port = endpoint.port
    session = raw_session(port, {})
    before = completed(server)
    refusals = [
        {"Origin": "http://evil.example"},
        {"Origin": "https://attacker.test:8443"},
        {"Origin": "null"},
        {"Host": f"evil.example:{port}"},  # DNS rebinding: the page's name resolved to 127.0.0.1
        {"Host": f"127.0.0.1:{port + 1}"},
    ]
    for headers in refusals:
        status, _, text = post(port, INITIALIZE, headers)
        assert status == 403, (headers, status, text)
        # In an open session, the call that would run code is refused too.
        status, _, text = post(port, tool_call(code), {**session, **headers})
        assert status == 403, (headers, status, text)
    assert not ran.exists()
    assert completed(server) == before
    log = endpoint.stderr()
    assert "refused an HTTP request (403; Host 127.0.0.1" in log and "Origin http://evil.example" in log, log
    assert f"refused an HTTP request (403; Host evil.example:{port}, Origin -)" in log, log
    # Loopback pages and agents without an Origin are served; the same call runs.
    for headers in ({"Origin": "http://localhost:6274"}, {"Host": f"localhost:{port}"}):
        status, _, text = post(port, INITIALIZE, headers)
        assert status == 200, (headers, status, text)
    status, _, text = post(port, tool_call(code), {**session, "Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and "ran" in text, (status, text)
    assert ran.exists()


def test_missing_or_wrong_token_is_refused_and_runs_nothing(server, token_endpoint, tmp_path):
    ran = tmp_path / "ran"
    code = f"open({str(ran)!r}, 'w').close()\nprint('ran')"
    port = token_endpoint.port
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    session = raw_session(port, bearer)
    before = completed(server)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Bearer "}):
        for message, extra in ((INITIALIZE, {}), (tool_call(code), session)):
            status, response_headers, text = post(port, message, {**extra, **headers})
            assert status == 401 and response_headers.get("www-authenticate") == "Bearer", (headers, status, text)
            assert TOKEN not in text
    assert not ran.exists()
    assert completed(server) == before
    log = token_endpoint.stderr()
    assert "without the right bearer token (401" in log and TOKEN not in log, log

    async def body():  # the official client with the token
        async with http_session(token_endpoint.url, bearer) as s:
            assert text_of(ok(await s.call_tool("execute_code", {"code": code}))) == "ran\n"

    anyio.run(body)
    assert ran.exists()


@pytest.mark.runtimes("background")  # the HTTP layer alone: one runtime is enough
def test_allowed_origins_and_hosts_and_an_off_loopback_listener_with_a_token(server):
    mp = McpProcess(
        server.port,
        "--allow-origin",
        "https://app.example.com:443",
        "--allow-host",
        "box.lan",
        env={"BLENDWIRE_TOKEN": TOKEN},
        http="0.0.0.0:0",
    )
    try:
        port, bearer = mp.port, {"Authorization": f"Bearer {TOKEN}"}
        for headers, expected in (
            ({"Origin": "https://app.example.com"}, 200),  # the default port of https
            ({"Origin": "https://app.example.com:444"}, 403),
            ({"Origin": "http://app.example.com"}, 403),
            ({"Host": f"box.lan:{port}"}, 200),
            ({"Host": f"box.lan:{port + 1}"}, 403),
            ({"Host": f"other.lan:{port}"}, 403),
            ({"Host": f"0.0.0.0:{port}"}, 403),  # the unspecified address names no host
        ):
            status, _, text = post(port, INITIALIZE, {**bearer, **headers})
            assert status == expected, (headers, status, text)
        status, _, _ = post(port, INITIALIZE, {"Host": f"box.lan:{port}"})
        assert status == 401
    finally:
        mp.close()


@pytest.mark.runtimes("background")  # the HTTP layer alone: one runtime is enough
def test_off_loopback_needs_a_token_and_bad_flags_say_what_to_do(server):
    def mcp(*args, env=None):
        full_env = {k: v for k, v in os.environ.items() if k != "BLENDWIRE_TOKEN"}
        full_env.update(env or {})
        return subprocess.run(
            bwtest.blendwire_command() + ["mcp", *args], capture_output=True, text=True, timeout=30, env=full_env
        )

    out = mcp("--http", "0.0.0.0:0")
    assert out.returncode == 1 and "--http must be loopback unless there is a token" in out.stderr, out
    assert "BLENDWIRE_TOKEN" in out.stderr, out
    out = mcp("--http", "nope")
    assert out.returncode == 1 and "--http must be [HOST:]PORT" in out.stderr, out
    out = mcp("--http", "0", "--allow-origin", "example.com")
    assert out.returncode == 1 and "--allow-origin must be an origin" in out.stderr, out
    out = mcp("--stdio")
    assert out.returncode == 1 and "go with --http" in out.stderr, out
    with bwtest.taken_port() as taken:
        out = mcp("--http", str(taken))
        assert out.returncode == 1 and f"cannot listen for MCP on 127.0.0.1:{taken}" in out.stderr, out


# ---- blendwire serve --mcp-http ---------------------------------------------------------------------


def test_serve_mcp_http_starts_and_stops_with_serve(server, serve_factory):
    sp = serve_factory(server.runtime, extra=["--mcp-http", "0"])
    url = sp.ready.mcp_url
    assert url and url.startswith("http://127.0.0.1:") and url.endswith("/mcp"), sp.output()
    port = int(url.rsplit(":", 1)[1].split("/")[0])

    async def body():
        async with http_session(url) as s:
            info = ok_json(await s.call_tool("check_connection_status", {}))
            assert info["connected"] is True and info["address"] == f"127.0.0.1:{sp.port}", info

    anyio.run(body)
    sp.shutdown()
    assert bwtest.connection_refused(port)


# ---- GUI: the screenshot inline, sized by the caller ------------------------------------------------


@pytest.mark.runtimes("gui")
def test_viewport_screenshot_inline_over_http(server, tmp_path):
    mp = McpProcess(server.port)
    leftovers = (
        "import glob, os, tempfile\nprint(len(glob.glob(os.path.join(tempfile.gettempdir(), 'blender_screenshot_*'))))"
    )

    async def body():
        async with http_session(mp.url) as s:
            before = text_of(ok(await s.call_tool("execute_code", {"code": leftovers})))
            for max_size, fmt, mime in ((320, "png", "image/png"), (150, "jpeg", "image/jpeg")):
                result = ok(await s.call_tool("get_viewport_screenshot", {"max_size": max_size, "format": fmt}))
                (image,) = [c for c in result.content if c.type == "image"]
                assert image.mime_type == mime, image.mime_type
                data = base64.b64decode(image.data)
                if fmt == "png":
                    assert max(png_size(data)) == max_size
                else:
                    assert data[:3] == b"\xff\xd8\xff", data[:8]  # a JPEG
                (label,) = [c.text for c in result.content if c.type == "text"]
                assert f"{fmt} screenshot" in label and f"({len(data)} bytes)" in label, label
            # Inline: Blender kept no file, and nothing names a path.
            assert text_of(ok(await s.call_tool("execute_code", {"code": leftovers}))) == before

    try:
        anyio.run(body)
    finally:
        mp.close()

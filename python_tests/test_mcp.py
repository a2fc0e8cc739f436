"""`blendwire mcp` driven by the official MCP Python SDK (`mcp` from PyPI) over stdio, against real
`blendwire serve` processes: the handshake, the tool list, every tool, failures, Blender down at
start then up (and restarted mid-call) in one session, and a 4 MiB stdout.

Every wait polls a condition with a deadline; nothing asserts on timings.
"""

import base64
import contextlib
import json
import os
import struct
import tempfile

import anyio
import bwtest
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

TOOLS = {
    "get_scene_info": [],
    "get_object_info": ["name"],
    "execute_code": ["code"],
    "get_viewport_screenshot": [],
    "put_persist_data": ["key", "data"],
    "get_persist_data": ["key"],
    "remove_persist_data": ["key"],
    "check_connection_status": [],
    "list_blenders": [],
    "undo_last": [],
    "list_checkpoints": [],
    "restore_checkpoint": ["id"],
}


@contextlib.asynccontextmanager
async def mcp_session(port, host=bwtest.HOST, env=None):
    """An initialized ClientSession with `blendwire mcp` for host:port; its stderr goes to a temp
    file (stdout is the protocol), yielded as session.errlog_path. `env` is added to the few
    variables the SDK passes on."""
    params = StdioServerParameters(
        command=bwtest.blendwire_command()[0],
        args=bwtest.blendwire_command()[1:] + ["mcp", "--blender-host", host, "--blender-port", str(port)],
        env=env,
    )
    with tempfile.NamedTemporaryFile("w+", prefix="blendwire-mcp-", suffix=".log", delete=False) as errlog:
        try:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    session.init_result = await session.initialize()
                    session.errlog_path = errlog.name
                    yield session
        finally:
            os.unlink(errlog.name)


def run(test):
    """Run an async test body (each test gets its own event loop and MCP process)."""
    return anyio.run(test)


def text_of(result):
    assert all(c.type == "text" for c in result.content), result
    return "".join(c.text for c in result.content)


def ok(result):
    assert not result.is_error, text_of(result)
    return result


def ok_json(result):
    return json.loads(text_of(ok(result)))


def failed(result):
    assert result.is_error, result
    return text_of(result)


# ---- without Blender ----------------------------------------------------------------------------


def test_initialize_list_tools_and_fail_fast_without_blender():
    port = bwtest.free_port()  # nothing listens there

    async def body():
        async with mcp_session(port) as s:
            assert s.init_result.server_info.name == "blendwire"
            assert s.init_result.capabilities.tools is not None
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == set(TOOLS)
            for name, required in TOOLS.items():
                t = tools[name]
                assert t.description and "\n" not in t.description, name
                assert t.input_schema["type"] == "object", name
                assert sorted(t.input_schema.get("required", [])) == sorted(required), name
                for key in required:
                    assert key in t.input_schema["properties"], (name, key)
            message = failed(await s.call_tool("get_scene_info", {}))
            assert f"127.0.0.1:{port}" in message and f"blendwire serve --port {port}" in message, message
            status = ok_json(await s.call_tool("check_connection_status", {}))
            assert status["connected"] is False and status["address"] == f"127.0.0.1:{port}", status
            with open(s.errlog_path) as f:
                assert f"127.0.0.1:{port} is not reachable" in f.read()

    run(body)


# ---- every tool against one Blender ---------------------------------------------------------------


@pytest.mark.runtimes("background")
def test_every_tool(server):
    async def body():
        async with mcp_session(server.port, server.host) as s:
            info = ok_json(await s.call_tool("get_scene_info", {}))
            assert {"name", "object_count", "objects", "frame_start"} <= set(info), info

            code = (
                "m = bpy.data.meshes.new('mcp_mesh')\n"
                "o = bpy.data.objects.new('mcp_obj', m)\n"
                "bpy.context.scene.collection.objects.link(o)\n"
                "o.location = (1, 2, 3)\n"
                "print(o.name)\n"
                "import sys; print('careful', file=sys.stderr)\n"
            )
            out = ok(await s.call_tool("execute_code", {"code": code}))
            assert [c.text for c in out.content] == ["mcp_obj\n", "stderr:\ncareful\n"]
            obj = ok_json(await s.call_tool("get_object_info", {"name": "mcp_obj"}))
            assert obj["type"] == "MESH" and obj["location"] == [1.0, 2.0, 3.0], obj
            missing = failed(await s.call_tool("get_object_info", {"name": "no such object"}))
            assert "no such object" in missing, missing
            assert "name is required" in failed(await s.call_tool("get_object_info", {}))

            data = {"a": [1, 2.5, "three"], "b": None}
            ok(await s.call_tool("put_persist_data", {"key": "mcp_k", "data": data}))
            assert ok_json(await s.call_tool("get_persist_data", {"key": "mcp_k"})) == {"data": data, "found": True}
            assert ok_json(await s.call_tool("remove_persist_data", {"key": "mcp_k"})) == {"removed": True}
            assert ok_json(await s.call_tool("get_persist_data", {"key": "mcp_k", "default": 7})) == {
                "data": 7,
                "found": False,
            }

            status = ok_json(await s.call_tool("check_connection_status", {}))
            assert status["connected"] is True and status["scene"] == info["name"], status
            assert status["main_thread"] == {"state": "idle"}, status

            # Background Blender cannot take screenshots: a tool error that says what to do.
            message = failed(await s.call_tool("get_viewport_screenshot", {"max_size": 400}))
            assert "background" in message and "blendwire serve --gui" in message, message

    run(body)


@pytest.mark.runtimes("background")
def test_failing_execute_code_is_a_tool_error_with_the_traceback(server):
    code = "def inner():\n    raise ValueError('boom from mcp')\ninner()\n"

    async def body():
        async with mcp_session(server.port, server.host) as s:
            message = failed(await s.call_tool("execute_code", {"code": code}))
            assert "Traceback" in message and "ValueError: boom from mcp" in message and "inner" in message, message
            # The session and the connection stay usable.
            assert text_of(ok(await s.call_tool("execute_code", {"code": "print(6 * 7)"}))) == "42\n"

    run(body)


@pytest.mark.runtimes("background")
def test_connection_status_reports_a_busy_main_thread_without_waiting_for_it(server):
    async def body():
        async with mcp_session(server.port, server.host) as s:
            # The runaway job must still run when the tool asks (a fraction of a second): 3 s is
            # ample; only if this machine was too slow (the job had ended) it is sent again with more.
            for deadline in (3, 10, 30):
                with bwtest.Conn(server.port, server.host, timeout=60) as c:
                    c.send(
                        {
                            "type": "execute_code",
                            "params": {"code": "while True:\n    pass\n", "_timeout_seconds": deadline},
                        }
                    )
                    bwtest.wait_for(
                        lambda: (
                            bwtest.request(server.port, "get_status", timeout=10)["result"]["main_thread"]["state"]
                            == "running"
                        ),
                        30,
                        "the runaway job to run",
                    )
                    status = ok_json(await s.call_tool("check_connection_status", {}))
                    assert c.read()["error_code"] == "interrupted"
                if status["main_thread"]["state"] != "idle" or deadline == 30:
                    break
            assert status["connected"] is True and "scene" not in status, status
            assert status["main_thread"]["state"] == "running", status
            assert status["main_thread"]["command"] == "execute_code", status

    run(body)


@pytest.mark.runtimes("background")
def test_large_stdout_comes_through_whole(server):
    size = 4 * 1024 * 1024
    code = (
        f"import random\nr = random.Random(7)\n"
        f"print(''.join(r.choice('abcdefghij\\u00e9\\n') for _ in range({size})), end='')\n"
    )
    import random

    r = random.Random(7)
    expected = "".join(r.choice("abcdefghij\u00e9\n") for _ in range(size))

    async def body():
        async with mcp_session(server.port, server.host) as s:
            result = ok(await s.call_tool("execute_code", {"code": code}))
            assert len(result.content) == 1
            got = result.content[0].text
            assert len(got) == size and got == expected

    run(body)


def test_token_from_blendwire_token(serve_factory):
    sp = serve_factory("background", env={"BLENDWIRE_TOKEN": "mcp-secret"})

    async def body():
        async with mcp_session(sp.port, env={"BLENDWIRE_TOKEN": "mcp-secret"}) as s:
            assert text_of(ok(await s.call_tool("execute_code", {"code": "print('in')"}))) == "in\n"
        async with mcp_session(sp.port) as s:
            message = failed(await s.call_tool("get_scene_info", {}))
            assert "unauthorized" in message and "mcp-secret" not in message, message

    run(body)
    # serve_factory's teardown has no token: shut it down here.
    with bwtest.Conn(sp.port) as c:
        bwtest.assert_success(c.request({"type": "server_shutdown", "token": "mcp-secret"}))
    assert sp.wait_exit() == 0


# ---- Blender down at start, then up, then restarted during a call --------------------------------


def test_blender_down_then_up_then_restarted_mid_call(serve_factory, tmp_path):
    port = bwtest.free_port()
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    runs = tmp_path / "runs"
    # Appends a line each time it runs, then blocks until released: the line count says how
    # many times execute_code reached Blender.
    code = f"open({str(runs)!r}, 'a').write('ran\\n')\n" + bwtest.blocking_code(started, release)

    async def body():
        async with mcp_session(port) as s:
            message = failed(await s.call_tool("get_scene_info", {}))
            assert f"blendwire serve --port {port}" in message, message

            first = await anyio.to_thread.run_sync(lambda: serve_factory("background", port=port))
            info = ok_json(await s.call_tool("get_scene_info", {}))  # same session, no restart
            assert "object_count" in info

            outcome = {}

            async def call():
                outcome["result"] = await s.call_tool("execute_code", {"code": code})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.to_thread.run_sync(lambda: bwtest.wait_file(started, 60))
                await anyio.to_thread.run_sync(first.kill)
            message = failed(outcome["result"])
            assert "lost during the call" in message and "NOT retried" in message, message

            await anyio.to_thread.run_sync(
                lambda: bwtest.wait_for(lambda: bwtest.port_is_bindable(port), 30, f"port {port} free")
            )
            await anyio.to_thread.run_sync(lambda: serve_factory("background", port=port))
            info = ok_json(await s.call_tool("get_scene_info", {}))
            assert "object_count" in info
            assert runs.read_text() == "ran\n"  # ran once, never resent
            with open(s.errlog_path) as f:
                log = f.read()
            assert f"connected to Blender at 127.0.0.1:{port}" in log, log

    run(body)


# ---- GUI: the screenshot as MCP image content ----------------------------------------------------


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


@pytest.mark.runtimes("gui")
def test_viewport_screenshot_is_image_content(server):
    async def body():
        async with mcp_session(server.port, server.host) as s:
            # The gui phase's screen (scripts/test) makes the 3D viewport wider than 1920 px, so a
            # 1920 px screenshot (about 2 MB of PNG as base64) must come through whole.
            area = ok(
                await s.call_tool(
                    "execute_code",
                    {
                        "code": (
                            "import bpy\nw = bpy.context.window_manager.windows[0]\n"
                            "print(max(a.width for a in w.screen.areas if a.type == 'VIEW_3D'))"
                        )
                    },
                )
            )
            assert int(area.content[0].text.strip()) > 1920, "the screen is too small for a 1920 px screenshot"
            for max_size in (1920, 200):
                result = ok(await s.call_tool("get_viewport_screenshot", {"max_size": max_size}))
                images = [c for c in result.content if c.type == "image"]
                assert len(images) == 1 and images[0].mime_type == "image/png", result
                width, height = png_size(base64.b64decode(images[0].data))
                assert max(width, height) == max_size, (width, height)
                label = [c.text for c in result.content if c.type == "text"]
                assert label and label[0].startswith(f"{width}x{height} png"), label

    run(body)

"""One `blendwire mcp` for several Blenders (issue 14): without a port it serves every running
`blendwire serve` (announced in the runtime directory, see test_instances.py), each tool call
picking one with its `blender` argument (a port, a pid or part of the .blend file's name); the only
one needs none; with several and none named, the call fails and names the candidates. Driven by
the official `mcp` client over stdio; each test has a runtime directory of its own.
"""

import contextlib
import json
import os
import tempfile

import anyio
import bwtest
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from test_mcp import failed, ok_json, run, text_of
from test_mcp_http import recorder


@pytest.fixture
def runtime_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


@contextlib.asynccontextmanager
async def mcp_all(runtime_dir, *extra, message_handler=None):
    """`blendwire mcp` with no port (every announced Blender), over stdio."""
    params = StdioServerParameters(
        command=bwtest.blendwire_command()[0],
        args=bwtest.blendwire_command()[1:] + ["mcp", *extra],
        env={"XDG_RUNTIME_DIR": str(runtime_dir), "PATH": os.environ.get("PATH", "")},
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, message_handler=message_handler) as session:
                await session.initialize()
                yield session


def count(session_result):
    return ok_json(session_result)["object_count"]


def objects(port):
    """The object count of the Blender at `port`, asked directly (not through MCP)."""
    return bwtest.assert_success(bwtest.request(port, "get_scene_info"))["object_count"]


@pytest.mark.background
@pytest.mark.bpy
@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
def test_one_mcp_serves_two_blenders_picked_per_call(serve_factory, runtime_dir):
    env = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    a = serve_factory("background", env=env)

    updates = []

    async def body_one():
        async with mcp_all(runtime_dir, message_handler=recorder(updates)) as s:
            # One Blender: no argument needed, for tools, resources and the scene subscription.
            listed = ok_json(await s.call_tool("list_blenders", {}))
            assert [b["port"] for b in listed["blenders"]] == [a.port], listed
            assert count(await s.call_tool("get_scene_info", {})) == objects(a.port)
            scene = json.loads((await s.read_resource("blender://scene")).contents[0].text)
            assert scene["object_count"] == objects(a.port), scene
            await s.subscribe_resource("blender://scene")
            text_of(await s.call_tool("execute_code", {"code": "import bpy\nbpy.ops.mesh.primitive_cube_add()"}))
            await anyio.to_thread.run_sync(lambda: bwtest.wait_for(lambda: updates, 30, "a scene update"))
            assert updates == ["blender://scene"], updates

    run(body_one)
    b = serve_factory("bpy", env=env)
    blend = str(runtime_dir.parent / "shot_b.blend")
    saved = bwtest.execute(b.port, f"import bpy\nbpy.ops.wm.save_as_mainfile(filepath={blend!r})")
    bwtest.assert_success(saved)

    async def body_two():
        async with mcp_all(runtime_dir) as s:
            listed = ok_json(await s.call_tool("list_blenders", {}))
            assert sorted(x["port"] for x in listed["blenders"]) == sorted([a.port, b.port]), listed
            # Two and none named: refused, naming both, nothing run.
            before = (objects(a.port), objects(b.port))
            text = failed(await s.call_tool("execute_code", {"code": "import bpy\nbpy.ops.mesh.primitive_cube_add()"}))
            assert str(a.port) in text and str(b.port) in text and "blender" in text, text
            assert (objects(a.port), objects(b.port)) == before
            # Each picked by port (a string or an integer), pid, or part of the file's name.
            code = {"code": "import bpy\nbpy.ops.mesh.primitive_cube_add()\nprint(bpy.app.background)"}
            printed = text_of(await s.call_tool("execute_code", {**code, "blender": a.port}))
            assert "True" in printed, printed  # a is the -b one
            assert count(await s.call_tool("get_scene_info", {"blender": str(a.port)})) == before[0] + 1
            assert count(await s.call_tool("get_scene_info", {"blender": "shot_B"})) == before[1]
            pid_b = next(x["pid"] for x in listed["blenders"] if x["port"] == b.port)
            printed = text_of(await s.call_tool("execute_code", {**code, "blender": str(pid_b)}))
            assert "True" in printed, printed  # the bpy module is background too
            assert count(await s.call_tool("get_scene_info", {"blender": b.port})) == before[1] + 1
            assert objects(a.port) == before[0] + 1  # a untouched by b's call
            # A name that matches nothing says what runs.
            text = failed(await s.call_tool("get_scene_info", {"blender": "no-such-file"}))
            assert "no-such-file" in text and str(a.port) in text, text

    run(body_two)


@pytest.mark.background
def test_a_fixed_port_refuses_another_blender(serve_factory, runtime_dir):
    a = serve_factory("background", env={"XDG_RUNTIME_DIR": str(runtime_dir)})

    async def body():
        async with mcp_all(runtime_dir, "--blender-port", str(a.port)) as s:
            assert ok_json(await s.call_tool("get_scene_info", {"blender": a.port}))["name"]
            text = failed(await s.call_tool("get_scene_info", {"blender": "1"}))
            assert "--blender-port" in text and f"127.0.0.1:{a.port}" in text, text
            assert json.loads(text_of(await s.call_tool("list_blenders", {})))["mode"] == "one"

    run(body)

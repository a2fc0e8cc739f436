"""blender-mcp's command table (`blendwire.handlers.blender_mcp.dispatch`), inside Blender.

Without the add-on: blendwire's own answers in the add-on's result shapes (core commands, status and
version commands, unknown commands). With each real add-on file, the bundled `addon.py` of
`blender-mcp==1.9.4` (.venv-blender-mcp) and `mcp-for-blender==2.2.4` (.venv-mcp-for-blender),
loaded by path: every command that needs no internet answers without an error, execute_code goes
through blendwire's runner, and hosting started none of the add-on's threads, timers or sockets.
"""

import inspect
import json
import os
import subprocess
import sys

import bpy
import pytest
from blender_util import socket_count, thread_count
from blendwire.handlers import blender_mcp
from blendwire.handlers import code as code_runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENVS = {"blender-mcp==1.9.4": ".venv-blender-mcp", "mcp-for-blender==2.2.4": ".venv-mcp-for-blender"}
PROTOCOL = {"blender-mcp==1.9.4": 7, "mcp-for-blender==2.2.4": 15}
STATUS_COMMANDS = [
    "get_polyhaven_status",
    "get_hyper3d_status",
    "get_sketchfab_status",
    "get_polypizza_status",
    "get_hunyuan3d_status",
    "get_meshy_status",
    "get_tripo_status",
]
OBJ = "BMCP_Test_Cube"


def call(command, params=None):
    response = blender_mcp.dispatch(command, {} if params is None else params)
    json.dumps(response)  # goes over the wire as is
    return response


def ok(command, params=None):
    response = call(command, params)
    assert response.get("status") == "success", f"{command}: {response}"
    assert set(response) == {"status", "result"}
    return response["result"]


@pytest.fixture
def cube():
    mesh = bpy.data.meshes.new(OBJ)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    obj = bpy.data.objects.new(OBJ, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = (1.234, 2.0, 3.0)
    bpy.context.view_layer.update()  # matrix_world
    yield obj
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)


@pytest.fixture
def runner_calls(monkeypatch):
    """Every code run goes through code.run_code (blendwire's runner)."""
    seen = []
    real = code_runner.run_code

    def spy(code):
        seen.append(code)
        return real(code)

    monkeypatch.setattr(code_runner, "run_code", spy)
    return seen


# ---- without the add-on -----------------------------------------------------------------------


@pytest.fixture
def builtin():
    blender_mcp.unload_addon()
    assert blender_mcp.hosted() is None
    yield
    blender_mcp.unload_addon()


def test_scene_info_shape(builtin, cube):
    result = ok("get_scene_info")
    assert set(result) == {"name", "object_count", "objects", "materials_count"}
    assert result["name"] == bpy.context.scene.name
    assert result["object_count"] == len(bpy.context.scene.objects)
    assert len(result["objects"]) == min(10, result["object_count"])
    for entry in result["objects"]:
        assert set(entry) == {"name", "type", "location"}
    mine = [o for o in result["objects"] if o["name"] == OBJ]
    if mine:  # among the first ten
        assert mine[0] == {"name": OBJ, "type": "MESH", "location": [1.23, 2.0, 3.0]}


def test_object_info_shape(builtin, cube):
    result = ok("get_object_info", {"name": OBJ})
    assert list(result) == [
        "name",
        "type",
        "location",
        "rotation",
        "scale",
        "visible",
        "materials",
        "world_bounding_box",
        "mesh",
    ]
    assert result["type"] == "MESH" and result["materials"] == []
    assert result["location"] == pytest.approx([1.234, 2.0, 3.0])
    assert result["world_bounding_box"] == [pytest.approx([1.234, 2.0, 3.0]), pytest.approx([2.234, 3.0, 3.0])]
    assert result["mesh"] == {"vertices": 4, "edges": 4, "polygons": 1}
    assert call("get_object_info", {"name": "nope"}) == {"status": "error", "message": "Object not found: nope"}
    missing = call("get_object_info")
    assert missing["status"] == "error"
    assert missing["message"].endswith("get_object_info() missing 1 required positional argument: 'name'")


def test_viewport_screenshot_shape(builtin, tmp_path):
    assert ok("get_viewport_screenshot") == {"error": "No filepath provided"}
    result = ok("get_viewport_screenshot", {"max_size": 400, "filepath": str(tmp_path / "s.png"), "format": "png"})
    if bpy.app.background:
        assert set(result) == {"error"} and "background" in result["error"]
    else:
        assert set(result) == {"success", "width", "height", "filepath", "method"}


def test_execute_code(builtin, runner_calls):
    assert ok("execute_code", {"code": "print('hi', 6 * 7)"}) == {"executed": True, "result": "hi 42\n"}
    failed = call("execute_code", {"code": "x = 1\n1 / 0"})
    assert failed["status"] == "error"
    detail = json.loads(failed["message"])
    assert set(detail) == {"exception_type", "message", "traceback"}
    assert detail["exception_type"] == "ZeroDivisionError" and detail["message"] == "division by zero"
    assert "line 2" in detail["traceback"]
    assert runner_calls == ["print('hi', 6 * 7)", "x = 1\n1 / 0"]
    bad = call("execute_code", {"code": "1", "mode": "x"})
    assert bad["status"] == "error" and "unexpected keyword argument 'mode'" in bad["message"]


@pytest.mark.parametrize("command", STATUS_COMMANDS)
def test_status_commands_say_what_to_install(builtin, command):
    result = ok(command)
    assert set(result) == {"enabled", "message"}
    assert result["enabled"] is False
    assert "blender-mcp add-on" in result["message"] and "--blender-mcp-addon" in result["message"]


def test_addon_info_and_telemetry(builtin):
    info = ok("get_addon_info")
    # Both pinned MCP servers take the add-on as up to date (1.9.4 expects >= 7, 2.2.4 >= 15).
    assert info["protocol_version"] >= max(PROTOCOL.values())
    assert {"name", "addon_version", "capabilities", "blender_version", "premium_generators"} <= set(info)
    assert all(isinstance(n, int) for n in info["addon_version"])
    assert {"get_scene_info", "get_object_info", "get_viewport_screenshot", "execute_code"} <= set(info["capabilities"])
    assert info["blender_version"] == bpy.app.version_string
    assert ok("get_telemetry_consent") == {"consent": False}
    assert ok("ping") == {"pong": True}
    assert ok("list_scene_items", {"query": "", "limit": 5})["total"] >= 0


def test_unknown_command_and_bad_params(builtin):
    assert call("get_world_state_snapshot") == {
        "status": "error",
        "message": "Unknown command type: get_world_state_snapshot",
    }
    assert call("nope") == {"status": "error", "message": "Unknown command type: nope"}
    assert blender_mcp.dispatch("get_scene_info", None)["status"] == "success"
    assert blender_mcp.dispatch("get_scene_info", [1])["status"] == "error"


# ---- with the real add-on files -----------------------------------------------------------------


def addon_file(package):
    python = os.path.join(ROOT, VENVS[package], "bin", "python")
    if not os.path.exists(python):
        pytest.fail(f"{VENVS[package]} is missing: run ./scripts/setup")
    code = (
        "import importlib.util, os; s = importlib.util.find_spec('blender_mcp'); "
        "print(os.path.join(s.submodule_search_locations[0], 'bundled', 'addon.py'))"
    )
    path = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert os.path.isfile(path), path
    return path


def module_functions(module):
    return [v for v in vars(module).values() if inspect.isfunction(v) and v.__module__ == module.__name__]


@pytest.fixture(params=sorted(VENVS))
def hosted(request):
    package = request.param
    path = addon_file(package)
    blender_mcp.unload_addon()
    threads, sockets = thread_count(), socket_count()
    info = blender_mcp.load_addon(path)
    module = sys.modules[info["module"]]
    yield package, info, module, (threads, sockets)
    blender_mcp.unload_addon()
    assert not hasattr(bpy.types.Scene, "blendermcp_port"), "unregister() ran"
    assert info["module"] not in sys.modules


def test_hosting_starts_no_transport(hosted):
    package, info, module, (threads, sockets) = hosted
    assert info["source"] == "path" and info["protocol_version"] == PROTOCOL[package]
    assert any("_blendermcp_ensure_server_running" in c for c in info["cancelled"]), info["cancelled"]
    assert hasattr(bpy.types.Scene, "blendermcp_port"), "register() ran"
    assert getattr(bpy.types, "blendermcp_server", None) is None
    for fn in module_functions(module):
        assert not bpy.app.timers.is_registered(fn), fn.__name__
    for name in dir(bpy.app.handlers):
        handlers = getattr(bpy.app.handlers, name)
        if isinstance(handlers, list):
            assert not [h for h in handlers if getattr(h, "__module__", None) == module.__name__], name
    ok("get_scene_info")
    assert thread_count() == threads and socket_count() == sockets


# Every command of the add-ons that needs no internet, with params (the integrations' commands are
# registered only when switched on in the sidebar, and then all go to the network).
NO_INTERNET = {
    "ping": {},
    "get_scene_info": {},
    "get_world_state_snapshot": {},
    "get_addon_info": {},
    "get_object_info": {"name": OBJ},
    "execute_code": {"code": "print(1)"},
    "describe_node_type": {"bl_idname": "ShaderNodeBsdfPrincipled"},
    "bpy_api_lookup": {"query": "bpy.types.Object"},
    "drain_human_activity": {},
    "get_telemetry_consent": {},
    "get_polyhaven_status": {},
    "get_hyper3d_status": {},
    "get_sketchfab_status": {},
    "get_polypizza_status": {},
    "get_hunyuan3d_status": {},
}
NO_INTERNET_2X = {"list_scene_items": {"query": "BMCP"}, "get_meshy_status": {}, "get_tripo_status": {}}
# Answer with an error inside the result: set_telemetry_consent ("Could not read addon preferences":
# a file loaded by blendwire has no add-on preferences, so consent stays off), the screenshot in
# background mode; export_scene needs the glTF exporter.


def test_every_offline_command_answers(hosted, cube, tmp_path):
    package, info, module, _ = hosted
    table = dict(NO_INTERNET, **(NO_INTERNET_2X if package.startswith("mcp-for-blender") else {}))
    failures = {}
    for command, params in table.items():
        response = call(command, params)
        result = response.get("result")
        if response.get("status") != "success" or (isinstance(result, dict) and "error" in result):
            failures[command] = response
    assert not failures
    addon_info = ok("get_addon_info")
    assert addon_info["protocol_version"] == PROTOCOL[package]
    assert ok("get_object_info", {"name": OBJ})["mesh"] == {"vertices": 4, "edges": 4, "polygons": 1}
    if bpy.app.background:
        shot = ok("get_viewport_screenshot", {"filepath": str(tmp_path / "s.png")})
        assert "error" in shot
    assert call("nope") == {"status": "error", "message": "Unknown command type: nope"}
    # Off by default: the add-on's own wording says how to switch them on.
    assert ok("get_polyhaven_status")["enabled"] is False
    assert call("search_polyhaven_assets")["message"] == "Unknown command type: search_polyhaven_assets"


def test_hosted_execute_code_uses_blendwires_runner(hosted, runner_calls):
    assert ok("execute_code", {"code": "print('hosted', 6 * 7)"}) == {"executed": True, "result": "hosted 42\n"}
    failed = call("execute_code", {"code": "raise KeyError('k')"})
    assert failed["status"] == "error"
    assert json.loads(failed["message"])["exception_type"] == "KeyError"
    assert runner_calls == ["print('hosted', 6 * 7)", "raise KeyError('k')"]


def test_bundled_addon_is_found_without_importing_its_server(monkeypatch):
    path = addon_file("mcp-for-blender==2.2.4")
    site = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    monkeypatch.syspath_prepend(site)
    monkeypatch.delitem(sys.modules, "blender_mcp", raising=False)
    try:
        assert blender_mcp.find_bundled_addon() == path
        assert "blender_mcp" not in sys.modules  # the MCP server package (and its deps) not imported
        blender_mcp.reset()  # look again at the next request
        assert ok("get_addon_info")["protocol_version"] == PROTOCOL["mcp-for-blender==2.2.4"]
        assert blender_mcp.hosted()["source"] == "bundled"
    finally:
        blender_mcp.unload_addon()
    assert ok("get_addon_info")["name"] == "blendwire"

"""The real blender-mcp MCP servers against `blendwire serve --mcp-addon-port`: `blender-mcp==1.9.4`
(.venv-blender-mcp) and `mcp-for-blender==2.2.4` (.venv-mcp-for-blender), each started over stdio by
the official `mcp` client with BLENDER_HOST/BLENDER_PORT pointing at the listener.

- With their own bundled add-on hosted (`--blender-mcp-addon <venv>/blender_mcp/bundled/addon.py`):
  their tools are listed, and every tool that needs no internet is called and answers without an
  error text (the lists below say which tools need the internet and which a UI).
- Without the add-on: blendwire answers; the status/integration tools say the integration is off
  and what to install, and the core tools (scene, object, code, screenshot in the GUI) work.

Every runtime (`server` is parameterised by conftest: background, bpy, gui); the screenshot tools
only in the GUI. Telemetry is off and HOME points into a temporary directory, so the servers write
nothing outside it and send nothing anywhere. Every wait polls a condition with a deadline.
"""

import contextlib
import json
import os
import pathlib
import re
import tempfile

import anyio
import bwtest
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

VENVS = {"blender-mcp": ROOT / ".venv-blender-mcp", "mcp-for-blender": ROOT / ".venv-mcp-for-blender"}
CODE = "import bpy\nprint('objects', len(bpy.data.objects))"

# ---- blender-mcp 1.9.4: 31 tools ---------------------------------------------------------------------
# Called, and must answer without an error text (args: what an agent would send).
CALLS_194 = {
    "get_addon_status": {},
    "get_scene_info": {"user_prompt": "what is in the scene"},
    "get_object_info": {"object_name": "Cube"},
    "execute_blender_code": {"code": CODE},
    "describe_node_type": {"bl_idname": "ShaderNodeBsdfPrincipled"},
    "bpy_api_lookup": {"query": "bpy.types.Object"},
    "get_polyhaven_status": {},
    "get_hyper3d_status": {},
    "get_sketchfab_status": {},
    "get_polypizza_status": {},
    "get_hunyuan3d_status": {},
    "export_scene": {"filepath": "{tmp}/scene.glb"},
    "record_trajectory_feedback": {"feedback": "accept"},
    "disable_telemetry": {},
}
GUI_194 = {"get_viewport_screenshot": {"max_size": 400}}
# Not called: they reach Poly Haven, Sketchfab, Poly Pizza, Hyper3D or Hunyuan3D (set_texture
# applies a texture downloaded from Poly Haven before).
INTERNET_194 = {
    "get_polyhaven_categories",
    "search_polyhaven_assets",
    "download_polyhaven_asset",
    "set_texture",
    "search_sketchfab_models",
    "get_sketchfab_model_preview",
    "download_sketchfab_model",
    "search_polypizza_models",
    "download_polypizza_model",
    "generate_hyper3d_model_via_text",
    "generate_hyper3d_model_via_images",
    "poll_rodin_job_status",
    "import_generated_asset",
    "generate_hunyuan3d_model",
    "poll_hunyuan_job_status",
    "import_generated_asset_hunyuan",
}

# ---- mcp-for-blender 2.2.4: 14 tools, 9 listed to a plain client -------------------------------------
CALLS_224 = {
    "get_addon_status": {},
    "get_scene_info": {"user_prompt": "what is in the scene"},
    "execute_blender_code": {"code": CODE},
    "record_trajectory_feedback": {"feedback": "accept"},
    "disable_telemetry": {},
    # Its Viewport app's tools (`visibility: ["app"]`): listed only to MCP Apps hosts, which call
    # them; callable by any client.
    "search_mentions": {"query": "Cu"},
    "viewport_latest": {},
}
# The viewport tools need a UI (a window to grab); viewport_pick clicks on the capture just taken.
GUI_224 = {
    "look": {"max_size": 400},
    "viewport_capture": {"max_size": 400},
    "open_viewport": {},
    "viewport_pick": {"seq": 1, "x": 0.5, "y": 0.5},
}
INTERNET_224 = {"generate_3d", "search_assets", "import_asset"}
APP_ONLY_224 = {"search_mentions", "viewport_latest", "viewport_capture", "open_viewport", "viewport_pick"}

TOOLS = {
    "blender-mcp": (CALLS_194, GUI_194, INTERNET_194),
    "mcp-for-blender": (CALLS_224, GUI_224, INTERNET_224),
}
# What a plain client (no MCP Apps extension: Claude Desktop, Cursor, the `mcp` client) is listed.
LISTED = {
    "blender-mcp": set(CALLS_194) | set(GUI_194) | INTERNET_194,
    "mcp-for-blender": (set(CALLS_224) | set(GUI_224) | INTERNET_224) - APP_ONLY_224,
}


def server_exe(package):
    return VENVS[package] / "bin" / package


def bundled_addon(package):
    found = sorted(VENVS[package].glob("lib/python*/site-packages/blender_mcp/bundled/addon.py"))
    return str(found[0]) if found else None


def need(package):
    if not server_exe(package).exists() or bundled_addon(package) is None:
        pytest.skip(f"{package} is not installed (scripts/setup makes {VENVS[package].name})")


@pytest.fixture(scope="module")
def server(request):
    """`blendwire serve --port 0 --mcp-addon-port 0` for one runtime, without the add-on (none is
    enabled or importable in its Blender); `.addon_port` is the second listener's port."""
    sp = bwtest.start_serve(request.param, extra=["--mcp-addon-port", "0"])
    sp.addon_port = addon_port(sp)
    yield sp
    sp.shutdown()


def addon_port(sp):
    assert sp.ready.addon_port, sp.output()
    return sp.ready.addon_port


@contextlib.asynccontextmanager
async def agent(package, port, home):
    """An initialized ClientSession with the package's MCP server (its own console script)."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {
        "BLENDER_HOST": bwtest.HOST,
        "BLENDER_PORT": str(port),
        "PATH": os.environ.get("PATH", ""),
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, "config"),
        "XDG_DATA_HOME": os.path.join(home, "data"),
        "DISABLE_TELEMETRY": "1",
    }
    with tempfile.TemporaryFile("w+") as errlog:
        async with stdio_client(StdioServerParameters(command=str(server_exe(package)), env=env), errlog=errlog) as (
            read,
            write,
        ):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def text_of(result):
    return "".join(c.text if c.type == "text" else f"<{c.type}>" for c in result.content)


ERROR_TEXT = re.compile(r"^\s*(Error|Could not|Couldn't|Failed|Screenshot failed)|\"error\"\s*:|Unknown command type")


def is_error(result):
    return bool(result.is_error) or bool(ERROR_TEXT.search(text_of(result)))


def call_all(package, port, calls, home):
    """List the tools, call each of `calls` in order; {name: (is_error, text, result)} and the tool names."""
    results, names = {}, set()

    async def body():
        async with agent(package, port, home) as session:
            names.update(t.name for t in (await session.list_tools()).tools)
            for name, args in calls.items():
                args = {k: (v.format(tmp=home) if isinstance(v, str) else v) for k, v in args.items()}
                with anyio.fail_after(120):
                    r = await session.call_tool(name, args)
                results[name] = (is_error(r), text_of(r), r)

    anyio.run(body)
    return results, names


def mentions(results):
    """The names search_mentions found (resource links in its structured content)."""
    return [item["name"] for item in results["search_mentions"][2].structured_content["items"]]


def assert_no_ui_screenshot(package, port, tool, home):
    """Without a UI (-b, the bpy module) the screenshot tool fails saying why and what to run."""
    results, _ = call_all(package, port, {tool: {"max_size": 400}}, home)
    failed, text, _ = results[tool]
    assert failed and "not available in background mode" in text and "blendwire serve --gui" in text, text


def calls_for(package, runtime):
    calls, gui, _ = TOOLS[package]
    return {**calls, **(gui if runtime == "gui" else {})}


# ---- with the add-on hosted -------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["blender-mcp", "mcp-for-blender"])
def test_every_offline_tool_with_the_bundled_addon_hosted(server, serve_factory, package, tmp_path):
    need(package)
    # The flag for one, its variable for the other.
    if package == "blender-mcp":
        sp = serve_factory(
            server.runtime, extra=["--mcp-addon-port", "0", "--blender-mcp-addon", bundled_addon(package)]
        )
    else:
        sp = serve_factory(
            server.runtime, extra=["--mcp-addon-port", "0"], env={"BLENDWIRE_BLENDER_MCP_ADDON": bundled_addon(package)}
        )
    port = addon_port(sp)
    results, names = call_all(package, port, calls_for(package, server.runtime), str(tmp_path))
    # The lists above are the whole tool set: a new tool must be sorted into one of them.
    assert names == LISTED[package], sorted(names ^ LISTED[package])
    failed = {k: v[1][:500] for k, v in results.items() if v[0]}
    assert not failed, failed
    # What they answered is the add-on's: the real scene, the code's output, the add-on's version.
    status = json.loads(results["get_addon_status"][1].split("\n\n")[0])
    assert status["up_to_date"] is True and "describe_node_type" in status["capabilities"], status
    assert "objects 3" in results["execute_blender_code"][1], results["execute_blender_code"][1]
    assert "Cube" in results["get_scene_info"][1], results["get_scene_info"][1]
    if package == "mcp-for-blender":
        assert mentions(results) == ["Cube"], results["search_mentions"][2]
    shot = "get_viewport_screenshot" if package == "blender-mcp" else "viewport_capture"
    if server.runtime == "gui":
        assert any(c.type == "image" for c in results[shot][2].content), results[shot][1]
    else:
        assert_no_ui_screenshot(package, port, shot, str(tmp_path))


# ---- without the add-on -----------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["blender-mcp", "mcp-for-blender"])
def test_without_the_addon_status_tools_say_what_to_install_and_core_tools_work(server, package, tmp_path):
    need(package)
    port = server.addon_port
    if package == "blender-mcp":
        status_tools = [
            "get_polyhaven_status",
            "get_hyper3d_status",
            "get_sketchfab_status",
            "get_polypizza_status",
            "get_hunyuan3d_status",
        ]
        core = {
            "get_scene_info": {"user_prompt": "what is in the scene"},
            "get_object_info": {"object_name": "Cube"},
            "execute_blender_code": {"code": CODE},
        }
        shot = "get_viewport_screenshot"
    else:
        status_tools = []
        core = {
            "get_scene_info": {"user_prompt": "what is in the scene"},
            "execute_blender_code": {"code": CODE},
            "search_mentions": {"query": "Cu"},
        }
        shot = "viewport_capture"
    calls = {"get_addon_status": {}, "disable_telemetry": {}, **dict.fromkeys(status_tools, {}), **core}
    if server.runtime == "gui":
        calls[shot] = {"max_size": 400}
    results, _ = call_all(package, port, calls, str(tmp_path))
    failed = {k: v[1][:500] for k, v in results.items() if v[0]}
    assert not failed, failed
    for name in status_tools:
        text = results[name][1]
        assert "not available" in text and "--blender-mcp-addon" in text and "mcp-for-blender" in text, (name, text)
    # blendwire's get_addon_info: the core commands only; 2.2.4 shows every integration off.
    status = json.loads(results["get_addon_status"][1].split("\n\n")[0])
    assert status["up_to_date"] is True and "get_scene_info" in status["capabilities"], status
    assert "describe_node_type" not in status["capabilities"], status
    if package == "mcp-for-blender":
        assert set(status["libraries"].values()) == {"off"}, status
        assert all(v.startswith("off") for v in status["generators"].values()), status
        assert mentions(results) == ["Cube"], results["search_mentions"][2]
    assert "objects 3" in results["execute_blender_code"][1], results["execute_blender_code"][1]
    assert "Cube" in results["get_scene_info"][1], results["get_scene_info"][1]
    if server.runtime == "gui":
        assert any(c.type == "image" for c in results[shot][2].content), results[shot][1]
    else:
        assert_no_ui_screenshot(package, port, shot, str(tmp_path))


# ---- the flag's checks, before Blender starts --------------------------------------------------------


def run_cli(*args, env=None, drop=(), timeout=60):
    import subprocess

    full = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        bwtest.blendwire_command() + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**full, **(env or {})},
    )


def test_the_addon_path_is_checked_before_blender_starts(tmp_path):
    missing = run_cli("serve", "--mcp-addon-port", "0", "--blender-mcp-addon", str(tmp_path / "nope.py"))
    assert missing.returncode == 1 and "--blender-mcp-addon" in missing.stderr and "no such file" in missing.stderr
    other = tmp_path / "addon.py"
    other.write_text("def register():\n    pass\n")
    wrong = run_cli("serve", "--mcp-addon-port", "0", env={"BLENDWIRE_BLENDER_MCP_ADDON": str(other)})
    assert wrong.returncode == 1 and "$BLENDWIRE_BLENDER_MCP_ADDON" in wrong.stderr, wrong.stderr
    assert "does not look like the blender-mcp add-on" in wrong.stderr, wrong.stderr
    real = bundled_addon("blender-mcp") or bundled_addon("mcp-for-blender")
    if real:
        alone = run_cli("serve", "--port", "0", "--blender-mcp-addon", real, drop=["BLENDWIRE_MCP_ADDON_PORT"])
        assert alone.returncode == 1 and "needs --mcp-addon-port" in alone.stderr, alone.stderr
    assert "BLENDWIRE_BLENDER_MCP_ADDON" in run_cli("serve", "--help").stdout


def test_an_addon_whose_register_fails_stops_serve_with_the_reason(tmp_path):
    broken = tmp_path / "addon.py"
    broken.write_text(
        "class BlenderMCPServer:\n    def execute_command(self, command):\n        return {}\n\n\n"
        "def register():\n    raise RuntimeError('boom')\n"
    )
    r = run_cli("serve", "--port", "0", "--mcp-addon-port", "0", "--blender-mcp-addon", str(broken), timeout=180)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "could not host the blender-mcp add-on" in r.stderr and "RuntimeError: boom" in r.stderr, r.stderr[-2000:]

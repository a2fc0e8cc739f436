"""One undo step per job that may change data, in the real UI; `undo_last` (issue 22, point 1).

GUI (Debian's Blender 3.4 under Xvfb): a user-like step (an operator run the way the UI runs it,
pushing its own step), then destructive `execute_code` jobs from the unchanged blender-remote
client, `blendwire mcp`, blender-mcp's MCP server and Blender Lab's protocol (both through
`--mcp-addon-port`), also while the user is in edit mode. `undo_last` (the
command, the MCP tool, `blendwire undo`) and a real Ctrl+Z (`bpy.ops.ed.undo()` in the window
context) take back the agent's job and nothing of the user's; a read pushes no step; a job that
failed halfway is one step.

The user's side runs outside blendwire's jobs (a job would push a step of its own): a timer inside
Blender, started by the first job, does what the test asks in a request file (an operator, Ctrl+Z)
and answers in a file with the objects and the undo stack as `WindowManager.print_undo_steps()`
prints it.

`blender -b` and the bpy module have no undo stack: `undo_last` says so and names restore_checkpoint.
"""

import json
import os
import subprocess

import bwtest
import pytest
import test_blender_mcp_servers as blender_mcp
import test_mcp_addon_port as blender_lab
from test_mcp import failed, mcp_session, ok, ok_json, run

blender_remote = pytest.importorskip("blender_remote")
from blender_remote.exceptions import BlenderCommandError  # noqa: E402

JOB_STEP = "blendwire: execute_code (bld_remote)"

# The user's side, inside Blender: a persistent timer that carries out one request file at a time.
USER = r"""
import bpy, ctypes, json, os, sys, tempfile
REQ, RES = {req!r}, {res!r}

def _steps():
    libc = ctypes.CDLL(None)
    sys.stdout.flush(); libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        try:
            bpy.context.window_manager.print_undo_steps()
            libc.fflush(None)
        finally:
            os.dup2(saved, 1); os.close(saved)
        f.seek(0)
        lines = f.read().decode().splitlines()
    return [[l[1] == '*', l[l.index("name='") + 6:l.rindex("'")]] for l in lines if "name='" in l and l[4] != 'S']

def _user():
    if not os.path.exists(REQ):
        return 0.01
    with open(REQ) as f:
        action = f.read()
    os.remove(REQ)
    with bpy.context.temp_override(window=bpy.context.window_manager.windows[0]):
        if action == 'add_monkey':  # as the UI runs an operator: with its undo step
            result = bpy.ops.mesh.primitive_monkey_add('EXEC_DEFAULT', True)
        elif action == 'edit_mode':
            result = bpy.ops.object.mode_set('EXEC_DEFAULT', True, mode='EDIT')
        elif action == 'ctrl_z':
            result = bpy.ops.ed.undo()
        else:
            result = set()
    out = {{"result": sorted(result), "objects": sorted(o.name for o in bpy.data.objects), "steps": _steps(),
            "mode": bpy.context.mode}}
    with open(RES + '.tmp', 'w') as f:
        json.dump(out, f)
    os.replace(RES + '.tmp', RES)
    return 0.01

bpy.app.timers.register(_user, first_interval=0.0, persistent=True)
# Under Xvfb's software GL the 3D viewport redraws for seconds after each change of the scene, and
# the jobs wait for it: this window shows none (the undo stack is the same with or without).
for area in bpy.context.window_manager.windows[0].screen.areas:
    if area.type == 'VIEW_3D':
        area.type = 'INFO'
"""

FACTORY = ["Camera", "Cube", "Light"]
DELETE_ALL = "for o in list(bpy.data.objects):\n    bpy.data.objects.remove(o)\n"


class User:
    """The user at Blender's UI (the timer above), asked through files."""

    def __init__(self, folder):
        self.req, self.res = os.path.join(folder, "user.req"), os.path.join(folder, "user.res")

    def code(self):
        return USER.format(req=self.req, res=self.res)

    def do(self, action):
        with open(self.req + ".tmp", "w") as f:
            f.write(action)
        os.replace(self.req + ".tmp", self.req)
        bwtest.wait_file(self.res, timeout=30)
        with open(self.res) as f:
            out = json.load(f)
        os.remove(self.res)
        return out


@pytest.fixture(scope="module")
def server(request):
    """`blendwire serve` for one runtime, with the MCP add-on listener (`.addon_port`) for blender-mcp's
    MCP server too."""
    sp = bwtest.start_serve(request.param, extra=["--mcp-addon-port", "0"])
    sp.addon_port = sp.ready.addon_port
    assert sp.addon_port, sp.output()
    yield sp
    sp.shutdown()


def _cli_undo(server):
    return subprocess.run(
        [*bwtest.blendwire_command(), "undo", "--port", str(server.port), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _top(steps):
    return next(name for active, name in steps if active)


def _objects(server):
    info = bwtest.assert_success(bwtest.request(server.port, "get_scene_info"))
    return sorted(o["name"] for o in info["objects"])


@pytest.mark.runtimes("gui")
def test_undo_last_and_ctrl_z_take_back_the_agents_job_and_nothing_of_the_users(server, tmp_path):
    client = blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=60)
    user = User(str(tmp_path))
    assert client.execute_python(user.code()) == ""
    start = user.do("look")
    assert start["objects"] == FACTORY and _top(start["steps"]) == JOB_STEP, start  # the setup job: one step

    mine = user.do("add_monkey")
    assert mine["result"] == ["FINISHED"] and mine["objects"] == sorted([*FACTORY, "Suzanne"]), mine
    users_step = _top(mine["steps"])
    assert users_step != JOB_STEP and len(mine["steps"]) == len(start["steps"]) + 1, mine

    # The agent deletes everything: exactly one step, named after the job.
    assert client.execute_python(DELETE_ALL) == ""
    assert _objects(server) == []  # a read, between the job and undo_last
    after = user.do("look")
    assert after["steps"] == [[False, n] for _, n in mine["steps"]] + [[True, JOB_STEP]], after

    # (a) undo_last takes back the agent's job, and the user's object stays.
    undone = bwtest.assert_success(bwtest.request(server.port, "undo_last"))
    assert undone == {"undone": JOB_STEP, "now_at": users_step}, undone
    assert _objects(server) == sorted([*FACTORY, "Suzanne"])
    # The next step is the user's: refused, nothing taken back.
    refused = bwtest.assert_error(bwtest.request(server.port, "undo_last"), "not_blendwires_step")
    assert repr(users_step) in refused["message"], refused
    assert _objects(server) == sorted([*FACTORY, "Suzanne"])

    # (c) reads push no step.
    bwtest.assert_success(bwtest.request(server.port, "get_object_info", {"name": "Suzanne"}))
    bwtest.assert_success(bwtest.request(server.port, "get_persist_data", {"key": "nothing"}))
    # ... and neither do the persist commands (blendwire's own store, none of Blender's data).
    bwtest.assert_success(bwtest.request(server.port, "put_persist_data", {"key": "k", "data": 1}))
    bwtest.assert_success(bwtest.request(server.port, "remove_persist_data", {"key": "k"}))
    looked = user.do("look")
    assert looked["steps"] == mine["steps"] + [[False, JOB_STEP]], looked  # the job's step waits as a redo

    # (b) another agent job, then a real Ctrl+Z: only that job is taken back.
    assert client.execute_python("bpy.data.objects.remove(bpy.data.objects['Suzanne'])\n" + DELETE_ALL) == ""
    assert _objects(server) == []
    ctrl_z = user.do("ctrl_z")
    assert ctrl_z["result"] == ["FINISHED"] and ctrl_z["objects"] == sorted([*FACTORY, "Suzanne"]), ctrl_z
    assert _top(ctrl_z["steps"]) == users_step, ctrl_z

    # A job that fails halfway changed data too: still its one step, and undo_last takes it back.
    with pytest.raises(BlenderCommandError, match="halfway"):
        client.execute_python("bpy.data.objects.remove(bpy.data.objects['Cube'])\nraise RuntimeError('halfway')")
    assert "Cube" not in _objects(server)
    failed = user.do("look")
    assert _top(failed["steps"]) == JOB_STEP and len(failed["steps"]) == len(mine["steps"]) + 1, failed

    # ... this time through `blendwire mcp`'s tool; then `blendwire undo` finds the user's step.
    async def mcp_undo():
        async with mcp_session(server.port) as s:
            return ok_json(await s.call_tool("undo_last", {}))

    assert run(mcp_undo) == {"undone": JOB_STEP, "now_at": users_step}
    assert _objects(server) == sorted([*FACTORY, "Suzanne"])
    cli = _cli_undo(server)
    assert cli.returncode == 1 and "not_blendwires_step" in cli.stderr and repr(users_step) in cli.stderr, cli

    # The MCP servers' execute_code: `blendwire mcp`'s, taken back by a real Ctrl+Z; blender-mcp's
    # (through --mcp-addon-port), taken back by `blendwire undo`.
    async def mcp_delete_all():
        async with mcp_session(server.port) as s:
            ok(await s.call_tool("execute_code", {"code": DELETE_ALL}))

    run(mcp_delete_all)
    assert _objects(server) == []
    assert user.do("look")["steps"] == [[False, n] for _, n in mine["steps"]] + [[True, JOB_STEP]]
    ctrl_z = user.do("ctrl_z")
    assert ctrl_z["objects"] == sorted([*FACTORY, "Suzanne"]) and _top(ctrl_z["steps"]) == users_step, ctrl_z

    blender_mcp.need("blender-mcp")

    async def blender_mcp_delete_all():
        async with blender_mcp.agent("blender-mcp", server.addon_port, str(tmp_path)) as s:
            r = await s.call_tool("execute_blender_code", {"code": DELETE_ALL})
            assert not blender_mcp.is_error(r), blender_mcp.text_of(r)

    run(blender_mcp_delete_all)
    assert _objects(server) == []
    blender_mcp_step = "blendwire: execute_code (blender_mcp)"
    assert user.do("look")["steps"] == [[False, n] for _, n in mine["steps"]] + [[True, blender_mcp_step]]
    cli = _cli_undo(server)
    assert cli.returncode == 0 and json.loads(cli.stdout) == {"undone": blender_mcp_step, "now_at": users_step}, cli
    assert _objects(server) == sorted([*FACTORY, "Suzanne"])

    # The user works in edit mode (its steps are the mesh's own): a job that deletes objects is still
    # one step that undo_last takes back, and the user stays in edit mode.
    editing = user.do("edit_mode")
    assert editing["result"] == ["FINISHED"] and editing["mode"] == "EDIT_MESH", editing
    assert client.execute_python("bpy.data.objects.remove(bpy.data.objects['Camera'])") == ""
    assert _top(user.do("look")["steps"]) == JOB_STEP
    undone = bwtest.assert_success(bwtest.request(server.port, "undo_last"))
    assert undone == {"undone": JOB_STEP, "now_at": _top(editing["steps"])}, undone
    back = user.do("look")
    assert back["objects"] == sorted([*FACTORY, "Suzanne"]) and back["mode"] == "EDIT_MESH", back

    # Blender Lab's protocol on the same listener: its `execute` is one step too.
    answer = blender_lab.lab(server.addon_port, "import bpy\nbpy.data.objects.remove(bpy.data.objects['Light'])")
    assert answer["status"] == "ok", answer
    lab_step = "blendwire: execute (blender_lab)"
    assert _top(user.do("look")["steps"]) == lab_step and "Light" not in _objects(server)
    undone = bwtest.assert_success(bwtest.request(server.port, "undo_last"))
    assert undone == {"undone": lab_step, "now_at": _top(editing["steps"])}, undone
    assert _objects(server) == sorted([*FACTORY, "Suzanne"])


@pytest.mark.runtimes("background", "bpy")
def test_undo_last_without_an_undo_stack_names_restore_checkpoint(server):
    resp = bwtest.assert_error(bwtest.request(server.port, "undo_last"), "no_undo_stack")
    assert "no undo stack" in resp["message"] and "restore_checkpoint" in resp["message"], resp
    cli = _cli_undo(server)
    assert cli.returncode == 1 and resp["message"] in cli.stderr and not cli.stdout, cli

    async def mcp_undo():
        async with mcp_session(server.port) as s:
            return failed(await s.call_tool("undo_last", {}))

    assert resp["message"] in run(mcp_undo)

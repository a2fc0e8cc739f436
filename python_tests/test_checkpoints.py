"""Checkpoints (issue 22): kept before every job that may change data, listed newest first, and
restored with `restore_checkpoint` so that the scene, the file path and the saved state are as they
were before that job. Driven by the unchanged blender-remote client, blender-mcp's MCP server
through `--mcp-addon-port`, `blendwire mcp` and the raw protocol, in every runtime for the raw path.

One `blendwire serve --mcp-addon-port 0` per runtime for the module (the GUI runs only the restore
by the blender-remote client: its redraws make every job slow under xvfb); the faults (off, an
unwritable folder) each start a `-b` serve of their own. Every wait polls with a deadline.
"""

import json
import os
import socket
import stat
import subprocess
import threading

import anyio
import bwtest
import pytest
from blendwire import Client, _core

DESTROY = "import bpy\nfor o in list(bpy.data.objects):\n    bpy.data.objects.remove(o)"
STATE = "import bpy, json\nprint(json.dumps([bpy.data.filepath, bool(bpy.data.is_dirty), len(bpy.data.objects)]))"


@pytest.fixture(scope="module")
def server(request):
    """`blendwire serve --port 0 --mcp-addon-port 0` for one runtime; `.addon_port` the second listener."""
    sp = bwtest.start_serve(request.param, extra=["--mcp-addon-port", "0"])
    assert sp.ready.addon_port, sp.output()
    sp.addon_port = sp.ready.addon_port
    yield sp
    sp.shutdown()


def request(sp, command, params=None):
    with Client(sp.host, sp.port, 60) as c:
        return c.request({"type": command, "params": params or {}})


def run(sp, code):
    answer = request(sp, "execute_code", {"code": code})
    assert answer["status"] == "success", answer
    return answer


def state(sp):
    """(filepath, is_dirty, object count) as Blender reports them."""
    return tuple(json.loads(run(sp, STATE)["result"]["result"]))


def objects(sp):
    """How many objects the scene has (get_scene_info: a read, so no checkpoint)."""
    answer = request(sp, "get_scene_info")
    assert answer["status"] == "success" and "checkpoint" not in answer, answer
    return answer["result"]["object_count"]


def kept(sp):
    answer = request(sp, "list_checkpoints")
    assert answer["status"] == "success" and "checkpoint" not in answer, answer
    return answer["result"]["checkpoints"]


def restore(sp, cid):
    answer = request(sp, "restore_checkpoint", {"id": cid})
    assert answer["status"] == "success", answer
    return answer


def newest(sp, command="execute_code"):
    found = [c for c in kept(sp) if c["job"]["command"] == command]
    assert found, kept(sp)
    return found[0]


# ---- every runtime: the raw path and the blender-remote client ------------------------------------


@pytest.mark.runtimes("background", "bpy")  # the GUI: the restore test below
def test_reads_take_none_and_an_unchanged_scene_keeps_the_last_one(server):
    answer = request(server, "get_scene_info")
    assert answer["status"] == "success" and "checkpoint" not in answer and "checkpoint_error" not in answer
    first = run(server, "import bpy\nbpy.data.objects['Cube'].location.x += 1.0")["checkpoint"]
    second = run(server, "print(1)")["checkpoint"]
    third = run(server, "print(2)")["checkpoint"]
    assert first and second and first != second  # the location changed after the first checkpoint
    assert third == second  # nothing changed since the last one: the same state, the same checkpoint
    listed = kept(server)
    assert [c["id"] for c in listed].count(second) == 1
    assert listed[0]["id"] == second  # newest first
    entry = listed[0]
    assert set(entry) == {"id", "time", "job", "bytes"} and entry["bytes"] > 0
    assert {"command", "client", "listener", "id"} <= set(entry["job"]) and entry["job"]["listener"] == "service"
    run(server, "import bpy\nbpy.data.objects['Cube'].location.x -= 1.0")


def test_the_blender_remote_clients_destructive_code_is_taken_back(server, tmp_path):
    blender_remote = pytest.importorskip("blender_remote")
    client = blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=60)
    # A never-saved scene, then a saved one: the restore gives back the path of then.
    for saved in (False, True):
        if saved:
            user = str(tmp_path / "user.blend")
            run(server, f"import bpy\nbpy.ops.wm.save_as_mainfile(filepath={user!r})")
        before = state(server)
        assert before[2] >= 3 and (before[0] != "") == saved, before
        client.execute_python(DESTROY)
        assert objects(server) == 0
        checkpoint = newest(server)
        assert checkpoint["job"]["client"] and checkpoint["job"]["listener"] == "service"
        answer = restore(server, checkpoint["id"])
        assert answer["result"]["restored"] == checkpoint["id"] and answer["result"]["filepath_restored"] is True
        assert answer["checkpoint"] != checkpoint["id"]  # the restore was checkpointed itself
        after = state(server)
        assert (after[0], after[2]) == (before[0], before[2])
        assert isinstance(answer["result"]["was_dirty"], bool)
        if server.runtime != "gui":  # the GUI shows a restored file as saved (docs/security.md)
            assert after[1] == before[1] == answer["result"]["was_dirty"]
        announced = [i for i in _core.discover_instances() if i["port"] == server.port]
        assert [i.get("blend_file") or "" for i in announced] == [before[0]], announced  # `blendwire list`
    # A later save goes to the user's file, never the checkpoint's.
    os.utime(user, (0, 0))
    run(server, "import bpy\nbpy.ops.wm.save_mainfile()")
    assert os.path.getmtime(user) > 0 and state(server)[0] == user


@pytest.mark.runtimes("background", "bpy")  # the GUI: the restore test below
def test_an_unknown_id_names_list_checkpoints(server):
    for params in ({"id": "nosuchid"}, {}):
        answer = request(server, "restore_checkpoint", params)
        assert answer["status"] == "error" and "list_checkpoints" in answer["message"], answer


@pytest.mark.runtimes("background", "bpy")  # the GUI: the restore test below
def test_files_are_private_and_in_a_folder_of_this_process(server):
    run(server, "import bpy\nbpy.data.objects['Cube'].location.y += 1.0")
    pid = int(run(server, "import os\nprint(os.getpid())")["result"]["result"])
    root = os.path.join(os.environ["XDG_STATE_HOME"], "blendwire", "checkpoints")
    mine = [d for d in os.listdir(root) if d.startswith(f"{pid}-")]
    assert len(mine) == 1, os.listdir(root)
    folder = os.path.join(root, mine[0])
    for private in (os.path.dirname(root), root, folder):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700, private
    files = os.listdir(folder)
    assert files and {f"{c['id']}.blend" for c in kept(server)} <= set(files)
    for f in files:
        assert stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode) == 0o600, f
    run(server, "import bpy\nbpy.data.objects['Cube'].location.y -= 1.0")


@pytest.mark.runtimes("background")
def test_a_restore_while_a_job_runs_waits_its_turn(server, tmp_flag_dir):
    cid = run(server, DESTROY)["checkpoint"]
    started, release = os.path.join(tmp_flag_dir, "started"), os.path.join(tmp_flag_dir, "release")
    answers = {}
    busy = threading.Thread(target=lambda: answers.update(busy=run(server, bwtest.blocking_code(started, release))))
    busy.start()
    try:
        bwtest.wait_file(started)
        waiting = threading.Thread(
            target=lambda: answers.update(restore=request(server, "restore_checkpoint", {"id": cid}))
        )
        waiting.start()
        assert bwtest.poll_until(lambda: request(server, "get_status")["result"]["bridge"]["queue_depth"] >= 1, 30)
        assert "restore" not in answers  # queued behind the running job
    finally:
        bwtest.touch(release)
        busy.join(60)
    waiting.join(60)
    assert answers["busy"]["result"]["result"] == "released\n"
    assert answers["restore"]["status"] == "success", answers["restore"]
    assert objects(server) >= 3


@pytest.mark.runtimes("background")
def test_the_cli_lists_and_restores(server):
    run(server, "import bpy\nbpy.data.objects['Cube'].location.x = 3.0")
    cid = run(server, DESTROY)["checkpoint"]

    def cli(*args):
        r = subprocess.run(
            bwtest.blendwire_command() + [*args, "--port", str(server.port)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert json.loads(cli("checkpoints", "--json"))[0]["id"] == cid
    table = cli("checkpoints").splitlines()
    assert table[0].split()[:3] == ["ID", "TIME", "SIZE"] and table[1].startswith(cid)
    assert f"restored checkpoint {cid}" in cli("restore", cid)
    assert objects(server) >= 3
    run(server, "import bpy\nbpy.data.objects['Cube'].location.x = 0.0")


# ---- the agents' paths: blender-mcp's MCP server and `blendwire mcp` -------------------------------


@pytest.mark.runtimes("background")
def test_blender_mcps_server_through_the_addon_port(server, tmp_path):
    from test_blender_mcp_servers import agent, need, text_of

    need("blender-mcp")
    # A change first: the agent's job then gets a checkpoint of its own (one is only written when
    # data changed since the last one; jobs in between are given that one).
    run(server, "import bpy\nbpy.data.objects['Cube'].location.z = 2.5")

    async def body():
        async with agent("blender-mcp", server.addon_port, str(tmp_path)) as session:
            r = await session.call_tool("execute_blender_code", {"code": DESTROY})
            assert not r.is_error, text_of(r)

    anyio.run(body)
    assert objects(server) == 0
    checkpoint = newest(server)
    assert checkpoint["job"]["dialect"] == "blender_mcp" and checkpoint["job"]["client"], checkpoint
    # Restored in blender-mcp's own dialect, on the add-on port.
    with socket.create_connection((bwtest.HOST, server.addon_port), timeout=60) as s:
        s.sendall(json.dumps({"type": "restore_checkpoint", "params": {"id": checkpoint["id"]}}).encode())
        answer = bwtest.read_json(s, timeout=60)[0]
    assert answer["status"] == "success" and answer["result"]["restored"] == checkpoint["id"], answer
    assert objects(server) >= 3
    cube = request(server, "get_object_info", {"name": "Cube"})["result"]
    assert cube["location"][2] == pytest.approx(2.5), cube
    run(server, "import bpy\nbpy.data.objects['Cube'].location.z = 0.0")


@pytest.mark.runtimes("bpy")
def test_blendwire_mcp_tools_list_and_restore(server):
    from test_mcp import mcp_session, ok, ok_json, text_of

    before = state(server)

    async def body():
        async with mcp_session(server.port) as s:
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert tools["restore_checkpoint"].annotations.destructive_hint is True
            assert tools["list_checkpoints"].annotations.read_only_hint is True
            ok(await s.call_tool("execute_code", {"code": DESTROY}))
            listed = ok_json(await s.call_tool("list_checkpoints", {}))["checkpoints"]
            assert listed[0]["job"]["listener"] == "service" and listed[0]["job"]["command"] == "execute_code"
            restored = ok_json(await s.call_tool("restore_checkpoint", {"id": listed[0]["id"]}))
            assert restored["restored"] == listed[0]["id"]
            failed = await s.call_tool("restore_checkpoint", {"id": "nosuchid"})
            assert failed.is_error and "list_checkpoints" in text_of(failed)

    anyio.run(body)
    assert state(server) == before


# ---- settings and faults ----------------------------------------------------------------------------


@pytest.mark.runtimes("background")
def test_off_and_an_unwritable_folder(server, serve_factory, tmp_path):
    off = serve_factory("background", extra=["--checkpoints", "0"])
    answer = run(off, DESTROY)
    assert "checkpoint" not in answer and "checkpoint_error" not in answer, answer
    assert kept(off) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = serve_factory("background", extra=["--checkpoint-dir", str(blocker / "checkpoints")])
    answer = run(bad, DESTROY)  # the job still runs; the answer says why no checkpoint was kept
    assert "checkpoint" not in answer and "--checkpoint-dir" in answer["checkpoint_error"], answer
    assert "Traceback" not in answer["checkpoint_error"]
    assert objects(bad) == 0


def test_serve_refuses_bad_checkpoint_settings_before_blender_starts():
    for flags, named in (
        (["--checkpoints", "-1"], "--checkpoints"),
        (["--checkpoint-bytes", "5"], "--checkpoint-bytes"),
    ):
        r = subprocess.run(
            bwtest.blendwire_command() + ["serve", "--port", "0", *flags], capture_output=True, text=True, timeout=60
        )
        assert r.returncode != 0 and named in r.stderr, r.stderr

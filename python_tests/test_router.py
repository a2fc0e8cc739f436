"""The router against real peers: a python-socketio AsyncServer as the cr8_engine (engine_peer.py, a
subprocess, so "killed" is a real SIGKILL) and real Blender (`blendwire serve --engine-url ...`).

Backoff and watchdog durations are settings: the tests use small ones (and jitter 0 where gaps are
measured). Every wait polls an observable condition (peer records, `get_status`, process exit)
with a deadline.
"""

import os
import shutil
import subprocess
import sys

import bwtest
import pytest
from bwtest import assert_success
from engine_peer import AttemptRecorder, EnginePeer

HERE = os.path.dirname(os.path.abspath(__file__))
ADDONS = os.path.join(HERE, "fixtures", "addons")
ADDON_ID = "bw_test_capability"
TOKEN = "token-ok"
# Quick retries: the real 2 s -> 10 s would make every test here take minutes.
FAST = ["--backoff-initial", "0.1", "--backoff-max", "0.3"]
WATCHDOG_EXIT_TIMEOUT = 60.0


def serve_router(serve_factory, peer, *, runtime="background", watchdog=0, extra=(), env=None, blend=None):
    args = (
        ["--engine-url", peer.url, "--watchdog-seconds", str(watchdog), "--addon-path", ADDONS, "--username", "tester"]
        + FAST
        + list(extra)
        + ([blend] if blend else [])
    )
    full_env = {"CR8_AUTH_TOKEN": TOKEN}
    full_env.update(env or {})
    return serve_factory(runtime, extra=args, env=full_env)


def router_status(sp):
    return assert_success(bwtest.request(sp.port, "get_status", timeout=10))["router"]


def wait_router(sp, predicate, what, timeout=30.0):
    """Poll the router status through the command service until `predicate(status)` holds."""
    seen = []

    def check():
        st = router_status(sp)
        seen.append(st)
        return st if predicate(st) else None

    try:
        return bwtest.wait_for(check, timeout, what, interval=0.02)
    except AssertionError as e:
        raise AssertionError(f"{e}; last status: {seen[-1] if seen else None}\n{sp.output()}") from None


def execute(sp, code):
    return assert_success(bwtest.execute(sp.port, code))


def stderr_text(sp):
    return "\n".join(sp.stderr_lines)


def blend_has_object(path, name, runtime="background"):
    """Open `path` in a fresh Blender of the runtime that wrote it (Blender 3.4 cannot read a
    bpy 5.0 file) and tell whether it holds object `name`."""
    if runtime == "bpy":
        code = (
            f"import bpy, sys; bpy.ops.wm.open_mainfile(filepath={path!r}); "
            f"sys.exit(0 if {name!r} in bpy.data.objects else 7)"
        )
        cmd = [sys.executable, "-c", code]
    else:
        code = f"import bpy, sys; sys.exit(0 if {name!r} in bpy.data.objects else 7)"
        cmd = ["blender", "-b", "--factory-startup", path, "--python-exit-code", "9", "--python-expr", code]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 7), (
        f"could not load {path} (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    )
    return r.returncode == 0


@pytest.fixture
def peer():
    p = EnginePeer(token=TOKEN).start()
    yield p
    p.kill()


# ---- commands both ways (one Blender for the module) ---------------------------------------------


@pytest.fixture(scope="module")
def engine():
    """(peer, serve) connected: background Blender with the test capability add-on."""
    p = EnginePeer(token=TOKEN).start()
    sp = bwtest.ServeProcess(
        [
            "--port",
            "0",
            "--engine-url",
            p.url,
            "--watchdog-seconds",
            "0",
            "--addon-path",
            ADDONS,
            "--username",
            "tester",
        ]
        + FAST,
        env={"CR8_AUTH_TOKEN": TOKEN},
    )
    try:
        sp.wait_serving()
        p.wait_connected()
    except BaseException:
        sp.kill()
        p.kill()
        raise
    yield p, sp
    try:
        sp.shutdown()
    finally:
        p.kill()


def test_connect_auth_and_registry_update(engine):
    peer, sp = engine
    conn = peer.find(lambda r: r["kind"] == "connect")[0]
    assert conn["accepted"]
    assert conn["auth"] == {"token": TOKEN, "username": "tester", "blend_file_path": ""}
    reg = peer.events("registry_update")[0]["data"]
    assert reg["type"] == "registry_updated"
    assert reg["total_addons"] >= 1
    tools = {t["name"]: t for t in reg["available_tools"] if t["addon_id"] == ADDON_ID}
    assert {"add_marker", "echo", "fail", "wait_for_file"} <= set(tools)
    assert tools["add_marker"]["addon_name"] == "blendwire test capability"
    assert tools["add_marker"]["parameters"][0]["name"] == "name"  # the spec from addon_ai.json
    assert peer.wait_event("connection_status")["data"]["status"] == "Connected"


def test_addon_handler_changes_the_scene(engine):
    peer, sp = engine
    mid = peer.send_command(ADDON_ID, "add_marker", {"name": "BW_FromEngine", "location": [1, 2, 3]}, route="agent")
    reply = peer.wait_reply(mid)["data"]
    assert reply["type"] == "command_completed"
    assert reply["payload"]["status"] == "success"
    assert reply["payload"]["data"]["name"] == "BW_FromEngine"
    assert reply["metadata"]["route"] == "agent" and reply["metadata"]["source"] == "blender"
    info = assert_success(bwtest.request(sp.port, "get_object_info", {"name": "BW_FromEngine"}))
    assert [round(v) for v in info["location"]] == [1, 2, 3]


def test_python_registered_handler(engine):
    peer, sp = engine
    execute(
        sp,
        "from blendwire import router\n"
        "router.register_handler('py_tools', 'scene_name',\n"
        "                        lambda suffix='': {'scene': bpy.context.scene.name + suffix})\n",
    )
    mid = peer.send_command("py_tools", "scene_name", {"suffix": "!"})
    reply = peer.wait_reply(mid)["data"]
    assert reply["payload"] == {"status": "success", "data": {"scene": "Scene!"}}
    # refresh_addons (the router's own) lists it; the registry_update on the next connect will too.
    mid = peer.send_command("cr8_router", "refresh_addons", {})
    assert "py_tools" in peer.wait_reply(mid)["data"]["payload"]["data"]["addons"]
    execute(sp, "from blendwire import router\nrouter.unregister_handler('py_tools')\n")
    mid = peer.send_command("py_tools", "scene_name", {})
    assert peer.wait_reply(mid)["data"]["payload"]["error_code"] == "NO_HANDLERS"


def test_long_running_handler_is_polled_without_blocking(engine, tmp_path):
    peer, sp = engine
    release = str(tmp_path / "release")
    mid = peer.send_command(ADDON_ID, "wait_for_file", {"path": release})
    # While it runs, the main thread still serves: another router command and the command service.
    mid2 = peer.send_command(ADDON_ID, "echo", {"x": 1})
    assert peer.wait_reply(mid2)["data"]["payload"]["data"] == {"echo": {"x": 1}}
    assert_success(bwtest.request(sp.port, "get_scene_info"))
    assert not peer.replies(mid)
    bwtest.touch(release)
    reply = peer.wait_reply(mid)["data"]
    assert reply["type"] == "command_completed", reply
    data = reply["payload"]["data"]
    assert data["released"] is True and data["polls"] >= 2


@pytest.mark.parametrize(
    "addon_id, command, params, code, words",
    [
        (ADDON_ID, "fail", {"message": "deliberate failure"}, "EXECUTION_FAILED", ["deliberate failure", "Traceback"]),
        ("no_such_addon", "x", {}, "NO_HANDLERS", ["no_such_addon"]),
        (ADDON_ID, "no_such_command", {}, "COMMAND_NOT_FOUND", ["no_such_command", "add_marker"]),
        (ADDON_ID, "add_marker", {"nme": "typo"}, "INVALID_PARAMS", ["add_marker", "name"]),
        (ADDON_ID, "unserializable", {}, "UNSERIALIZABLE_RESULT", ["JSON"]),
        ("cr8_router", "get_addon_info", {}, "INVALID_PARAMS", ["addon_id"]),
    ],
)
def test_failures_are_command_failed_and_serving_goes_on(engine, addon_id, command, params, code, words):
    peer, sp = engine
    mid = peer.send_command(addon_id, command, params, route="direct")
    reply = peer.wait_reply(mid)["data"]
    assert reply["type"] == "command_failed", reply
    assert reply["payload"]["status"] == "error"
    assert reply["payload"]["error_code"] == code, reply
    for w in words:
        assert w in reply["payload"]["message"], reply
    assert reply["metadata"]["route"] == "direct"
    mid = peer.send_command(ADDON_ID, "echo", {"after": code})
    assert peer.wait_reply(mid)["data"]["type"] == "command_completed"


def test_duplicate_message_id_runs_once_and_is_answered_again(engine):
    """The engine repeats a message_id when the node that should have read the answer died: the
    command must not run twice, but the repeat must be answered (with the same answer)."""
    peer, sp = engine
    mid = "dup-1"
    before = router_status(sp)["duplicates"]
    peer.send_command(ADDON_ID, "count_calls", {}, message_id=mid)
    first = peer.wait_reply(mid)["data"]["payload"]["data"]["calls"]
    peer.send_command(ADDON_ID, "count_calls", {}, message_id=mid)
    wait_router(sp, lambda st: st["duplicates"] == before + 1, "the duplicate to be counted")
    bwtest.wait_for(lambda: len(peer.replies(mid)) == 2, 30, "the repeat to be answered again")
    again = peer.replies(mid)[1]["data"]
    assert again["type"] == "command_completed" and again["payload"]["data"]["calls"] == first, again
    # A later command proves the duplicate did not run: calls went up by one only.
    probe = peer.send_command(ADDON_ID, "count_calls", {})
    assert peer.wait_reply(probe)["data"]["payload"]["data"]["calls"] == first + 1


def test_duplicate_of_a_running_command_is_answered_once(engine, tmp_path):
    peer, sp = engine
    release = str(tmp_path / "release")
    before = router_status(sp)["duplicates"]
    mid = peer.send_command(ADDON_ID, "wait_for_file", {"path": release})
    peer.send_command(ADDON_ID, "wait_for_file", {"path": release}, message_id=mid)
    wait_router(sp, lambda st: st["duplicates"] == before + 1, "the duplicate to be counted")
    bwtest.touch(release)
    assert peer.wait_reply(mid)["data"]["type"] == "command_completed"
    probe = peer.send_command(ADDON_ID, "echo", {"x": 1})  # later than any second answer would be
    peer.wait_reply(probe)
    assert len(peer.replies(mid)) == 1, peer.replies(mid)


def test_router_own_commands(engine):
    peer, sp = engine
    mid = peer.send_command("cr8_router", "get_available_addons", {})
    addons = peer.wait_reply(mid)["data"]["payload"]["data"]["addons"]
    assert ADDON_ID in [a["addon_id"] for a in addons]
    mid = peer.send_command("cr8_router", "get_addon_info", {"addon_id": ADDON_ID})
    info = peer.wait_reply(mid)["data"]["payload"]["data"]
    assert info["version"] == "1.0.0" and "wait_for_file" in info["commands"]


def test_status_command_shows_the_router(engine):
    peer, sp = engine
    r = subprocess.run(
        bwtest.blendwire_command() + ["status", "--port", str(sp.port)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    assert f"router: connected ({peer.url})" in r.stdout, r.stdout
    assert "watchdog: not armed" in r.stdout, r.stdout


# ---- losing the engine ---------------------------------------------------------------------------


def test_server_killed_growing_retries_watchdog_saves_and_exits_0(serve_factory, peer, tmp_path):
    blend = str(tmp_path / "scene.blend")
    # Jitter 0 so the growth of the gaps is what the server side measures.
    sp = serve_router(
        serve_factory,
        peer,
        watchdog=3,
        extra=["--backoff-initial", "0.25", "--backoff-max", "2", "--backoff-jitter", "0"],
    )
    peer.wait_connected()
    execute(sp, f"bpy.ops.wm.save_as_mainfile(filepath={blend!r})")
    # The scene change after the last save, made through the command service: the watchdog must keep it.
    execute(sp, "o = bpy.data.objects.new('BW_Unsaved_Change', None)\nbpy.context.scene.collection.objects.link(o)")

    peer.kill()
    samples = []
    with AttemptRecorder(peer.port) as rec:

        def armed():
            st = router_status(sp)
            samples.append(st)
            return st["watchdog_s"] is not None

        bwtest.wait_for(armed, 30, "the watchdog to arm", interval=0.02)
        rc = sp.wait_exit(WATCHDOG_EXIT_TIMEOUT)
        times = list(rec.times)
    assert rc == 0, f"exit {rc}\n{sp.output()}"
    # Armed only after the 5th failure in a row, never before.
    assert all(s["watchdog_s"] is None for s in samples if s["consecutive_failures"] < 5), samples
    assert samples[-1]["consecutive_failures"] >= 5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 3, (times, sp.output())
    # Growing gaps (0.25 -> 0.5 -> 1 -> 2 with jitter 0), measured where the attempts arrive.
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert gaps[2] > 1.5 * gaps[0], gaps
    log = stderr_text(sp)
    assert "watchdog armed after 5 failed attempts" in log, log
    assert f"saved {blend}" in log, log
    assert "closing Blender (exit status 0)" in log, log
    assert blend_has_object(blend, "BW_Unsaved_Change")


@pytest.mark.bpy
def test_unsaved_file_goes_to_the_recovery_folder(serve_factory, peer, tmp_path):
    recovery = tmp_path / "recovery"
    sp = serve_router(serve_factory, peer, runtime="bpy", watchdog=1, env={"BLENDWIRE_RECOVERY_DIR": str(recovery)})
    peer.wait_connected()
    mid = peer.send_command(ADDON_ID, "add_marker", {"name": "BW_Recovered"})
    assert peer.wait_reply(mid)["data"]["type"] == "command_completed"
    peer.kill()
    rc = sp.wait_exit(WATCHDOG_EXIT_TIMEOUT)
    assert rc == 0, f"exit {rc}\n{sp.output()}"
    files = list(recovery.glob("*.blend")) if recovery.exists() else []
    assert len(files) == 1, sp.output()
    assert f"saved {files[0]}" in stderr_text(sp)
    assert blend_has_object(str(files[0]), "BW_Recovered", runtime="bpy")


def test_watchdog_interrupts_a_runaway_job_then_saves_and_exits_0(serve_factory, peer, tmp_path):
    """A job that would never end (a busy loop with a long _timeout_seconds) holds the main thread
    when the watchdog fires: it is interrupted, the file is saved with the job's change, exit 0."""
    recovery = tmp_path / "recovery"
    sp = serve_router(serve_factory, peer, watchdog=1, env={"BLENDWIRE_RECOVERY_DIR": str(recovery)})
    peer.wait_connected()
    runaway = bwtest.Conn(sp.port, timeout=WATCHDOG_EXIT_TIMEOUT)
    with runaway:
        code = (
            "m = bpy.data.meshes.new('BW_BeforeRunaway')\n"
            "bpy.context.scene.collection.objects.link(bpy.data.objects.new('BW_BeforeRunaway', m))\n"
            "while True:\n"
            "    pass\n"
        )
        runaway.send({"type": "execute_code", "params": {"code": code, "_timeout_seconds": 600}})
        bwtest.wait_for(
            lambda: (
                assert_success(bwtest.request(sp.port, "get_status", timeout=10))["main_thread"]["state"] == "running"
            ),
            30,
            "the runaway job to run",
        )
        peer.kill()
        rc = sp.wait_exit(WATCHDOG_EXIT_TIMEOUT)
    assert rc == 0, f"exit {rc}\n{sp.output()}"
    files = list(recovery.glob("*.blend")) if recovery.exists() else []
    assert len(files) == 1, sp.output()
    assert blend_has_object(str(files[0]), "BW_BeforeRunaway")


def test_server_back_during_countdown_reconnects_and_delivers(serve_factory, peer, tmp_path):
    release = str(tmp_path / "release")
    sp = serve_router(serve_factory, peer, watchdog=60)
    peer.wait_connected()
    mid = peer.send_command(ADDON_ID, "wait_for_file", {"path": release})
    wait_router(sp, lambda st: st["commands_received"] >= 1, "the command to arrive")
    peer.kill()
    wait_router(sp, lambda st: st["watchdog_s"] is not None, "the watchdog to arm")
    bwtest.touch(release)  # the result finishes while the engine is down: it must wait in the outbox
    wait_router(sp, lambda st: st["queued_replies"] == 1, "the finished result to be queued")
    assert not peer.replies(mid)

    n = len(peer.snapshot())
    peer.start()
    peer.wait_connected(start=n)  # registry_update resent on the new connection
    reply = peer.wait_reply(mid, start=n)["data"]
    assert reply["type"] == "command_completed" and reply["payload"]["data"]["released"] is True
    st = wait_router(sp, lambda st: st["state"] == "connected" and st["queued_replies"] == 0, "connected, outbox empty")
    assert st["watchdog_s"] is None and st["consecutive_failures"] == 0
    assert sp.proc.poll() is None
    assert "disarmed" in stderr_text(sp).lower(), stderr_text(sp)


def test_server_down_at_start_is_retried(serve_factory):
    down = EnginePeer(token=TOKEN)  # not started: nothing listens on its port yet
    try:
        sp = serve_router(serve_factory, down)
        wait_router(sp, lambda st: st["consecutive_failures"] >= 3, "failed first attempts")
        down.start()
        down.wait_connected()
        wait_router(sp, lambda st: st["state"] == "connected", "connected")
    finally:
        down.kill()


def test_rejected_namespace_then_accepted_after_token_refresh(serve_factory, peer):
    sp = serve_router(serve_factory, peer, env={"CR8_AUTH_TOKEN": "stale"})
    rejected = lambda: len(peer.find(lambda r: r["kind"] == "connect" and not r["accepted"]))  # noqa: E731
    bwtest.wait_for(lambda: rejected() >= 3, 30, "repeated rejected connects")
    assert all(r["auth"]["token"] == "stale" for r in peer.find(lambda r: r["kind"] == "connect"))
    # The add-on refreshes its token through blendwire.router; the next attempt must use it.
    execute(sp, f"from blendwire import router\nrouter.set_token_provider(lambda: {TOKEN!r})")
    reg = peer.wait_connected()
    conn = peer.find(lambda r: r["kind"] == "connect" and r["accepted"])[0]
    assert conn["auth"]["token"] == TOKEN
    assert reg["data"]["type"] == "registry_updated"


def test_flapping_server_never_quits(serve_factory, peer):
    # Watchdog 6 s, armed after 5 quick failures (about 0.7 s down): every other outage lasts
    # until it is armed, so arming and disarming happen again and again.
    sp = serve_router(serve_factory, peer, watchdog=6, extra=["--backoff-initial", "0.05", "--backoff-max", "0.2"])
    peer.wait_connected()
    armed_outages = 0
    for i in range(20):
        peer.kill()
        if i % 2 == 0:
            wait_router(sp, lambda st: st["watchdog_s"] is not None, f"outage {i}: the watchdog to arm")
            armed_outages += 1
        n = len(peer.snapshot())
        peer.start()
        peer.wait_connected(start=n)
    st = wait_router(sp, lambda st: st["state"] == "connected", "connected after the last restart")
    assert st["watchdog_s"] is None
    assert st["connects"] >= 21
    assert armed_outages == 10
    assert sp.proc.poll() is None, sp.output()
    assert "watchdog fired" not in stderr_text(sp)


def test_save_failure_still_exits_nonzero_with_the_error_logged(serve_factory, peer, tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    blend = str(folder / "scene.blend")
    sp = serve_router(serve_factory, peer, watchdog=1)
    peer.wait_connected()
    execute(sp, f"bpy.ops.wm.save_as_mainfile(filepath={blend!r})")
    # Make the target unwritable whatever our uid (root ignores file modes): its folder becomes a file.
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    peer.kill()
    rc = sp.wait_exit(WATCHDOG_EXIT_TIMEOUT)
    assert rc not in (None, 0), f"exit {rc}\n{sp.output()}"
    log = stderr_text(sp)
    assert f"saving {blend} FAILED" in log, log
    assert "closing Blender (exit status 3)" in log, log


# ---- the GUI: the timer saves, then quits on the next turn ------------------------------------------


@pytest.mark.gui
def test_gui_watchdog_saves_and_quits(serve_factory, peer, tmp_path):
    blend = str(tmp_path / "gui.blend")
    sp = serve_router(serve_factory, peer, runtime="gui", watchdog=2)
    peer.wait_connected(timeout=60)
    execute(sp, f"bpy.ops.wm.save_as_mainfile(filepath={blend!r})")
    mid = peer.send_command(ADDON_ID, "add_marker", {"name": "BW_GuiChange"})
    assert peer.wait_reply(mid)["data"]["type"] == "command_completed"
    peer.kill()
    rc = sp.wait_exit(WATCHDOG_EXIT_TIMEOUT)
    assert rc == 0, f"exit {rc}\n{sp.output()}"
    log = stderr_text(sp)
    assert f"saved {blend}" in log and "closing Blender" in log, log
    assert blend_has_object(blend, "BW_GuiChange")

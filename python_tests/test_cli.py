"""The `blendwire` command: `call` output and exit codes; `serve` start, stdout line and exit codes."""

import concurrent.futures
import json
import signal
import subprocess

import bw_json
import bw_net
import bw_serve
import bw_wait
import pytest
from blendwire import __version__ as BLENDWIRE_VERSION
from blendwire.process import Ready, descendants, parse_ready

pytestmark = pytest.mark.runtimes("background", "bpy")


def blendwire(*args, timeout=120):
    return subprocess.run(
        bw_serve.blendwire_command() + list(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- call --------------------------------------------------------------------------------------


def test_call_prints_response_json(server):
    p = blendwire("call", "get_scene_info", "--port", str(server.port))
    assert p.returncode == 0, p.stderr
    resp = json.loads(p.stdout)
    assert resp["status"] == "success"
    assert "Cube" in {o["name"] for o in resp["result"]["objects"]}


def test_call_with_json_params(server):
    p = blendwire("call", "execute_code", '{"code": "print(6 * 7)"}', "--port", str(server.port))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["result"]["result"] == "42\n"
    p = blendwire("call", "get_object_info", '{"name": "Cube"}', "--port", str(server.port))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["result"]["mesh"]["polygons"] == 6


def test_call_port_from_env(server):
    import os

    env = dict(os.environ, BLD_REMOTE_MCP_PORT=str(server.port))
    p = subprocess.run(
        bw_serve.blendwire_command() + ["call", "get_polyhaven_status"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["result"]["enabled"] is False


def test_call_unknown_command_fails(server):
    p = blendwire("call", "no_such_command_xyz", "--port", str(server.port))
    assert p.returncode != 0
    assert "unknown_rpc_command" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr


def test_call_command_error_fails(server):
    p = blendwire("call", "execute_code", '{"code": "raise ValueError(\'nope-xyz\')"}', "--port", str(server.port))
    assert p.returncode != 0
    assert "nope-xyz" in p.stderr + p.stdout


@pytest.mark.parametrize("params", ["{not json", "[1, 2]"])
def test_call_bad_params_fails(server, params):
    p = blendwire("call", "get_object_info", params, "--port", str(server.port))
    assert p.returncode != 0
    assert "JSON" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.background
def test_call_nothing_listening_fails_clearly():
    port = bw_net.free_port()
    p = blendwire("call", "get_scene_info", "--port", str(port), "--timeout", "2")
    assert p.returncode != 0
    assert str(port) in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


# ---- serve -------------------------------------------------------------------------------------

RUNTIMES = [
    pytest.param("background", marks=pytest.mark.background),
    pytest.param("bpy", marks=pytest.mark.bpy),
    pytest.param("gui", marks=pytest.mark.gui),
]


def _blender_version(port):
    """The version of the Blender serving on `port`, as it says itself."""
    code = "import bpy; print('.'.join(str(v) for v in bpy.app.version), end='')"
    return bw_json.stdout_of(bw_json.assert_success(bw_json.execute(port, code)))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serve_ready_json_is_the_only_stdout_line(serve_factory, runtime):
    """--ready-json: once serving, one JSON object on one stdout line and nothing else there; the
    human line goes to stderr."""
    sp = serve_factory(runtime)
    assert sp.host == "127.0.0.1" and sp.port > 0
    version = _blender_version(sp.port)
    serving = descendants(sp.proc.pid) if runtime != "bpy" else [sp.proc.pid]
    sp.shutdown()
    assert len(sp.stdout_lines) == 1, sp.output()
    ready = json.loads(sp.stdout_lines[0])
    assert ready.pop("pid") in serving, (serving, sp.output())
    assert ready == {
        "host": "127.0.0.1",
        "port": sp.port,
        "addon_host": None,
        "addon_port": None,
        "mcp_url": None,
        "runtime": runtime,
        "blender_version": version,
        "blendwire_version": BLENDWIRE_VERSION,
    }, sp.output()
    assert f"blendwire: serving on {sp.host}:{sp.port} (Blender {version}, {runtime})" in sp.stderr_lines, sp.output()


@pytest.mark.background
def test_serve_ready_json_names_the_other_listeners(serve_factory):
    sp = serve_factory("background", extra=["--mcp-addon-port", "0", "--mcp-http", "0"])
    ready = json.loads(sp.stdout_lines[0])
    assert ready["addon_host"] == "127.0.0.1" and ready["addon_port"] > 0, ready
    assert ready["mcp_url"].startswith("http://127.0.0.1:") and ready["mcp_url"].endswith("/mcp"), ready
    mcp_port = int(ready["mcp_url"].rsplit(":", 1)[1].split("/")[0])
    for port in (ready["addon_port"], mcp_port):
        bw_net.connect(port).close()  # both listen
    sp.shutdown()
    assert len(sp.stdout_lines) == 1, sp.output()


@pytest.mark.parametrize("runtime", RUNTIMES[:2])
def test_serve_ready_json_keeps_blenders_own_output_off_stdout(serve_factory, runtime, tmp_path):
    """What Blender itself writes to fd 1 (opening a .blend, a job's os.write) goes to stderr: stdout
    carries the handshake alone, also with --bpy, where Blender runs in the serve process."""
    path = str(tmp_path / "scene.blend")
    maker = serve_factory(runtime)
    bw_json.assert_success(bw_json.execute(maker.port, f"import bpy\nbpy.ops.wm.save_as_mainfile(filepath={path!r})"))
    maker.shutdown()
    sp = serve_factory(runtime, extra=[path])
    bw_json.assert_success(bw_json.execute(sp.port, "import os\nos.write(1, b'written to fd 1\\n')"))
    sp.shutdown()
    assert len(sp.stdout_lines) == 1 and parse_ready(sp.stdout_lines[0]) == sp.ready, sp.output()
    assert "written to fd 1" in sp.stderr_lines, sp.output()


def test_parse_ready_takes_the_handshake_only():
    ready = Ready("127.0.0.1", 5000, None, None, "http://127.0.0.1:5001/mcp", 42, "bpy", "5.0.1", "0.1.0")
    fields = json.loads(ready.to_json())
    assert parse_ready(ready.to_json()) == ready
    assert parse_ready(json.dumps({**fields, "added_later": 1})) == ready
    for line in (
        "blendwire: serving on 127.0.0.1:5000 (Blender 5.0.1, bpy)",
        "[1, 2]",
        "{",
        json.dumps({k: v for k, v in fields.items() if k != "pid"}),
        json.dumps({**fields, "port": "5000"}),
        json.dumps({**fields, "port": True}),
        json.dumps({**fields, "host": None}),
    ):
        assert parse_ready(line) is None, line


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serve_without_ready_json_prints_the_human_line(runtime):
    """Without --ready-json, stdout is for people: exactly the documented line."""
    port = bw_net.free_port()
    sp = bw_serve.ServeProcess(["--port", str(port)] + bw_serve.RUNTIME_ARGS[runtime], ready_json=False)
    try:
        bw_wait.wait_for(lambda: sp.stdout_lines or not sp.alive(), bw_serve.START_TIMEOUT, "the serving line")
        assert sp.stdout_lines, sp.output()
        version = _blender_version(port)
        sp.port = port
        sp.shutdown()
    except BaseException:
        sp.kill()
        raise
    assert list(sp.stdout_lines) == [f"blendwire: serving on 127.0.0.1:{port} (Blender {version}, {runtime})"], (
        sp.output()
    )


def _serves_side_by_side(runtime, n):
    """`n` serves of `runtime` started at once (their Blenders start side by side), each waited for."""
    sps = [bw_serve.ServeProcess(["--port", "0"] + bw_serve.RUNTIME_ARGS[runtime]) for _ in range(n)]
    try:
        for sp in sps:
            sp.wait_serving()
            assert sp.runtime == runtime, sp.output()
    except BaseException:
        for sp in sps:
            sp.kill()
        raise
    return sps


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serve_exits_0_on_sigterm_and_on_sigint(runtime):
    """SIGTERM to one serve, SIGINT to another (started and stopping side by side): each exits 0."""
    signals = (signal.SIGTERM, signal.SIGINT)
    sps = _serves_side_by_side(runtime, len(signals))
    try:
        for sp, signum in zip(sps, signals, strict=True):
            assert bw_json.request(sp.port, "get_polyhaven_status")["status"] == "success"
            sp.signal(signum)
        for sp, signum in zip(sps, signals, strict=True):
            rc = sp.wait_exit()
            assert rc == 0, f"{signum.name}: exit {rc}\n{sp.output()}"
            assert bw_net.connection_refused(sp.port), signum.name
    finally:
        for sp in sps:
            if sp.proc.poll() is None:
                sp.kill()


@pytest.mark.background
def test_serve_signal_with_client_connected(serve_factory):
    sp = serve_factory("background")
    conn = bw_json.Conn(sp.port)
    assert conn.request({"type": "get_polyhaven_status", "params": {}})["status"] == "success"
    sp.signal(signal.SIGTERM)
    rc = sp.wait_exit()
    if rc is None:
        sp.kill()
    assert rc == 0, sp.output()
    conn.close()


@pytest.mark.background
def test_serve_explicit_port(serve_factory):
    port = bw_net.free_port()
    sp = serve_factory("background", port=port)
    assert sp.port == port
    assert bw_json.request(port, "get_polyhaven_status")["status"] == "success"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serve_port_taken_fails_clearly(runtime):
    with bw_net.taken_port() as port:
        sp = bw_serve.ServeProcess(["--port", str(port)] + bw_serve.RUNTIME_ARGS[runtime])
        rc = sp.wait_exit(timeout=120)
        if rc is None:
            sp.kill()
    assert rc not in (None, 0), sp.output()
    assert sp.ready is None and not any(parse_ready(line) for line in sp.stdout_lines), sp.output()
    assert not any("serving on" in line for line in list(sp.stdout_lines) + list(sp.stderr_lines)), sp.output()
    err = "\n".join(sp.stderr_lines)
    assert str(port) in err, sp.output()
    assert "Traceback" not in err, sp.output()


@pytest.mark.background
def test_serve_opens_blend_file(serve_factory, tmp_path):
    path = str(tmp_path / "scene.blend")
    maker = serve_factory("background")
    code = (
        "import bpy\nbpy.ops.mesh.primitive_uv_sphere_add()\nbpy.context.active_object.name = 'MySphere'\n"
        f"bpy.ops.wm.save_as_mainfile(filepath={path!r})\nprint('saved')"
    )
    assert bw_json.stdout_of(bw_json.assert_success(bw_json.execute(maker.port, code))).endswith("saved\n")
    maker.shutdown()
    sp = serve_factory("background", extra=[path])
    info = bw_json.assert_success(bw_json.request(sp.port, "get_object_info", {"name": "MySphere"}))
    assert info["type"] == "MESH"


@pytest.mark.background
def test_serve_missing_blend_file_fails(tmp_path):
    sp = bw_serve.ServeProcess(["--port", "0", str(tmp_path / "missing.blend")])
    rc = sp.wait_exit(timeout=60)
    if rc is None:
        sp.kill()
    assert rc not in (None, 0), sp.output()
    assert "missing.blend" in "\n".join(sp.stderr_lines), sp.output()


def _shutdown_at_once(runtime):
    sp = bw_serve.ServeProcess(["--port", "0"] + bw_serve.RUNTIME_ARGS[runtime])
    try:
        sp.wait_serving()
    except BaseException:
        sp.kill()
        raise
    sp.shutdown()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_serve_shutdown_right_after_serving_line(runtime):
    """server_shutdown sent the moment the line appears (a script's first action) must end the
    process with 0 every time. Repeated: the window between the line and the serving loop is small.
    Two attempts at a time, each in a thread of its own that sends the moment its own line appears."""
    attempts = 2 if runtime == "gui" else 5  # a GUI start takes seconds
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(_shutdown_at_once, runtime) for _ in range(attempts)]
    for attempt, future in enumerate(done):
        try:
            future.result()
        except AssertionError as e:
            raise AssertionError(f"attempt {attempt}: {e}") from None


@pytest.mark.background
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--engine-url", "ftp://engine.example:443"], "--engine-url must start with http:// or https://"),
        (["--engine-url", "localhost:8000"], "--engine-url must start with http:// or https://"),
        (
            ["--engine-url", "http://127.0.0.1:8000", "--backoff-jitter", "2"],
            "--backoff-jitter must be between 0 and 1",
        ),
        (["--engine-url", "http://127.0.0.1:8000", "--watchdog-seconds", "-1"], "--watchdog-seconds must be 0"),
        (["--max-request-bytes", "10"], "--max-request-bytes must be at least 1024, got 10"),
        (["--queue-capacity", "0"], "--queue-capacity must be between 1 and 1000000, got 0"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--host", "0.0.0.0"], "--host must be loopback unless there is a token"),
        (["--watchdog-seconds", "5"], "the router options need --engine-url"),
    ],
)
def test_serve_bad_settings_fail_before_blender_starts(args, expected):
    """The core checks serve's settings (one wording, our flag names) before any Blender runs:
    --blender points at a program that does not exist, so reaching it would fail differently."""
    p = blendwire("serve", "--blender", "/nonexistent/blender", *args, timeout=30)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert expected in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "Blender not found" not in p.stderr


def test_serve_bad_watchdog_env_is_named(monkeypatch):
    monkeypatch.setenv("BLENDWIRE_WATCHDOG_SECONDS", "soon")
    p = blendwire("serve", "--blender", "/nonexistent/blender", "--engine-url", "http://127.0.0.1:8000", timeout=30)
    assert p.returncode == 1
    assert "--watchdog-seconds (from $BLENDWIRE_WATCHDOG_SECONDS) must be a number of seconds" in p.stderr, p.stderr
    assert 'got "soon"' in p.stderr, p.stderr


def test_serve_port_from_env():
    port = bw_net.free_port()
    sp = bw_serve.ServeProcess([], env={"BLD_REMOTE_MCP_PORT": str(port)})
    try:
        sp.wait_serving()
    except BaseException:
        sp.kill()
        raise
    sp.shutdown()
    assert sp.port == port, sp.output()


@pytest.mark.background
def test_serve_sigterm_with_running_and_queued_jobs(serve_factory, tmp_flag_dir):
    """SIGTERM while a command runs and others wait: the process ends with 0, and every waiting
    client gets an answer or a closed connection, never a hang."""
    import os

    sp = serve_factory("background")
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    blocker = bw_json.Conn(sp.port)
    waiting = []
    try:
        blocker.send({"type": "execute_code", "params": {"code": bw_json.blocking_code(started, release)}})
        bw_wait.wait_file(started)
        for i in range(3):
            c = bw_json.Conn(sp.port)
            c.send({"type": "execute_code", "params": {"code": f"print({i})"}})
            waiting.append(c)
        sp.signal(signal.SIGTERM)
    finally:
        bw_wait.touch(release)
    rc = sp.wait_exit()
    if rc is None:
        sp.kill()
    assert rc == 0, sp.output()
    for c in [blocker] + waiting:
        try:
            resp = c.read(timeout=30)
            assert isinstance(resp, dict) and resp.get("status") in ("success", "error"), resp
        except ConnectionError:
            pass  # closed by the shutdown: fine, it did not hang
        finally:
            c.close()


@pytest.mark.background
def test_blender_does_not_outlive_a_killed_serve():
    """A supervisor (CI timeout, systemd, kill -9) that SIGKILLs `blendwire serve` must not leave
    its Blender running on as an orphan that holds the port."""
    import os

    sp = bw_serve.ServeProcess(["--port", "0"])
    children = []
    try:
        sp.wait_serving()
        children[:] = bw_serve.descendants(sp.proc.pid)
        assert children, "blendwire serve has no child process"
        sp.proc.kill()  # the blendwire process only, as a supervisor would
        sp.proc.wait(timeout=30)

        def all_gone():
            return not [pid for pid in children if _alive(pid)]

        bw_wait.wait_for(all_gone, 30, f"Blender (pids {children}) to exit after its blendwire serve was killed")
        assert bw_net.connection_refused(sp.port)
    finally:
        sp.kill()
        for pid in children:  # orphans are no longer below sp.proc
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombies are gone
    except OSError:
        return False

"""A runaway job is harmless: interrupted at its deadline, and the service answers on.

Against real Blender (`blendwire serve`): busy loops, loops of short sleeps, one long sleep and code
that catches BaseException and loops again are interrupted at their `_timeout_seconds`; the caller
gets `interrupted` with where it was; a second client is served after each; `get_status` answers
while each runs (it never waits for the main thread); stops (`server_shutdown`, SIGTERM to
`blendwire serve`) end Blender while a runaway job runs. A job in a long C call (a Cycles render)
shows an interrupt pending while it runs past its deadline, and the interrupt lands once the call
returns to Python. Every wait polls a condition up to a deadline.
"""

import os
import signal
import subprocess

import bwtest
import pytest
from bwtest import Conn, assert_error, assert_success, stdout_of, wait_for

# The runaway jobs' _timeout_seconds, counted from the request's arrival: long enough that a busy
# GUI turn never lets a job expire in the queue before it runs.
DEADLINE = 3
ANSWER_WAIT = 60.0  # how long a test waits for any answer (a failure, not a measurement)

RUNAWAYS = {
    "busy_loop": "while True:\n    pass\n",
    "short_sleeps": "import time\nwhile True:\n    time.sleep(0.05)\n",
    "long_sleep": "import time\ntime.sleep(600)\n",
    # Swallows the first three interrupts, then loops again: the interrupt keeps coming.
    "catches_base_exception": (
        "import time\n"
        "caught = 0\n"
        "while caught < 3:\n"
        "    try:\n"
        "        while True:\n"
        "            time.sleep(0.01)\n"
        "    except BaseException:\n"
        "        caught += 1\n"
        "while True:\n"
        "    pass\n"
    ),
}


def exec_req(code, **params):
    return {"type": "execute_code", "params": {"code": code, **params}}


def status(server):
    """`get_status`, which must answer at once even while the main thread is busy."""
    return assert_success(bwtest.request(server.port, "get_status", host=server.host, timeout=10))


def main_thread(server):
    return status(server)["main_thread"]


def wait_running(server, conn, command="execute_code"):
    """Wait until the status shows this connection's job running; returns the main_thread object.
    (The previous test's job may still show for a moment after its answer: it is marked ended
    after its reply is sent.)"""
    client = f"127.0.0.1:{conn.sock.getsockname()[1]}"

    def running():
        mt = main_thread(server)
        return mt if mt["state"] == "running" and mt["client"] == client else None

    mt = bwtest.poll_until(running, ANSWER_WAIT)
    assert mt, f"{command} of {client} never ran within {ANSWER_WAIT} s: {status(server)}\n{server.output()}"
    assert mt["command"] == command, mt
    return mt


def assert_interrupted(resp):
    assert_error(resp, "interrupted")
    message = resp["message"]
    assert "'execute_code' interrupted after" in message and f"(deadline {DEADLINE} s)" in message, message
    assert 'File "<string>"' in message, message  # where it was: the sent code's frames
    return message


def assert_served(server):
    """Another client is served at once, and the main thread is idle again."""
    info = assert_success(bwtest.request(server.port, "get_scene_info", host=server.host, timeout=ANSWER_WAIT))
    assert info["object_count"] >= 1
    assert wait_for(lambda: main_thread(server)["state"] == "idle", ANSWER_WAIT, "the main thread to be idle")


@pytest.mark.parametrize("kind", sorted(RUNAWAYS))
def test_runaway_job_is_interrupted_at_its_deadline(server, kind):
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        c.send(exec_req(RUNAWAYS[kind], _timeout_seconds=DEADLINE))
        mt = wait_running(server, c)
        assert mt["deadline_in_s"] <= DEADLINE, mt
        assert_interrupted(c.read())
    assert_served(server)
    assert status(server)["service"]["errors"].get("interrupted", 0) >= 1


def test_status_answers_while_a_long_job_runs_and_it_is_not_interrupted(server, tmp_flag_dir):
    started = os.path.join(tmp_flag_dir, "started")
    release = os.path.join(tmp_flag_dir, "release")
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        try:
            c.send(exec_req(bwtest.blocking_code(started, release), _timeout_seconds=600))
            bwtest.wait_file(started)
            mt = wait_running(server, c)
            assert mt["interrupt_pending"] is False and mt["interrupts_sent"] == 0, mt
            assert mt["deadline_in_s"] > DEADLINE, mt
            # Still the same job, still answered without the main thread.
            assert main_thread(server)["client"] == mt["client"]
        finally:
            bwtest.touch(release)
        assert stdout_of(assert_success(c.read())) == "released\n"
    assert_served(server)


def blendwire_status(server):
    out = subprocess.run(
        bwtest.blendwire_command() + ["status", "--host", server.host, "--port", str(server.port), "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=ANSWER_WAIT,
    )
    assert out.returncode == 0, out.stderr
    return next(x for x in out.stdout.splitlines() if x.startswith("main thread:"))


def test_blendwire_status_prints_what_the_main_thread_runs(server):
    # The job must still run before its deadline when the `blendwire status` process (a fraction of
    # a second to start) asks: DEADLINE is ample for that; only if this machine was too slow to ask
    # in time (it saw the job past its deadline or ended) the job is sent again with a longer one.
    for deadline in (DEADLINE, 10, 30):
        with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
            c.send(exec_req(RUNAWAYS["busy_loop"], _timeout_seconds=deadline))
            wait_running(server, c)
            line = blendwire_status(server)
            client = f"(client 127.0.0.1:{c.sock.getsockname()[1]})"
            assert_error(c.read(), "interrupted")
        if "deadline in" in line or deadline == 30:
            break
    assert line.startswith("main thread: running execute_code for ") and "deadline in" in line, line
    assert client in line, line
    assert blendwire_status(server) == "main thread: idle"


def test_a_job_interrupted_while_it_changes_the_scene_leaves_blender_usable(server):
    code = (
        "import bpy, time\n"
        "for i in range(1000):\n"
        "    mesh = bpy.data.meshes.new(f'bw_interrupt_{i}')\n"
        "    obj = bpy.data.objects.new(f'bw_interrupt_{i}', mesh)\n"
        "    bpy.context.scene.collection.objects.link(obj)\n"
        "    time.sleep(0.02)\n"
        "print('all made')\n"
    )
    try:
        with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
            c.send(exec_req(code, _timeout_seconds=DEADLINE))
            wait_running(server, c)
            message = assert_interrupted(c.read())
        assert "interrupted" in message
        assert_served(server)
        made = stdout_of(
            assert_success(
                bwtest.execute(
                    server.port,
                    "print(sum(o.name.startswith('bw_interrupt_') for o in bpy.data.objects))",
                    host=server.host,
                )
            )
        )
        assert 0 < int(made) < 1000, made
    finally:
        bwtest.execute(
            server.port,
            "for o in [o for o in bpy.data.objects if o.name.startswith('bw_interrupt_')]:\n"
            "    bpy.data.objects.remove(o)\n",
            host=server.host,
        )


def test_a_job_queued_behind_a_runaway_one_runs_after_the_interrupt(server):
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as runaway:
        runaway.send(exec_req(RUNAWAYS["busy_loop"], _timeout_seconds=DEADLINE))
        wait_running(server, runaway)
        with Conn(server.port, server.host, timeout=ANSWER_WAIT) as waiting:
            waiting.send(exec_req("print('after')", _timeout_seconds=600))
            wait_for(lambda: status(server)["bridge"]["queue_depth"] == 1, ANSWER_WAIT, "the second job to queue")
            assert_interrupted(runaway.read())
            assert stdout_of(assert_success(waiting.read())) == "after\n"


# ---- a long call outside Python -------------------------------------------------------------------

# A real long C call: a Cycles render (CPU, tiny image, samples without end, stopped by Cycles' own
# time limit), on a copy of the scene so the module's other tests keep theirs. It outlasts the
# deadline and the interrupt grace, so it is past its deadline while in C; after it, Python
# that never ends by itself: only the interrupt, landing once control is back in Python, ends it.
RENDER_SECONDS = 6  # > DEADLINE + the 2 s grace: polled, it shows the interrupt pending for 3 s or more
RENDER_SCENE = "bw_long_render"


# A render handler: Python that Blender runs inside the render call, after the render proper, and
# whose exceptions it prints (to the job's captured stderr) and swallows. It sleeps, so the repeated
# interrupt surely lands in it; it notes what it caught in bpy.app.driver_namespace.
RENDER_HANDLER = "bw_slow_render_post"


def long_render_code(started, with_handler):
    handler = (
        "import time\n"
        f"bpy.app.driver_namespace[{RENDER_HANDLER!r}] = []\n"
        f"def {RENDER_HANDLER}(*args):\n"
        f"    caught = bpy.app.driver_namespace[{RENDER_HANDLER!r}]\n"
        "    try:\n"
        "        time.sleep(0.5)\n"
        "    except BaseException as e:\n"
        "        caught.append(type(e).__name__)\n"
        "        raise\n"
        f"bpy.app.handlers.render_post.append({RENDER_HANDLER})\n"
    )
    return (
        "import bpy\n"
        "sc = bpy.context.scene.copy()\n"
        f"sc.name = {RENDER_SCENE!r}\n"
        "sc.render.engine = 'CYCLES'\n"
        "sc.cycles.device = 'CPU'\n"
        "sc.render.resolution_x = sc.render.resolution_y = 32\n"
        "sc.render.resolution_percentage = 100\n"
        "sc.cycles.samples = 1 << 24\n"
        "sc.cycles.use_adaptive_sampling = False\n"
        "sc.cycles.use_denoising = False\n"
        f"sc.cycles.time_limit = {RENDER_SECONDS}\n"
        + (handler if with_handler else "")
        + f"open({started!r}, 'w').close()\n"
        "bpy.ops.render.render(write_still=False, scene=sc.name)\n"
        "while True:\n"
        "    pass\n"
    )


CLEAN_UP_RENDER = (
    f"bpy.app.driver_namespace.pop({RENDER_HANDLER!r}, None)\n"
    f"sc = bpy.data.scenes.get({RENDER_SCENE!r})\n"
    "if sc is not None:\n"
    "    bpy.data.scenes.remove(sc)\n"
    "for h in list(bpy.app.handlers.render_post):\n"
    f"    if getattr(h, '__name__', '') == {RENDER_HANDLER!r}:\n"
    "        bpy.app.handlers.render_post.remove(h)\n"
)


@pytest.mark.parametrize("with_handler", [False, True], ids=["render", "render_with_handler"])
def test_a_long_c_call_is_interrupted_once_it_returns_to_python(server, tmp_flag_dir, with_handler):
    """While the render runs past its deadline the status says so (running, interrupt pending);
    the caller gets `interrupted` if the render returns within the grace, else `timeout` saying the
    job still runs; either way the interrupt lands once control is back in Python and the next
    request is served. The first landing is often in Python that Blender calls and whose exception
    it prints and swallows (Cycles' own `render()` around the C call, a render handler): the
    interrupt is sent again until the job ends, so the loop after the render is ended all the same.
    """
    started = os.path.join(tmp_flag_dir, "render_started")
    try:
        with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
            c.send(exec_req(long_render_code(started, with_handler), _timeout_seconds=DEADLINE))
            bwtest.wait_file(started, ANSWER_WAIT)
            client = f"127.0.0.1:{c.sock.getsockname()[1]}"

            def past_deadline():
                mt = main_thread(server)
                return mt if mt["state"] == "running" and mt["client"] == client and mt["interrupt_pending"] else None

            mt = bwtest.poll_until(past_deadline, ANSWER_WAIT)
            assert mt, f"the render never showed an interrupt pending: {status(server)}\n{server.output()}"
            assert mt["command"] == "execute_code", mt
            assert mt["interrupts_sent"] >= 1, mt
            resp = c.read()
            if resp.get("error_code") == "timeout":
                message = resp["message"]
                assert "'execute_code' is still running" in message, message
                assert "does not return to Python" in message, message
            else:
                assert_interrupted(resp)
        # Served once the render returned: the interrupt ended the loop after it.
        assert_served(server)
        if with_handler:
            # The handler got an interrupt too (Blender swallowed it); the loop after got the next.
            caught = stdout_of(
                assert_success(
                    bwtest.execute(
                        server.port, f"print(bpy.app.driver_namespace.get({RENDER_HANDLER!r}))", host=server.host
                    )
                )
            )
            assert caught == "['Interrupted']\n", caught
    finally:
        bwtest.execute(server.port, CLEAN_UP_RENDER, host=server.host, timeout=ANSWER_WAIT)


# ---- stops during a runaway job ------------------------------------------------------------------


def _runtimes(*names):
    return [pytest.param(n, id=n, marks=getattr(pytest.mark, n)) for n in names]


def _selected(request, runtime):
    wanted = [r.strip() for r in request.config.getoption("--runtimes").split(",")]
    if runtime not in wanted:
        pytest.skip(f"runtime {runtime} not selected")


def _start_runaway(sp):
    """A busy loop with a long deadline (only a stop can end it); returns its connection."""
    pid = int(stdout_of(assert_success(bwtest.execute(sp.port, "import os\nprint(os.getpid())"))))
    c = Conn(sp.port, timeout=ANSWER_WAIT)
    c.send(exec_req(RUNAWAYS["busy_loop"], _timeout_seconds=600))
    wait_running(sp, c)
    return c, pid


@pytest.mark.parametrize("runtime", _runtimes("background", "bpy", "gui"))
def test_server_shutdown_during_a_runaway_job_ends_serve(request, serve_factory, runtime):
    _selected(request, runtime)
    sp = serve_factory(runtime)
    c, _ = _start_runaway(sp)
    with c:
        resp = bwtest.request(sp.port, "server_shutdown", timeout=ANSWER_WAIT)
        assert assert_success(resp)["message"] == "Server shutdown initiated"
        rc = sp.wait_exit(bwtest.EXIT_TIMEOUT)
        assert rc == 0, f"exit {rc}\n{sp.output()}"


@pytest.mark.parametrize("runtime", _runtimes("background", "bpy", "gui"))
def test_sigterm_to_serve_during_a_runaway_job_leaves_no_blender(request, serve_factory, runtime):
    _selected(request, runtime)
    sp = serve_factory(runtime)
    c, pid = _start_runaway(sp)
    with c:
        sp.signal(signal.SIGTERM)
        rc = sp.wait_exit(bwtest.EXIT_TIMEOUT)
        assert rc is not None, sp.output()
        assert rc == 0, f"exit {rc}\n{sp.output()}"
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), bwtest.EXIT_TIMEOUT, f"Blender (pid {pid}) to end")
    assert "killing it" not in "\n".join(sp.stderr_lines), sp.output()


@pytest.mark.parametrize("runtime", _runtimes("background", "gui"))
def test_serve_killed_during_a_runaway_job_leaves_no_blender(request, serve_factory, runtime):
    """SIGKILL to `blendwire serve` alone: its Blender (own session) sees the parent gone, the
    runaway job is interrupted and Blender ends."""
    _selected(request, runtime)
    sp = serve_factory(runtime)
    c, pid = _start_runaway(sp)
    with c:
        sp.proc.kill()
        sp.wait_exit(bwtest.EXIT_TIMEOUT)
        assert wait_for(
            lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), bwtest.EXIT_TIMEOUT, f"Blender {pid} to end"
        )


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---- the blender-remote client ---------------------------------------------------------------


@pytest.mark.parametrize("runtime", _runtimes("background"))
def test_blender_remote_client_sees_an_error_and_goes_on(request, serve_factory, runtime):
    blender_remote = pytest.importorskip("blender_remote")
    from blender_remote.exceptions import BlenderCommandError

    _selected(request, runtime)
    # blender-remote sends no _timeout_seconds: the service's default deadline applies.
    sp = serve_factory(runtime, extra=["--default-timeout", str(DEADLINE)])
    client = blender_remote.connect_to_blender(host=sp.host, port=sp.port, timeout=60)
    with pytest.raises(BlenderCommandError) as e:
        client.execute_python("while True:\n    pass\n")
    assert "interrupted" in str(e.value)
    assert client.execute_python("print('still here')") == "still here\n"
    assert client.get_scene_info()["object_count"] >= 1

"""Cancel and progress, against real Blender (`blendwire serve`, every runtime).

A client cancels its own queued or running job (`{"type": "cancel", "params": {"id": ...}}`, or
`blendwire.Client.cancel()` / Ctrl-C); a running job is interrupted like at its deadline, and the
service answers on. A client that sends `"progress": true` gets the job's `blendwire.progress()`
reports, its stdout as it is printed and the progress of renders it starts, in order, before its
one answer; a client that does not ask gets exactly one answer. The MCP server forwards both
(`notifications/cancelled`, `notifications/progress`), driven by the official `mcp` client.
Every wait polls a condition with a deadline; nothing asserts on timings.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import anyio
import blendwire
import bwtest
import pytest
from bwtest import Conn, assert_error, assert_success, stdout_of, wait_for
from test_interrupt import ANSWER_WAIT, assert_served, main_thread, wait_running
from test_mcp import mcp_session, ok, text_of

BUSY = "while True:\n    pass\n"


def exec_req(code, id=None, progress=None, **params):
    req = {"type": "execute_code", "params": {"code": code, **params}}
    if id is not None:
        req["id"] = id
    if progress is not None:
        req["progress"] = progress
    return req


def errors(server):
    """The service's answers by error code so far (a cancelled job counts under `cancelled`, one
    stopped at its deadline under `interrupted`)."""
    status = assert_success(bwtest.request(server.port, "get_status", host=server.host, timeout=10))
    return status["service"]["errors"]


def assert_cancelled_not_interrupted(server, before):
    after = errors(server)
    assert after.get("cancelled", 0) == before.get("cancelled", 0) + 1, (before, after)
    assert after.get("interrupted", 0) == before.get("interrupted", 0), (before, after)


def cancel(server, job_id):
    return bwtest.request(server.port, "cancel", {"id": job_id}, host=server.host, timeout=10)


def test_cancel_a_running_job_interrupts_it_and_the_service_answers_on(server):
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        c.send(exec_req(BUSY, id="loop-1", _timeout_seconds=600))
        mt = wait_running(server, c)
        assert mt["request_id"] == "loop-1", mt
        answer = assert_success(cancel(server, "loop-1"))
        assert answer == {"id": "loop-1", "cancelled": True, "queued": 0, "running": True}, answer
        resp = c.read()
        assert_error(resp, "cancelled")
        assert resp["id"] == "loop-1", resp
        message = resp["message"]
        assert "'execute_code' was cancelled by its client after" in message, message
        assert 'File "<string>"' in message, message  # where it was
    assert_served(server)
    assert assert_success(cancel(server, "loop-1"))["cancelled"] is False  # done: nothing to cancel


def run_cli(server, *args):
    return subprocess.run(
        bwtest.blendwire_command() + [*args, "--host", server.host, "--port", str(server.port)],
        capture_output=True,
        text=True,
        timeout=ANSWER_WAIT,
    )


def test_blendwire_status_shows_the_job_id_and_progress_and_blendwire_cancel_cancels_it(server):
    code = "import blendwire\nblendwire.progress(0.25, 'quarter')\nwhile True:\n    pass\n"
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        c.send(exec_req(code, id="cli-1", progress=True, _timeout_seconds=600))
        assert c.read()["message"] == "quarter"  # the job is running and has reported
        out = run_cli(server, "status")
        line = next(x for x in out.stdout.splitlines() if x.startswith("main thread:"))
        assert "id cli-1" in line and "progress 25% quarter" in line, line
        out = run_cli(server, "cancel", "cli-1")
        assert (out.returncode, out.stdout) == (0, "cancelled cli-1\n"), out
        assert_error(c.read(), "cancelled")
    out = run_cli(server, "cancel", "cli-1")
    assert out.returncode == 1 and "no queued or running job has id cli-1" in out.stderr, out


def test_cancel_a_queued_job_answers_it_at_once_and_never_runs_it(server, tmp_flag_dir):
    started, release = os.path.join(tmp_flag_dir, "started"), os.path.join(tmp_flag_dir, "release")
    ran = os.path.join(tmp_flag_dir, "queued-job-ran")
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as first, Conn(server.port, server.host) as second:
        try:
            first.send(exec_req(bwtest.blocking_code(started, release), _timeout_seconds=600))
            bwtest.wait_file(started)
            second.send(exec_req(f"open({ran!r}, 'w').close()", id=42, _timeout_seconds=600))
            # The queued job is only named by its request: poll until the service has read it.
            found = bwtest.poll_until(lambda: assert_success(cancel(server, 42))["queued"] == 1, ANSWER_WAIT)
            assert found, "the queued job was never found by its id"
            resp = second.read()  # answered while the first job still holds the main thread
            assert_error(resp, "cancelled")
            assert resp["id"] == 42 and "cancelled by its client before it ran" in resp["message"], resp
            assert main_thread(server)["state"] == "running"
        finally:
            bwtest.touch(release)
        assert stdout_of(assert_success(first.read())) == "released\n"
    assert_served(server)
    assert not os.path.exists(ran)


def test_cancel_needs_an_id(server):
    resp = bwtest.request(server.port, "cancel", {}, host=server.host, timeout=10)
    assert_error(resp, "invalid_request")
    assert "cancel needs the id" in resp["message"], resp
    resp = bwtest.request(server.port, "cancel", {"id": [1]}, host=server.host, timeout=10)
    assert_error(resp, "invalid_request")
    assert '"id" must be' in resp["message"], resp


REPORTING = (
    "import blendwire, time\n"
    "listened = []\n"
    "for i in range(5):\n"
    "    listened.append(blendwire.progress((i + 1) / 5, f'step {i + 1}'))\n"
    "    print(f'line {i}')\n"
    "    time.sleep(0.06)\n"
    "print('listened', all(listened))\n"
)


def test_progress_reports_and_output_come_in_order_before_the_one_answer(server):
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        c.send(exec_req(REPORTING, id="p-1", progress=True))
        messages = []
        while True:
            msg = c.read()
            if msg.get("status") != "progress":
                break
            messages.append(msg)
        answer = assert_success(msg)
        assert msg["id"] == "p-1"
    assert messages, "no progress message before the answer"
    assert all(m["id"] == "p-1" for m in messages), messages
    fractions = [m["fraction"] for m in messages if "fraction" in m]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, messages
    assert messages[-1]["message"] == "step 5", messages
    streamed = "".join(m.get("output", "") for m in messages)
    assert streamed == stdout_of(answer), (streamed, answer)  # all of it, in order, before the answer
    assert stdout_of(answer).endswith("listened True\n")


def test_a_client_that_does_not_ask_gets_exactly_one_answer(server):
    with Conn(server.port, server.host, timeout=ANSWER_WAIT) as c:
        answer = assert_success(c.request(exec_req(REPORTING)))
        assert stdout_of(answer).endswith("listened False\n"), answer  # nobody listened
        assert "id" not in answer
        # Nothing else follows the one answer.
        assert c.request({"type": "get_scene_info", "params": {}})["status"] == "success"


def test_progress_rejects_a_bad_fraction_in_the_job(server):
    out = assert_success(
        bwtest.execute(
            server.port,
            "import blendwire\ntry:\n    blendwire.progress(2)\nexcept ValueError as e:\n    print(e)\n",
            host=server.host,
        )
    )
    assert "from 0 to 1" in stdout_of(out), out


RENDER = (
    "import bpy\n"
    "s = bpy.context.scene\n"
    "s.render.engine = 'CYCLES'\n"
    "s.cycles.samples = 64\n"
    "s.cycles.use_denoising = False\n"
    "s.render.resolution_x = s.render.resolution_y = 64\n"
    "bpy.ops.render.render()\n"
    "print('rendered', bpy.app.version[0])\n"
)


def test_a_render_started_by_the_job_reports_its_progress(server):
    seen = []
    with blendwire.Client(port=server.port, host=server.host, timeout=ANSWER_WAIT) as c:
        out = c.execute(RENDER, progress=seen.append)
    major = int(out.split()[-1])
    messages = [m.get("message", "") for m in seen]
    assert "rendering frame 1" in messages, seen
    if major >= 4:  # Blender 3.4 passes no statistics to its render_stats handlers
        stats = [m for m in seen if " | " in m.get("message", "")]  # "Mem: 2M | Sample 3/64"
        assert stats, seen
        for m in stats:
            sample = re.search(r"Sample (\d+)/(\d+)", m["message"])
            if sample:
                assert m["fraction"] == int(sample[1]) / int(sample[2]), m


def test_client_progress_callback_and_cancel_from_another_thread(server):
    seen = []
    raised = []
    with blendwire.Client(port=server.port, host=server.host, timeout=ANSWER_WAIT) as c:

        def run():
            try:
                c.execute(
                    "import blendwire\nblendwire.progress(0.5, 'half')\nwhile True:\n    pass\n",
                    progress=seen.append,
                )
            except blendwire.CommandError as e:
                raised.append(e)

        t = threading.Thread(target=run)
        t.start()
        assert wait_for(lambda: seen, ANSWER_WAIT, "the job's first progress message")
        assert seen[0]["fraction"] == 0.5 and seen[0]["message"] == "half", seen
        assert c.cancel() is True
        t.join(ANSWER_WAIT)
        assert not t.is_alive()
        assert len(raised) == 1 and raised[0].error_code == "cancelled", raised
        assert c.cancel() is False  # nothing of this client waits any more
        # The same client goes on.
        assert c.execute("print(6 * 7)") == "42\n"


def test_a_callback_that_raises_cancels_the_job_and_its_exception_comes_out(server):
    def stop(msg):
        raise RuntimeError("enough")

    before = errors(server)
    with blendwire.Client(port=server.port, host=server.host, timeout=ANSWER_WAIT) as c:
        with pytest.raises(RuntimeError, match="enough"):
            c.execute("import blendwire\nblendwire.progress(0.1)\nwhile True:\n    pass\n", progress=stop)
        assert wait_for(lambda: main_thread(server)["state"] == "idle", ANSWER_WAIT, "the job to be cancelled")
        assert_cancelled_not_interrupted(server, before)
        assert c.execute("print(1)") == "1\n"


CTRL_C_SCRIPT = """
import sys, blendwire
c = blendwire.Client(host=sys.argv[1], port=int(sys.argv[2]), timeout=120)
print("calling", flush=True)
try:
    c.execute("while True:\\n    pass\\n")
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""


def test_ctrl_c_in_the_calling_script_cancels_its_job(server):
    before = errors(server)
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, server.host, str(server.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "calling\n"
        mt = bwtest.poll_until(lambda: (m := main_thread(server))["state"] == "running" and m, ANSWER_WAIT)
        assert mt and mt["command"] == "execute_code", mt
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=ANSWER_WAIT)
        assert out == "KeyboardInterrupt\n" and proc.returncode == 0, (out, proc.returncode)
    finally:
        proc.kill()
        proc.wait()
    # The job was cancelled in Blender, not left running until its deadline.
    assert wait_for(lambda: main_thread(server)["state"] == "idle", ANSWER_WAIT, "the job to be cancelled")
    assert_cancelled_not_interrupted(server, before)


async def check_progress_and_cancel(s, server):
    """On the MCP session `s` (any transport): a call's progress arrives as notifications/progress,
    in order; abandoning a call sends notifications/cancelled, which cancels its Blender job (not
    interrupted at its deadline) while the same session is answered meanwhile; the session goes on."""
    notes = []

    async def on_progress(progress, total, message):
        notes.append((progress, total, message))

    result = await s.call_tool("execute_code", {"code": REPORTING}, progress_callback=on_progress)
    assert text_of(ok(result)).endswith("listened True\n")
    assert notes, "no notifications/progress"
    assert [p for p, _, _ in notes] == sorted(p for p, _, _ in notes), notes
    assert notes[-1][:2] == (100.0, 100.0), notes
    assert any("step 5" in (m or "") for _, _, m in notes), notes

    # Abandoning the call makes the SDK send notifications/cancelled: the job is cancelled.
    before = errors(server)
    async with anyio.create_task_group() as tg:

        async def runaway():
            await s.call_tool("execute_code", {"code": BUSY, "timeout_seconds": 20})

        tg.start_soon(runaway)
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: main_thread(server)["state"] == "running", ANSWER_WAIT, "the job to run")
        )
        # The same MCP session is answered meanwhile (its calls have connections of their own).
        status = json.loads(text_of(ok(await s.call_tool("check_connection_status", {}))))
        assert status["main_thread"]["state"] == "running", status
        assert status["main_thread"]["command"] == "execute_code", status
        tg.cancel_scope.cancel()
    await anyio.to_thread.run_sync(
        lambda: wait_for(lambda: main_thread(server)["state"] == "idle", ANSWER_WAIT, "the job to be cancelled")
    )
    assert_cancelled_not_interrupted(server, before)
    assert text_of(ok(await s.call_tool("execute_code", {"code": "print(6 * 7)"}))) == "42\n"


@pytest.mark.runtimes("background", "gui")
def test_mcp_progress_notifications_and_cancellation(server):
    async def body():
        async with mcp_session(server.port, server.host) as s:
            await check_progress_and_cancel(s, server)
            with open(s.errlog_path) as f:
                assert "cancelling its Blender job" in f.read()

    anyio.run(body)

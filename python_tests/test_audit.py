"""The audit log (issue 22, point 3) against real Blender: `blendwire serve` writes one JSON line per
request on every listener (BLD Remote through the unchanged blender-remote client, blender-mcp's and
Blender Lab's wires on `--mcp-addon-port`), a job that may change data gets its `start` line before it
runs (so a job that kills Blender is in the log, and `blendwire audit` shows it unfinished), the token
never reaches the file, the file is 0600, `--audit-log off` writes nothing and an unwritable path is
refused before Blender starts. Every wait polls a condition up to a deadline.
"""

import hashlib
import json
import os
import pathlib
import socket
import stat
import subprocess
import threading

import anyio
import bwtest
import pytest
from bwtest import Conn, assert_success, wait_for

blender_remote = pytest.importorskip("blender_remote")

pytestmark = pytest.mark.runtimes("background", "bpy")

TOKEN = "audit-test-token-7f3a9c1e5b"
WAIT = 60.0


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """`blendwire serve --mcp-addon-port 0 --mcp-http 0 --audit-log FILE` for one runtime;
    `.audit_log` is FILE."""
    log = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    extra = ["--mcp-addon-port", "0", "--mcp-http", "0", "--audit-log", str(log)]
    sp = bwtest.start_serve(request.param, extra=extra)
    sp.audit_log = log
    yield sp
    sp.shutdown()


def lines(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines()]


def wait_line(path: pathlib.Path, pred, what: str) -> dict:
    return wait_for(lambda: next((line for line in lines(path) if pred(line)), None), WAIT, what)


def end_of(path: pathlib.Path, start: dict) -> dict:
    key = (start["pid"], start["seq"])
    return wait_line(path, lambda ln: ln["event"] == "end" and (ln["pid"], ln["seq"]) == key, f"the end of {start}")


def started(path: pathlib.Path, marker: str) -> dict:
    return wait_line(
        path, lambda ln: ln["event"] == "start" and marker in (ln.get("code") or ""), f"a start line {marker}"
    )


def blendwire(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        bwtest.blendwire_command() + list(args), capture_output=True, text=True, timeout=timeout, check=False
    )


# ---- one Blender per runtime: every listener --------------------------------------------------------


def test_the_blender_remote_clients_requests_are_logged(server):
    client = blender_remote.connect_to_blender(host=server.host, port=server.port, timeout=60)
    code = "print('audit-me-1')"
    assert client.execute_python(code, send_as_base64=False, return_as_base64=False) == "audit-me-1\n"
    assert client.get_scene_info()["object_count"] >= 1
    log = server.audit_log
    start = started(log, "audit-me-1")
    assert start["listener"] == "service" and start["dialect"] == "bld_remote", start
    assert start["command"] == "execute_code" and start["effect"] == "changes", start
    assert start["peer"].startswith("127.0.0.1:"), start
    assert start["code_sha256"] == hashlib.sha256(start["code"].encode()).hexdigest()
    assert start["token_label"] is None and start["outcome"] is None, start
    assert start["ts"].endswith("Z") and start["pid"] > 0
    end = end_of(log, start)
    assert end["outcome"] == "ok" and end["duration_ms"] >= 0, end
    assert "checkpoint" in end and "code" not in end and end["code_sha256"] == start["code_sha256"], end
    read = wait_line(log, lambda ln: ln["command"] == "get_scene_info", "the get_scene_info line")
    assert read["event"] == "end" and read["effect"] == "reads" and read["outcome"] == "ok", read
    assert not [ln for ln in lines(log) if ln["seq"] == read["seq"] and ln["event"] == "start"], (
        "a read has no start line"
    )
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    # An error answer is logged with its code.
    with Conn(server.port) as c:
        assert c.request({"type": "no_such_command"})["error_code"] == "unknown_rpc_command"
    unknown = wait_line(log, lambda ln: ln["command"] == "no_such_command", "the unknown command's line")
    assert unknown["outcome"] == "unknown_rpc_command", unknown


def test_both_dialects_of_the_mcp_addon_port_are_logged(server):
    addon = server.ready.addon_port
    with Conn(addon) as c:
        resp = c.request({"type": "execute_code", "params": {"code": "x = 'audit-mcp-2'"}}, timeout=WAIT)
        assert resp.get("status") in ("success", "error"), resp
    start = started(server.audit_log, "audit-mcp-2")
    assert (start["listener"], start["dialect"], start["command"]) == ("addon", "blender_mcp", "execute_code"), start
    end_of(server.audit_log, start)
    with socket.create_connection((server.host, addon), timeout=WAIT) as s:
        s.sendall(json.dumps({"type": "execute", "code": "result['a'] = 'audit-lab-3'", "strict_json": True}).encode())
        s.sendall(b"\0")
        answer = b""
        while not answer.endswith(b"\0"):
            chunk = s.recv(65536)
            assert chunk, answer
            answer += chunk
    assert json.loads(answer[:-1])["status"] == "ok", answer
    start = started(server.audit_log, "audit-lab-3")
    assert (start["listener"], start["dialect"], start["command"]) == ("addon", "blender_lab", "execute"), start
    assert end_of(server.audit_log, start)["outcome"] == "ok"


def test_blendwire_mcp_logs_its_tool_calls(server):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    cmd = bwtest.blendwire_command()
    params = StdioServerParameters(
        command=cmd[0],
        args=cmd[1:] + ["mcp", "--blender-host", server.host, "--blender-port", str(server.port)],
        env={"BLENDWIRE_AUDIT_LOG": str(server.audit_log)},
    )

    async def body():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("execute_code", {"code": "print('audit-mcp-6')"})
            assert not result.is_error, result
            assert not (await session.call_tool("get_scene_info", {})).is_error

    anyio.run(body)
    log = server.audit_log
    start = wait_line(log, lambda ln: ln["listener"] == "mcp" and "audit-mcp-6" in (ln.get("code") or ""), "mcp start")
    assert (start["event"], start["dialect"], start["command"]) == ("start", "mcp_stdio", "execute_code"), start
    assert end_of(log, start)["outcome"] == "ok"
    read = wait_line(log, lambda ln: ln["listener"] == "mcp" and ln["command"] == "get_scene_info", "the mcp read")
    assert read["event"] == "end" and read["outcome"] == "ok", read
    # The request it forwarded is the service's line too.
    wait_line(log, lambda ln: ln["listener"] == "service" and "audit-mcp-6" in (ln.get("code") or ""), "forwarded")


def test_serve_mcp_http_logs_its_tool_calls_with_the_peer(server):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def body():
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http,
            streamable_http_client(server.ready.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("execute_code", {"code": "print('audit-http-7')"})
            assert not result.is_error, result

    anyio.run(body)
    log = server.audit_log
    start = wait_line(log, lambda ln: ln["listener"] == "mcp" and "audit-http-7" in (ln.get("code") or ""), "http")
    assert (start["event"], start["dialect"], start["command"]) == ("start", "mcp_http", "execute_code"), start
    assert start["peer"].startswith("127.0.0.1:"), start
    assert end_of(log, start)["outcome"] == "ok"


def test_blendwire_audit_shows_the_requests(server):
    out = blendwire("audit", "--path", str(server.audit_log))
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["time", "listener/dialect", "peer"], header
    assert any("service/bld_remote" in r and "execute_code" in r and " ok " in r for r in rows), out.stdout
    js = blendwire("audit", "--json", "--since", "1h", "--path", str(server.audit_log))
    assert js.returncode == 0, js.stderr
    assert [json.loads(r) for r in js.stdout.splitlines()] == lines(server.audit_log)[: len(js.stdout.splitlines())]


# ---- Blenders of their own -----------------------------------------------------------------------------


@pytest.mark.runtimes("background")
def test_the_token_never_reaches_the_log_and_a_crash_leaves_its_start(server, serve_factory, tmp_path):
    state = tmp_path / "state"
    sp = serve_factory("background", env={"XDG_STATE_HOME": str(state), "BLENDWIRE_TOKEN": TOKEN})
    log = state / "blendwire" / "audit.jsonl"  # on by default, in the state directory
    with Conn(sp.port) as c:
        ok = {"type": "execute_code", "params": {"code": "print('audit-token-4')"}, "token": TOKEN}
        assert_success(c.request(ok, timeout=WAIT))
        wrong = {"type": "execute_code", "params": {"code": "print('audit-wrong-5')"}, "token": "x" + TOKEN}
        assert c.request(wrong, timeout=WAIT)["error_code"] == "unauthorized"
        # Kept open until Blender is gone: a job whose client left is not run.
        c.send({"type": "execute_code", "params": {"code": "import os; os.kill(os.getpid(), 9)"}, "token": TOKEN})
        assert sp.wait_exit(WAIT) is not None, f"Blender killed itself\n{sp.output()}"
    text = log.read_text(encoding="utf-8")
    assert TOKEN not in text, "the token is never written"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(log.parent).st_mode) == 0o700
    good = started(log, "audit-token-4")
    assert good["token_label"] == "token", good
    refused = wait_line(log, lambda ln: "audit-wrong-5" in (ln.get("code") or ""), "the unauthorized line")
    assert refused["outcome"] == "unauthorized" and refused["token_label"] is None, refused
    crash = started(log, "os.kill")
    assert not [ln for ln in lines(log) if (ln["pid"], ln["seq"], ln["event"]) == (crash["pid"], crash["seq"], "end")]
    out = blendwire("audit", "--path", str(log))
    assert out.returncode == 0, out.stderr
    crash_rows = [r for r in out.stdout.splitlines() if "unfinished" in r]
    assert len(crash_rows) == 1 and "execute_code" in crash_rows[0], out.stdout


@pytest.mark.runtimes("background")
def test_audit_log_off_writes_nothing(server, serve_factory, tmp_path):
    state = tmp_path / "state"
    sp = serve_factory("background", extra=["--audit-log", "off"], env={"XDG_STATE_HOME": str(state)})
    assert_success(bwtest.request(sp.port, "execute_code", {"code": "print(1)"}, timeout=WAIT))
    sp.shutdown()
    assert not (state / "blendwire" / "audit.jsonl").exists()


def test_an_unwritable_audit_log_refuses_to_start_naming_the_flag(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out = blendwire("serve", "--port", "0", "--audit-log", str(not_a_dir / "audit.jsonl"), timeout=30)
    assert out.returncode != 0
    assert "--audit-log" in out.stderr and "Traceback" not in out.stderr, out.stderr
    bad = blendwire("serve", "--port", "0", "--audit-code", "some", timeout=30)
    assert bad.returncode != 0 and "--audit-code" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_blendwire_audit_follows_new_requests(server):
    proc = subprocess.Popen(
        bwtest.blendwire_command() + ["audit", "-f", "--json", "--path", str(server.audit_log)],
        stdout=subprocess.PIPE,
        text=True,
    )
    printed = []
    reader = threading.Thread(target=lambda: printed.extend(json.loads(raw) for raw in proc.stdout), daemon=True)
    reader.start()
    try:
        with Conn(server.port) as c:
            assert_success(c.request({"type": "execute_code", "params": {"code": "print('audit-follow-8')"}}))

        def followed():
            starts = [ln for ln in list(printed) if "audit-follow-8" in (ln.get("code") or "")]
            return starts and any(
                (ln["pid"], ln["seq"], ln["event"]) == (starts[0]["pid"], starts[0]["seq"], "end")
                for ln in list(printed)
            )

        wait_for(followed, WAIT, "the followed start and end lines")
    finally:
        proc.terminate()
        proc.wait(30)

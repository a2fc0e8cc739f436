"""Issue 14's rows of `scripts/bench`: MCP servers for Blender, driven by ONE official `mcp` client.

The same client (the `mcp` SDK in .venv: `ClientSession` over `mcp.client.stdio.stdio_client` or
`mcp.client.streamable_http.streamable_http_client`) measures, in `blender -b` and in the GUI
(Debian's Blender under Xvfb), for each server:

  * `blendwire mcp` over stdio, against `blendwire serve [--gui]`;
  * `blendwire mcp --http 127.0.0.1:PORT` (Streamable HTTP at /mcp) against the same service,
    when the installed `blendwire mcp --help` offers `--http` (else the row says "not in this
    build": no numbers are made up);
  * dcc-mcp-blender (PyPI, pinned in scripts/setup, .venv-dcc-mcp-blender): its Rust/PyO3
    Streamable HTTP MCP server runs INSIDE Blender's Python. `-b`: its documented headless
    bootstrap, `blender --background --python <package>/blender_bootstrap.py` (it prints
    `MCP_URL=...`); GUI: its documented pip path, `import dcc_mcp_blender;
    dcc_mcp_blender.start_server(...)` from Blender's Python (run from a timer once the UI is up),
    with the README's "isolated from shared gateway routing" options (port 0, gateway_port=0, no
    failover, a private registry dir) so that it never joins another process's gateway. Its
    tools are loaded per session with its `load_skill` tool (blender-scene, blender-scripting), as
    its progressive skill loading requires;
  * the blender-remote 1.3.3 MCP server (FastMCP, stdio, in .venv) against the same
    `blendwire serve` (it speaks the BLD Remote protocol blendwire serves).

Per server: `session start` = what an agent pays to get its first answer from a running service
(stdio: spawn of the MCP server process -> initialize -> first successful get-scene-info; HTTP: a
new session on the running endpoint -> initialize [-> load_skill] -> first successful call);
`cold` = Blender spawned -> first successful call (blendwire: `blendwire serve` + `blendwire mcp`;
dcc-mcp-blender: Blender with its server); then, in one session, sequential scene-info calls and
`print(1)` (execute code) calls: p50/p99/calls/s. Every result is checked (is_error, a
`success: false` / `status: error` / `error` payload, the expected content: "Scene" / a "1" line
printed); failures are counted and never timed. One server at a time, each stopped before the
next starts.

bench.py calls `run(bench, log_dir)` after its own rows, then `render(results)` and
`targets(results)`; results live in `bench.results[("issue14", runtime)]`.

Standalone (only these rows; $BLENDWIRE_BIN: another build's `blendwire` for the `blendwire mcp` rows):
    .venv/bin/python benches/bench_mcp.py [--quick] [--only b,gui] [--calls 300] [--json OUT]
"""

import glob
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python_tests"))
import bw_net  # noqa: E402
import bw_serve  # noqa: E402
import bw_wait  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_clients  # noqa: E402
import bench_rounds  # noqa: E402
import bench_servers  # noqa: E402

__all__ = ["run", "render", "targets", "main"]

HOST = "127.0.0.1"
DCC_VENV = os.path.join(ROOT, ".venv-dcc-mcp-blender")
DCC_READY = "MCP_URL="
DCC_SKILLS = ("blender-scene", "blender-scripting")
EXEC_CODE = "print(1)"

BW_STDIO, BW_HTTP, DCC, BLREMOTE = "blendwire mcp (stdio)", "blendwire mcp --http", "dcc-mcp-blender", "blender-remote"
SERVERS = (BW_STDIO, BW_HTTP, DCC, BLREMOTE)
N_COLS = 14  # of the per-runtime table
CALL_TIMEOUT = 60.0  # seconds a request may take before it counts as failed (no run hangs on a server)

# The GUI pip path of dcc-mcp-blender's README ("in Blender's Python console: import
# dcc_mcp_blender; dcc_mcp_blender.start_server()"), with the README's isolated-endpoint options,
# run from a timer once Blender's UI is up; its venv's site-packages appended to sys.path.
DCC_GUI_SCRIPT = r"""
import os, sys, tempfile
import bpy

for p in os.environ["BENCH_DCC_SITE"].split(os.pathsep):
    p in sys.path or sys.path.append(p)


def _start():
    import dcc_mcp_blender

    server = dcc_mcp_blender.start_server(
        port=0,
        gateway_port=0,
        enable_gateway_failover=False,
        registry_dir=tempfile.mkdtemp(prefix="dcc-mcp-blender-private-"),
    )
    print("\nMCP_URL=" + server.mcp_url, flush=True)
    return None


bpy.app.timers.register(_start, first_interval=0.0)
"""


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def dcc_site():
    """.venv-dcc-mcp-blender's site-packages (scripts/setup makes it), or None."""
    found = sorted(glob.glob(os.path.join(DCC_VENV, "lib", "python3*", "site-packages")))
    return found[0] if found and os.path.isdir(os.path.join(found[0], "dcc_mcp_blender")) else None


def dcc_version():
    site = dcc_site()
    metas = glob.glob(os.path.join(site, "dcc_mcp_blender-*.dist-info")) if site else []
    return os.path.basename(metas[0])[len("dcc_mcp_blender-") : -len(".dist-info")] if metas else None


def blendwire_mcp():
    """The `blendwire mcp` command: $BLENDWIRE_BIN's (another build) if set, else .venv's."""
    return bw_serve.blendwire_command() + ["mcp"]


def http_supported():
    """Whether this build's `blendwire mcp` has `--http` (Streamable HTTP)."""
    try:
        out = subprocess.run(blendwire_mcp() + ["--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--http" in out.stdout


# ---- one server's tools, and the check of every answer -----------------------------------------


class Tools:
    """How a server spells the two calls, and what a session must do before them."""

    def __init__(self, scene, exec_, prepare=()):
        self.scene, self.exec_, self.prepare = scene, exec_, prepare


BW_TOOLS = Tools(("get_scene_info", {}), ("execute_code", {"code": EXEC_CODE}))
DCC_TOOLS = Tools(
    ("get_scene_info", {}),
    ("execute_python", {"code": EXEC_CODE}),
    prepare=tuple(("load_skill", {"skill_name": s}) for s in DCC_SKILLS),
)


def _text(res):
    return "".join(getattr(c, "text", "") or "" for c in (res.content or []))


def _payload(res):
    sc = getattr(res, "structured_content", None)
    if isinstance(sc, dict):
        return sc
    try:
        v = json.loads(_text(res))
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def failure(res, expect=None):
    """Why an answer is a failure (None: it succeeded). blender-remote answers errors as a normal
    result with an `error` key; dcc-mcp-blender as `success: false` (and is_error)."""
    if getattr(res, "is_error", False):
        return "is_error: " + _text(res)[:200]
    p = _payload(res)
    if p is not None:
        if p.get("success") is False or p.get("status") == "error" or p.get("error"):
            return "error payload: " + json.dumps(p)[:200]
    text = _text(res)
    if expect == "scene" and "Scene" not in text:
        return "no scene in the answer: " + text[:200]
    if expect == "exec" and not any(line.strip() == "1" for line in text.replace("\\n", "\n").splitlines()):
        if not (p and "1\n" in json.dumps(p).replace("\\n", "\n")):
            return "no printed 1 in the answer: " + text[:200]
    return None


class CallFailed(RuntimeError):
    pass


async def _call_ok(session, tool, expect=None):
    res = await session.call_tool(tool[0], tool[1])
    why = failure(res, expect)
    if why:
        raise CallFailed(f"{tool[0]}: {why}")
    return res


async def _prepare(session, tools):
    """What an agent does first: initialize, [load its tools,] list the tools, every page (the
    client checks structured results against the listed schemas, and lists again before every
    call of a tool it has not seen: dcc-mcp-blender pages its ~90 tools by 32)."""
    await session.initialize()
    for tool in tools.prepare:
        await _call_ok(session, tool)
    cursor, listed = None, set()
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        listed |= {t.name for t in page.tools}
        cursor = page.next_cursor
        if not cursor:
            break
    missing = {tools.scene[0], tools.exec_[0]} - listed
    if missing:
        raise CallFailed(f"not in the server's tools/list: {sorted(missing)}")


# ---- sessions -----------------------------------------------------------------------------------


def _stdio(cmd, errlog):
    return stdio_client(StdioServerParameters(command=cmd[0], args=cmd[1:]), errlog=errlog)


async def _first_call(transport, tools):
    """Open the transport, initialize (and prepare), one successful scene call: seconds."""
    t0 = time.perf_counter()
    async with transport as streams:
        async with ClientSession(streams[0], streams[1], read_timeout_seconds=CALL_TIMEOUT) as session:
            await _prepare(session, tools)
            await _call_ok(session, tools.scene, "scene")
            return time.perf_counter() - t0


async def _series(session, tool, expect, calls, warmup, window):
    """Sequential calls (after `warmup`), until `calls` or `window` seconds: latencies of the
    successful ones and the failures (never timed)."""
    lat, fails, first_error = [], 0, None

    async def call():
        try:
            res = await session.call_tool(tool[0], tool[1])
        except Exception as e:  # a JSON-RPC error answer (McpError), a timeout: a failed call
            return f"{type(e).__name__}: {e}"
        return failure(res, expect)

    for _ in range(warmup):
        why = await call()
        if why:
            fails += 1
            first_error = first_error or why
    deadline = time.perf_counter() + window
    cpu0 = time.process_time()  # the client's own CPU (servers are other processes)
    while len(lat) + fails < calls and time.perf_counter() < deadline:
        t = time.perf_counter()
        why = await call()
        dt = time.perf_counter() - t
        if why:
            fails += 1
            first_error = first_error or why
        else:
            lat.append(dt)
    n = len(lat) + fails
    return lat, fails, first_error, (time.process_time() - cpu0) / n if n else None


async def _measure_calls(transport, tools, calls, warmup, window):
    async with transport as streams:
        async with ClientSession(streams[0], streams[1], read_timeout_seconds=CALL_TIMEOUT) as session:
            await _prepare(session, tools)
            scene = await _series(session, tools.scene, "scene", calls, warmup, window)
            exec_ = await _series(session, tools.exec_, "exec", calls, warmup, window)
            return {"scene": _stats(*scene), "exec": _stats(*exec_)}


def _pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _stats(lat, fails, first_error, client_cpu_s):
    ms = lambda v: round(v * 1000, 3)  # noqa: E731
    return {
        "client_cpu_ms": ms(client_cpu_s) if client_cpu_s is not None else None,
        "calls": len(lat),
        "failures": fails,
        "first_error": first_error,
        "p50_ms": ms(_pct(lat, 0.5)) if lat else None,
        "p99_ms": ms(_pct(lat, 0.99)) if lat else None,
        "calls_per_s": round(len(lat) / sum(lat), 1) if lat else None,
    }


def _median_ms(values):
    return round(statistics.median(values) * 1000, 1) if values else None


# ---- servers ------------------------------------------------------------------------------------


def _wait_port(port, timeout):
    return bw_wait.poll_until(lambda: not bw_net.connection_refused(port), timeout, interval=0.002)


def _blendwire_rows(opts, rt, log_dir, http, out, errlog):
    gui = rt == "gui"
    t0 = time.perf_counter()
    srv = bench_servers.start_blendwire(gui, os.path.join(log_dir, f"issue14-blendwire-{rt}.log"))
    try:
        mcp_cmd = blendwire_mcp() + ["--blender-port", str(srv.port)]
        anyio.run(_first_call, _stdio(mcp_cmd, errlog), BW_TOOLS)
        row = out[BW_STDIO] = {"cold_ms": round((time.perf_counter() - t0) * 1000, 1)}
        row["how"] = "`blendwire mcp --blender-port PORT` against `blendwire serve" + (" --gui`" if gui else "` (-b)")
        _say(f"  {BW_STDIO}: cold {row['cold_ms']} ms")
        starts = [anyio.run(_first_call, _stdio(mcp_cmd, errlog), BW_TOOLS) for _ in range(opts.mcp_starts)]
        row["session_ms"] = row["spawn_ms"] = _median_ms(starts)  # a stdio session is a spawn
        row.update(anyio.run(_measure_calls, _stdio(mcp_cmd, errlog), BW_TOOLS, *_limits(opts, fast=True)))
        _say(f"  {BW_STDIO}: {_brief(row)}")

        if http:
            try:
                _http_row(opts, rt, log_dir, srv, out)
            except Exception as e:  # the other rows still run
                out[BW_HTTP] = {"missing": f"failed: {_leaf(e)}"}
                out.setdefault("errors", []).append(f"{BW_HTTP}: {_leaf(e)}")
                _say(f"  {BW_HTTP}: failed: {_leaf(e)}")
        else:
            out[BW_HTTP] = {"missing": "not in this build (`blendwire mcp --help` has no --http)"}
            _say(f"  {BW_HTTP}: not in this build")

        br_cmd = [os.path.join(bench_clients.VENV_BIN, "blender-remote"), "--blender-port", str(srv.port)]
        row = out[BLREMOTE] = {
            "how": "`blender-remote --blender-port PORT` (its MCP server, stdio) against `blendwire serve`"
        }
        starts = [anyio.run(_first_call, _stdio(br_cmd, errlog), BW_TOOLS) for _ in range(opts.mcp_starts)]
        row["session_ms"] = row["spawn_ms"] = _median_ms(starts)
        row.update(anyio.run(_measure_calls, _stdio(br_cmd, errlog), BW_TOOLS, *_limits(opts, fast=False)))
        _say(f"  {BLREMOTE}: {_brief(row)}")
    finally:
        srv.stop(shutdown_port=srv.port)


def _http_row(opts, rt, log_dir, srv, out):
    """`blendwire mcp --http` against the running service `srv`."""
    row = out[BW_HTTP] = {"how": "`blendwire mcp --http 127.0.0.1:PORT --blender-port PORT`, /mcp"}
    port = bw_net.free_port()
    url = f"http://{HOST}:{port}/mcp"
    cmd = blendwire_mcp() + ["--http", f"{HOST}:{port}", "--blender-port", str(srv.port)]
    t = time.perf_counter()
    hsrv = bench_servers.Server(
        "blendwire-mcp-http", cmd, dict(os.environ), os.path.join(log_dir, f"issue14-http-{rt}.log")
    )
    try:
        if not _wait_port(port, 30):
            raise RuntimeError(f"{' '.join(cmd)} did not listen on {port} within 30 s")
        anyio.run(_first_call, streamable_http_client(url), BW_TOOLS)
        row["spawn_ms"] = round((time.perf_counter() - t) * 1000, 1)
        starts = [anyio.run(_first_call, streamable_http_client(url), BW_TOOLS) for _ in range(opts.mcp_starts)]
        row["session_ms"] = _median_ms(starts)
        row.update(anyio.run(_measure_calls, streamable_http_client(url), BW_TOOLS, *_limits(opts, fast=True)))
        _say(f"  {BW_HTTP}: {_brief(row)}")
    finally:
        hsrv.stop()


def _dcc_ready(url, timeout=120.0):
    """Until its /v1/readyz answers 200: until then it refuses tool calls ("Backend is not ready
    yet ... retry once /v1/readyz reports ready"; in the GUI the main-thread pump starts a moment
    after the endpoint)."""

    def ready():
        try:
            with urllib.request.urlopen(url.rsplit("/mcp", 1)[0] + "/v1/readyz", timeout=5) as r:
                return r.status == 200
        except OSError:  # 503 (HTTPError) while not ready
            return False

    if not bw_wait.poll_until(ready, timeout, interval=0.01):
        raise RuntimeError(f"dcc-mcp-blender at {url} not ready within {timeout:.0f} s")


def _start_dcc(rt, log_dir, site, n):
    """Blender with dcc-mcp-blender's server; returns (server, url)."""
    env = dict(os.environ)
    registry = tempfile.mkdtemp(prefix="dcc-mcp-registry-", dir=log_dir)
    # Its own endpoint only: no gateway election on 9765, no failover, a private registry (the
    # README's isolated set-up, here through the variables its options are read from).
    env.update(
        {
            "DCC_MCP_GATEWAY_PORT": "0",
            "DCC_MCP_REGISTRY_DIR": registry,
            "DCC_MCP_BLENDER_ENABLE_GATEWAY_FAILOVER": "0",
            "DCC_MCP_DISABLE_TELEMETRY": "1",
            "DCC_MCP_LOG_DIR": log_dir,
            "BENCH_DCC_SITE": site,
        }
    )
    log = os.path.join(log_dir, f"issue14-dcc-{rt}-{n}.log")
    blender = os.environ.get("BLENDER", "/usr/bin/blender")
    if rt == "gui":
        script = os.path.join(log_dir, "dcc_gui_start.py")
        with open(script, "w") as f:
            f.write(DCC_GUI_SCRIPT)
        cmd = bench_servers.under_xvfb([blender, "--python", script])
    else:
        env["PYTHONPATH"] = site  # the bootstrap restores PYTHONPATH entries itself
        cmd = [blender, "--background", "--python", os.path.join(site, "dcc_mcp_blender", "blender_bootstrap.py")]
    srv = bench_servers.Server(f"dcc-mcp-blender-{rt}", cmd, env, log, ready_prefix=DCC_READY)
    if not srv._ready.wait(120):
        srv.stop()
        raise RuntimeError(f"dcc-mcp-blender did not print {DCC_READY} within 120 s (log: {log})")
    url = next(x for x in srv.lines if x.startswith(DCC_READY))[len(DCC_READY) :].strip()
    srv.remember_tree()
    return srv, url


def _dcc_rows(opts, rt, log_dir, out):
    site = dcc_site()
    if not site:
        out[DCC] = {"missing": "no .venv-dcc-mcp-blender (run scripts/setup)"}
        _say(f"  {DCC}: no .venv-dcc-mcp-blender (run scripts/setup)")
        return
    row = out[DCC] = {
        "version": dcc_version(),
        "how": (
            "`blender --background --python <site-packages>/dcc_mcp_blender/blender_bootstrap.py`"
            if rt == "b"
            else "`blender --python SCRIPT` (Xvfb), SCRIPT: `dcc_mcp_blender.start_server(port=0, gateway_port=0, "
            "enable_gateway_failover=False, registry_dir=<private>)` from a timer"
        )
        + "; inside Blender's Python (Debian Blender 3.4, Python 3.11), Streamable HTTP",
    }
    colds = []
    for n in range(opts.mcp_dcc_starts):
        t0 = time.perf_counter()
        srv, url = _start_dcc(rt, log_dir, site, n)
        try:
            _dcc_ready(url)
            anyio.run(_first_call, streamable_http_client(url), DCC_TOOLS)
            colds.append(time.perf_counter() - t0)
            if n < opts.mcp_dcc_starts - 1:
                continue
            starts = [anyio.run(_first_call, streamable_http_client(url), DCC_TOOLS) for _ in range(opts.mcp_starts)]
            row["session_ms"] = _median_ms(starts)
            row.update(anyio.run(_measure_calls, streamable_http_client(url), DCC_TOOLS, *_limits(opts, fast=False)))
        finally:
            srv.stop()
    row["cold_ms"] = row["spawn_ms"] = _median_ms(colds)  # its server is Blender
    _say(f"  {DCC}: cold {row['cold_ms']} ms; {_brief(row)}")


def _limits(opts, fast):
    """(max calls, warm-up calls, max seconds) per series."""
    return (opts.mcp_calls, opts.mcp_warmup, opts.mcp_window if fast else opts.mcp_slow_window)


def _brief(row):
    s, e = row.get("scene") or {}, row.get("exec") or {}
    return (
        f"session {row.get('session_ms')} ms; scene p50 {s.get('p50_ms')} ms, {s.get('calls_per_s')}/s, "
        f"fail {s.get('failures')}; print(1) p50 {e.get('p50_ms')} ms, {e.get('calls_per_s')}/s, "
        f"fail {e.get('failures')}"
    )


def run(bench, log_dir, runtimes=("b", "gui")):
    """Every row, one server at a time, per runtime."""

    opts = bench.args
    for name, default in (
        ("mcp_calls", 30 if opts.quick else 300),
        ("mcp_warmup", 3 if opts.quick else 20),
        ("mcp_starts", 2 if opts.quick else 5),
        ("mcp_dcc_starts", 1 if opts.quick else 3),
        ("mcp_window", 5.0 if opts.quick else 20.0),
        ("mcp_slow_window", 8.0 if opts.quick else 60.0),
    ):
        if getattr(opts, name, None) is None:
            setattr(opts, name, default)
    # blender-remote prints a banner on stdout (the protocol stream); the SDK logs each such line.
    # It also warns when a session's DELETE is answered 202 rather than 200/204: not a failed call.
    logging.getLogger("mcp.client.stdio").setLevel(logging.CRITICAL)
    logging.getLogger("mcp.client.streamable_http").setLevel(logging.ERROR)
    http = http_supported()
    with open(os.path.join(log_dir, "issue14-mcp-stderr.log"), "w") as errlog:
        for rt in runtimes:
            out = {"loadavg_start": os.getloadavg()}
            bench.results[("issue14", rt)] = out
            _say(f"issue 14 (MCP servers, one `mcp` client), {'blender -b' if rt == 'b' else 'GUI'}:")
            for part in (_blendwire_rows, _dcc_rows):
                try:
                    if part is _blendwire_rows:
                        part(opts, rt, log_dir, http, out, errlog)
                    else:
                        part(opts, rt, log_dir, out)
                except Exception as e:  # a server that fails leaves its row empty, the others run
                    why = f"{part.__name__}: {_leaf(e)}"
                    _say(f"  {why}")
                    out.setdefault("errors", []).append(why)
            out["loadavg_end"] = os.getloadavg()
    bench.results[("issue14", "meta")] = {
        "mcp": _version("mcp"),
        "blender_remote": _version("blender-remote"),
        "dcc_mcp_blender": dcc_version(),
        "http_in_build": http,
        "limits": {
            k: getattr(opts, k)
            for k in ("mcp_calls", "mcp_warmup", "mcp_starts", "mcp_dcc_starts", "mcp_window", "mcp_slow_window")
        },
    }


def _leaf(e):
    """The first real error inside (anyio's task groups wrap them in ExceptionGroups)."""
    while getattr(e, "exceptions", None):
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


def _version(dist):
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# ---- tables and targets -------------------------------------------------------------------------


def _f(v, digits=1):
    return "—" if v is None else f"{v:,.{digits}f}"


def _x(a, b):
    """a/b as a ratio cell."""
    if not a or not b:
        return "—"
    r = a / b
    return f"{r:,.0f}×" if r >= 10 else f"{r:.2f}×"


def render(R):
    meta = R.get(("issue14", "meta"))
    if not meta:
        return []
    lines = [
        "",
        f"Issue 14, MCP servers for Blender, one client (the official `mcp` {meta['mcp']} SDK; stdio or Streamable "
        f"HTTP): blendwire mcp vs dcc-mcp-blender {meta['dcc_mcp_blender'] or '(not installed)'} (PyPI; its server "
        f"runs inside Blender's Python) vs the blender-remote {meta['blender_remote']} MCP server (stdio, against "
        "`blendwire serve`). session = a new agent's first answer from a running service (stdio: MCP process "
        "spawned; HTTP: new session [+ load_skill]); cold = Blender spawned too; client CPU = this Python "
        "client's own CPU per scene-info call. Failures counted, never timed.",
    ]
    for rt in ("b", "gui"):
        out = R.get(("issue14", rt))
        if not out:
            continue
        la0, la1 = out.get("loadavg_start"), out.get("loadavg_end")
        lines += [
            "",
            f"{'`blender -b`' if rt == 'b' else 'GUI (Xvfb)'} — load average at start/end "
            f"{_f(la0 and la0[0], 2)}/{_f(la1 and la1[0], 2)}:",
            "",
            "| server | session → 1st call ms | server spawned → 1st call ms | cold → 1st call ms "
            "| scene p50 ms | p99 ms | calls/s | fail | print(1) p50 ms | p99 ms | calls/s | fail "
            "| client CPU ms/call |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name in SERVERS:
            row = out.get(name)
            if row is None:
                lines.append(f"| {name} | (did not run) |" + " |" * (N_COLS - 2))
                continue
            if "missing" in row:
                lines.append(f"| {name} | {row['missing']} |" + " |" * (N_COLS - 2))
                continue
            s, e = row.get("scene") or {}, row.get("exec") or {}
            lines.append(
                f"| {name} | {_f(row.get('session_ms'))} | {_f(row.get('spawn_ms'))} | {_f(row.get('cold_ms'))} "
                f"| {_f(s.get('p50_ms'), 3)} | {_f(s.get('p99_ms'), 3)} | {_f(s.get('calls_per_s'))} "
                f"| {s.get('failures', '—')} | {_f(e.get('p50_ms'), 3)} | {_f(e.get('p99_ms'), 3)} "
                f"| {_f(e.get('calls_per_s'))} | {e.get('failures', '—')} | {_f(s.get('client_cpu_ms'), 2)} |"
            )
        ratio_rows = []
        for bw in (BW_STDIO, BW_HTTP):
            a = out.get(bw) or {}
            if "scene" not in a:
                continue
            for peer in (DCC, BLREMOTE):
                b = out.get(peer) or {}
                if "scene" not in b:
                    continue
                ratio_rows.append(
                    f"| {bw} vs {peer} | {_x(b.get('session_ms'), a.get('session_ms'))} "
                    f"| {_x(b.get('spawn_ms'), a.get('spawn_ms'))} "
                    f"| {_x(b.get('cold_ms'), a.get('cold_ms'))} "
                    f"| {_x(b['scene'].get('p50_ms'), a['scene'].get('p50_ms'))} "
                    f"| {_x(a['scene'].get('calls_per_s'), b['scene'].get('calls_per_s'))} "
                    f"| {_x(b['exec'].get('p50_ms'), a['exec'].get('p50_ms'))} "
                    f"| {_x(a['exec'].get('calls_per_s'), b['exec'].get('calls_per_s'))} |"
                )
        if ratio_rows:
            lines += [
                "",
                "| blendwire ahead by (peer ÷ blendwire for times, blendwire ÷ peer for calls/s) | session "
                "| server spawned | cold | scene p50 | scene calls/s | print(1) p50 | print(1) calls/s |",
                "|---|--:|--:|--:|--:|--:|--:|--:|",
            ] + ratio_rows
        for name in SERVERS:
            row = out.get(name) or {}
            errs = [(k, row[k].get("first_error")) for k in ("scene", "exec") if (row.get(k) or {}).get("first_error")]
            for k, err in errs:
                lines.append(f"- {name}, {k}: first failure: {err}")
        for err in out.get("errors", []):
            lines.append(f"- not measured: {err}")
        for name in SERVERS:
            if (out.get(name) or {}).get("how"):
                lines.append(f"- {name}: {out[name]['how']}")
    return lines


# What issue 14 recorded (measured earlier, official `mcp` client): a verdict says whether this run
# shows blendwire ahead, with the issue's numbers beside it.
ISSUE = {"b_scene_p50": (0.66, 2.07), "b_startup": (70.0, 781.0), "gui_calls_per_s": (1500.0, 2.0)}


def targets(R):
    out = []
    b, g = R.get(("issue14", "b")) or {}, R.get(("issue14", "gui")) or {}

    def m(rows, server, kind, field):
        return ((rows.get(server) or {}).get(kind) or {}).get(field)

    for bw in (BW_STDIO, BW_HTTP):
        bw_p50, dcc_p50 = m(b, bw, "scene", "p50_ms"), m(b, DCC, "scene", "p50_ms")
        if bw_p50 and dcc_p50:
            out.append(
                {
                    "name": f"issue 14: `-b`, scene info p50, {bw} below dcc-mcp-blender's "
                    f"(issue: {ISSUE['b_scene_p50'][0]} vs {ISSUE['b_scene_p50'][1]} ms)",
                    "value": f"{bw_p50:.3f} vs {dcc_p50:.3f} ms ({dcc_p50 / bw_p50:.1f}×)",
                    "verdict": "pass" if bw_p50 < dcc_p50 and not m(b, bw, "scene", "failures") else "MISS",
                }
            )
        # The issue's start-up: the MCP server process spawned -> first answer (dcc-mcp-blender's
        # server is Blender itself; blendwire's talks to a running `blendwire serve`).
        bw_s, dcc_s = (b.get(bw) or {}).get("spawn_ms"), (b.get(DCC) or {}).get("spawn_ms")
        if bw_s and dcc_s:
            out.append(
                {
                    "name": f"issue 14: `-b`, start-up (server spawned → first call), {bw} below dcc-mcp-blender's "
                    f"(issue: {ISSUE['b_startup'][0]:.0f} vs {ISSUE['b_startup'][1]:.0f} ms)",
                    "value": f"{bw_s:,.1f} vs {dcc_s:,.1f} ms",
                    "verdict": "pass" if bw_s < dcc_s else "MISS",
                }
            )
        bw_c, dcc_c = m(g, bw, "scene", "calls_per_s"), m(g, DCC, "scene", "calls_per_s")
        if bw_c and dcc_c:
            out.append(
                {
                    "name": f"issue 14: GUI, scene info calls/s, {bw} ≥ 100× dcc-mcp-blender's "
                    f"(issue: ~{ISSUE['gui_calls_per_s'][0]:,.0f} vs ~{ISSUE['gui_calls_per_s'][1]:.0f})",
                    "value": f"{bw_c:,.0f} vs {dcc_c:,.1f} calls/s ({bw_c / dcc_c:,.0f}×)",
                    "verdict": "pass" if bw_c >= 100 * dcc_c and not m(g, bw, "scene", "failures") else "MISS",
                }
            )
    return out


def main():
    """Only these rows (one server at a time)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--quick", action="store_true", help="few calls, 1 Blender start per peer (smoke test)")
    ap.add_argument("--only", default="b,gui", help="b,gui (comma-separated)")
    ap.add_argument(
        "--calls", dest="mcp_calls", type=int, default=None, help="max calls per series (default 300; quick 30)"
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    log_dir = tempfile.mkdtemp(prefix="blendwire-bench-mcp-")

    class _Bench:  # what run() needs of bench.py's Bench
        pass

    bench = _Bench()
    bench.args, bench.results = args, {}
    try:
        run(bench, log_dir, tuple(x.strip() for x in args.only.split(",")))
    finally:
        for srv in list(bench_servers.LIVE_SERVERS):
            srv.stop()
    bench_rounds.print_standalone(render(bench.results), targets(bench.results), log_dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}:{k[1]}": v for k, v in bench.results.items()}, f, indent=1)


if __name__ == "__main__":
    main()

"""The `blendwire` command: `serve` (Blender with the service, in the foreground), `status`,
`cancel`, `list`, `call` and `mcp`, plus `cli_trust`'s `undo`, `checkpoints`, `restore` and `audit`.
Argument parsing and what each command prints; the settings are checked by the core before Blender
starts, the child process is `blendwire.blender_child`'s and serving inside Blender is
`blendwire.serve`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _core, blender_child, cli_trust, config, process
from .cli_common import Fail, check, core_error, probe, service_call
from .client import Client
from .config import BLENDER_MCP_ADDON_ENV, check_blender_mcp_addon, env_port
from .errors import BlendwireError

__all__ = ["main"]

DEFAULTS: dict[str, Any] = _core.defaults()


# ---- serve ---------------------------------------------------------------------------------------

_SERVICE_FLAGS = ("queue_capacity", "max_connections", "max_request_bytes", "read_timeout", "default_timeout")
_ROUTER_FLAGS = ("backoff_initial", "backoff_max", "backoff_jitter", "watchdog_after_failures", "ca_file")


def _cmd_serve(args: argparse.Namespace) -> int | None:
    port = args.port if args.port is not None else env_port()
    blend_file = None
    if args.file:
        blend_file = os.path.abspath(args.file)
        if not os.path.isfile(blend_file):
            raise Fail(f"no such .blend file: {args.file}")
    if args.bpy and args.gui:
        raise Fail("--gui needs a Blender executable; the bpy module has no UI (drop --bpy)")
    service = {k: getattr(args, k) for k in _SERVICE_FLAGS if getattr(args, k) is not None}
    mcp_addon_port = args.mcp_addon_port
    if mcp_addon_port is None:
        try:
            mcp_addon_port = _core.mcp_addon_port_from_env()
        except ValueError as e:
            raise core_error(e) from None
    if mcp_addon_port is not None:
        service["mcp_addon_port"] = mcp_addon_port
    token = config.env_token()  # what blendwire.blender.start will use
    check(_core.check_service_settings(host=args.host, port=port, token=token, **service))
    service.update(_audit_settings(args))
    settings = {"host": args.host, "port": port, "service": service, **_router_settings(args)}
    settings["checkpoints"] = _checkpoint_settings(args)
    if args.mcp_http is not None:
        _check_mcp_http("--mcp-http", args.mcp_http, token)
        settings["mcp_http"] = args.mcp_http
    addon = _blender_mcp_addon(args, mcp_addon_port)
    if addon is not None:
        settings["blender_mcp_addon"] = addon
    if args.bpy:
        return _serve_bpy(settings, blend_file, args.ready_json)
    try:
        return blender_child.run(args.blender, args.gui, blend_file, settings, ready_json=args.ready_json)
    except blender_child.BlenderChildError as e:
        raise Fail(str(e)) from None


_AUDIT_FLAGS = ("audit_log", "audit_code", "audit_max_bytes")


def _audit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The audit log part of serve's settings, checked by the core here (the file tried too), so
    that an unwritable --audit-log fails before Blender starts."""
    given = {k: getattr(args, k) for k in _AUDIT_FLAGS if getattr(args, k) is not None}
    flags = {}
    if "audit_log" not in given and config.env_audit_log() is not None:
        given["audit_log"] = config.env_audit_log()
        flags["audit_log"] = f"${config.AUDIT_LOG_ENV}"
    if given.get("audit_log") not in (None, "off"):
        # Blender runs in another directory: the file as this shell names it.
        given["audit_log"] = os.path.abspath(given["audit_log"])
    check(_core.check_audit_settings(**given), flags)
    return given


_CHECKPOINT_FLAGS = ("checkpoints", "checkpoint_bytes", "checkpoint_dir")


def _checkpoint_settings(args: argparse.Namespace) -> dict[str, Any]:
    """serve's checkpoint flags, checked by the core here (a relative folder made absolute)."""
    given = {k: getattr(args, k) for k in _CHECKPOINT_FLAGS if getattr(args, k) is not None}
    if given.get("checkpoint_dir"):
        given["checkpoint_dir"] = os.path.abspath(given["checkpoint_dir"])
    try:
        _core.checkpoint_settings(**given)
    except ValueError as e:
        raise core_error(e) from None
    return given


def _blender_mcp_addon(args: argparse.Namespace, mcp_addon_port: int | None) -> str | None:
    """The checked, absolute path of --blender-mcp-addon (else $BLENDWIRE_BLENDER_MCP_ADDON), or None."""
    flag, path = "--blender-mcp-addon", args.blender_mcp_addon
    if path is None:
        flag, path = f"${BLENDER_MCP_ADDON_ENV}", config.env_blender_mcp_addon()
    if path is None:
        return None
    if mcp_addon_port is None:
        raise Fail(f"{flag} needs --mcp-addon-port (or ${DEFAULTS['mcp_addon_port_env']}): its clients connect there")
    try:
        return check_blender_mcp_addon(path)
    except ValueError as e:
        raise Fail(f"{flag} {e}") from None


def _router_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The router part of serve's settings, checked by the core here, so a typo fails before
    Blender starts."""
    url = args.engine_url or config.env_engine_url()
    given = {k: getattr(args, k) for k in _ROUTER_FLAGS if getattr(args, k) is not None}
    if not url:
        if given or args.watchdog_seconds is not None or args.username is not None:
            raise Fail("the router options need --engine-url (or $WS_URL)")
    else:
        check(
            _core.check_router_settings(url, watchdog_seconds=args.watchdog_seconds, **given),
            {"url": "--engine-url"},
        )
    paths = []
    for folder in args.addon_path or ():
        if not os.path.isdir(folder):
            raise Fail(f"--addon-path {folder!r} is not a directory")
        paths.append(os.path.abspath(folder))
    return {
        "engine_url": url,
        "watchdog_seconds": args.watchdog_seconds,
        "username": args.username,
        "addon_paths": paths,
        **given,
    }


def _serve_bpy(settings: dict[str, Any], blend_file: str | None, ready_json: bool) -> int | None:
    # With --ready-json, stdout carries the handshake alone: what Blender prints (from its import
    # on) goes to stderr.
    out = process.stdout_for_handshake() if ready_json else None
    try:
        import bpy  # noqa: F401
    except ImportError as e:
        raise Fail(
            f"--bpy needs the bpy module in this Python ({e}); install it with "
            f"`{sys.executable} -m pip install bpy` (bpy 5.0 needs Python 3.11)"
        ) from None
    from . import serve  # loads Blender: only for --bpy

    try:
        return serve.serve(settings, lambda info: process.announce(info, ready_json, out), blend_file=blend_file)
    except serve.ServeError as e:
        raise Fail(str(e)) from None


# ---- status --------------------------------------------------------------------------------------


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _cmd_status(args: argparse.Namespace) -> int:
    st = service_call(args, "get_status", {}).get("result", {})
    if args.json:
        print(json.dumps(st, indent=2), flush=True)
        return 0
    svc, bridge, rt = st.get("service") or {}, st.get("bridge") or {}, st.get("router") or {}
    print(f"blendwire {st.get('version', '?')}, up {_fmt_seconds(st.get('uptime_s'))}")
    print(
        f"service: {'on ' + str(svc.get('host')) + ':' + str(svc.get('port')) if svc.get('running') else 'off'}"
        f", connections {svc.get('connections_open', 0)}, requests {svc.get('requests', 0)}"
    )
    addon = svc.get("mcp_addon")
    if addon:
        conns = addon.get("connections") or {}
        print(
            f"MCP add-on listener: on {addon.get('host')}:{addon.get('port')}, connections: "
            f"blender-mcp {conns.get('blender_mcp', 0)}, Blender Lab {conns.get('blender_lab', 0)}"
        )
    print(
        f"queue: {bridge.get('queue_depth', 0)}/{bridge.get('capacity', '?')}, "
        f"completed {bridge.get('completed', 0)}, failed {bridge.get('failed', 0)}"
    )
    print(_main_thread_line(st.get("main_thread") or {}))
    state = rt.get("state", "stopped")
    if state == "stopped" and not rt.get("url"):
        print("router: off")
    else:
        print(
            f"router: {state} ({rt.get('url')}), attempts {rt.get('attempts', 0)}, "
            f"failures in a row {rt.get('consecutive_failures', 0)}, retry in {_fmt_seconds(rt.get('retry_in_s'))}"
        )
        left = rt.get("watchdog_s")
        print(f"watchdog: {'not armed' if left is None else 'quits in ' + _fmt_seconds(left)}")
        print(
            f"commands: received {rt.get('commands_received', 0)}, completed {rt.get('commands_completed', 0)}, "
            f"failed {rt.get('commands_failed', 0)}, queued replies {rt.get('queued_replies', 0)}"
        )
        if rt.get("last_error"):
            print(f"last error: {rt['last_error']}")
    return 0


def _main_thread_line(main: dict[str, Any]) -> str:
    if main.get("state") != "running":
        return "main thread: idle"
    line = f"main thread: running {main.get('command')} for {_fmt_seconds(main.get('running_s'))}"
    who = [f"client {main['client']}"] if main.get("client") else []
    if main.get("request_id") is not None:
        who.append(f"id {main['request_id']}")
    if who:
        line += f" ({', '.join(who)})"
    left = main.get("deadline_in_s")
    if left is not None:
        line += f", deadline in {_fmt_seconds(left)}" if left >= 0 else f", {_fmt_seconds(-left)} past its deadline"
    progress = main.get("progress") or {}
    if progress.get("fraction") is not None or progress.get("message"):
        done = f"{progress['fraction']:.0%}" if progress.get("fraction") is not None else ""
        line += f", progress {' '.join(x for x in (done, progress.get('message') or '') if x)}"
    if main.get("interrupt_pending"):
        cause = main.get("interrupt_cause")
        line += f", interrupting{' (' + cause + ')' if cause else ''}, {main.get('interrupts_sent', 0)} sent"
    return line


def _cmd_cancel(args: argparse.Namespace) -> int:
    port = args.port if args.port is not None else env_port()
    probe(args.host, port, args.timeout)
    job_id = int(args.id) if args.id.isdigit() else args.id
    try:
        with Client(args.host, port, args.timeout) as c:
            found = c.cancel(job_id)
    except BlendwireError as e:
        raise Fail(f"{type(e).__name__}: {e}") from None
    if not found:
        raise Fail(f"no queued or running job has id {args.id} (finished already?)")
    print(f"cancelled {args.id}", flush=True)
    return 0


# ---- list ----------------------------------------------------------------------------------------

_LIST_COLUMNS = ("ADDRESS", "PID", "RUNTIME", "BLENDER", "UP", "TOKEN", "MCP ADD-ON", "FILE")


def _fmt_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cmd_list(args: argparse.Namespace) -> int:
    found = _core.discover_instances()
    if args.json:
        print(json.dumps(found, indent=2), flush=True)
        return 0
    if not found:
        print(
            f"no blendwire instance is running (none announced in {_core.instances_dir()}); "
            "start one with `blendwire serve [FILE.blend]`",
            flush=True,
        )
        return 0
    now = time.time()
    rows = [
        (
            f"{i['host']}:{i['port']}",
            str(i["pid"]),
            i["runtime"],
            i["blender_version"],
            _fmt_age(now - i["started_at"]),
            "required" if i["token_required"] else "-",
            "-" if i.get("mcp_addon_port") is None else str(i["mcp_addon_port"]),
            i.get("blend_file") or "(unsaved)",
        )
        for i in found
    ]
    widths = [max(len(r[c]) for r in [_LIST_COLUMNS, *rows]) for c in range(len(_LIST_COLUMNS) - 1)]
    for row in [_LIST_COLUMNS, *rows]:
        # The last column (the file) is not padded.
        print("  ".join([cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)] + [row[-1]]), flush=True)
    return 0


# ---- call ----------------------------------------------------------------------------------------


def _cmd_call(args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params) if args.params else {}
    except ValueError as e:
        raise Fail(f'JSON_PARAMS is not valid JSON ({e}); e.g. \'{{"name": "Cube"}}\'') from None
    if not isinstance(params, dict):
        raise Fail('JSON_PARAMS must be a JSON object, e.g. \'{"name": "Cube"}\'')
    response = service_call(args, args.type, params)
    print(json.dumps(response, indent=2, ensure_ascii=False), flush=True)
    return 0


# ---- mcp -----------------------------------------------------------------------------------------


def _cmd_mcp(args: argparse.Namespace) -> int:
    # No port given (flag or $BLD_REMOTE_MCP_PORT): every running `blendwire serve`, picked per call.
    port = args.blender_port if args.blender_port is not None else config.env_port_if_set()
    host = args.blender_host
    token = config.env_token()
    if args.http is None and (args.stdio or args.allow_origin or args.allow_host):
        raise Fail("--stdio, --allow-origin and --allow-host go with --http [HOST:]PORT")
    if args.http is not None:
        _check_mcp_http("--http", args.http, token, args.allow_origin)
    # A line per tool call in the audit log (its own lines: listener mcp), as `serve` keeps it.
    try:
        _core.set_audit(audit_log=config.env_audit_log())
    except ValueError as e:
        raise core_error(e, {"audit_log": f"${config.AUDIT_LOG_ENV} (the audit log)"}) from None
    # stdout is the MCP protocol (on stdio): everything else goes to stderr. Blender need not run
    # yet: tools connect on their first call.
    try:
        server = _core.McpServer(
            host,
            port,
            timeout=args.timeout,
            connect_timeout=args.connect_timeout,
            token=token,
            stdio=args.http is None or args.stdio,
            http=args.http,
            allow_origins=args.allow_origin or [],
            allow_hosts=args.allow_host or [],
        )
    except ValueError as e:
        raise core_error(e, {"port": "--blender-port", "http": "--http", "allow_origin": "--allow-origin"}) from None
    except RuntimeError as e:
        raise Fail(str(e)) from None
    try:
        # Short waits, so that Ctrl-C is seen between them.
        while not server.wait(0.2):
            pass
    except RuntimeError as e:
        raise Fail(str(e)) from None
    finally:
        server.stop()
    return 0


def _check_mcp_http(flag: str, spec: str, token: str | None, allow_origins: Sequence[str] | None = ()) -> None:
    problem = _core.check_mcp_http(spec, token, list(allow_origins or ()))
    if problem:
        raise Fail(problem if problem.startswith("--") else f"{flag} {problem}")


# ---- entry point ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="blendwire",
        description="Blender with a BLD-Remote-compatible command service (serve), and a client (call).",
    )
    p.add_argument("--version", action="version", version=f"blendwire {_core.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve",
        help="run Blender with the command service, in the foreground",
        description="Start Blender with the BLD-Remote-compatible command service and "
        "stay in the foreground until server_shutdown, Ctrl-C or SIGTERM.",
    )
    s.add_argument("file", nargs="?", metavar="FILE.blend", help="a .blend file to open")
    s.add_argument("--host", default=d["host"], help="address to listen on (default %(default)s)")
    s.add_argument("--port", type=int, help=f"port (default: $BLD_REMOTE_MCP_PORT or {d['port']}; 0 = a free port)")
    s.add_argument(
        "--mcp-addon-port",
        type=int,
        metavar="PORT",
        help="also serve the MCP add-ons' clients (blender-mcp and Blender Lab, told apart per connection) "
        f"on PORT; both expect {d['mcp_addon_port']} (default: ${d['mcp_addon_port_env']}, else off; 0 = a free port)",
    )
    s.add_argument(
        "--blender-mcp-addon",
        metavar="PATH",
        help="host this blender-mcp add-on file (e.g. <site-packages>/blender_mcp/bundled/addon.py of blender-mcp "
        "or mcp-for-blender) for the --mcp-addon-port clients: its whole command table, without its own "
        f"transport (default: ${BLENDER_MCP_ADDON_ENV}; else the add-on enabled in Blender or an importable "
        "blender_mcp package, else blendwire's own core commands)",
    )
    s.add_argument(
        "--mcp-http",
        metavar="[HOST:]PORT",
        help="also serve MCP over Streamable HTTP at http://HOST:PORT/mcp, in the Blender process, stopping with it "
        "(as `blendwire mcp --http`; HOST default 127.0.0.1, off loopback only with $BLENDWIRE_TOKEN)",
    )
    which = s.add_mutually_exclusive_group()
    which.add_argument("--blender", metavar="PATH", help="Blender executable (default: $BLENDER or blender on PATH)")
    which.add_argument("--bpy", action="store_true", help="run in this process on the bpy module")
    s.add_argument("--gui", action="store_true", help="run Blender with its UI (under xvfb-run if $DISPLAY is unset)")
    s.add_argument(
        "--ready-json",
        action="store_true",
        help="once serving, print ONE JSON object on one stdout line (host, port, addon_host, addon_port, mcp_url, "
        "pid, runtime, blender_version, blendwire_version; see docs/protocol.md) and the human lines on stderr: "
        "the handshake for programs, the only line they should parse",
    )
    lim = s.add_argument_group("service limits")
    lim.add_argument(
        "--queue-capacity", type=int, metavar="N", help=f"main-thread queue bound (default {d['queue_capacity']})"
    )
    lim.add_argument(
        "--max-connections", type=int, metavar="N", help=f"open connections at most (default {d['max_connections']})"
    )
    lim.add_argument(
        "--max-request-bytes",
        type=int,
        metavar="N",
        help=f"request size limit (default {d['max_request_bytes'] >> 20} MiB)",
    )
    lim.add_argument(
        "--read-timeout",
        type=float,
        metavar="S",
        help=f"seconds for a request to arrive whole (default {d['read_timeout']:g})",
    )
    lim.add_argument(
        "--default-timeout",
        type=float,
        metavar="S",
        help="server-side wait for Blender per request, unless params._timeout_seconds "
        f"(default {d['default_timeout']:g})",
    )
    r = s.add_argument_group("router (cr8_engine Socket.IO client)")
    r.add_argument(
        "--engine-url",
        metavar="URL",
        help="connect to the engine at URL, e.g. http://127.0.0.1:8000 or https://engine.example "
        "(default: $WS_URL; none: no router)",
    )
    r.add_argument(
        "--ca-file",
        metavar="PEM",
        help=f"CA certificates trusted besides the system's for an https:// engine (default: ${d['ca_file_env']})",
    )
    r.add_argument(
        "--watchdog-seconds",
        type=float,
        metavar="N",
        help="save and quit N s after the engine is lost for good "
        f"(default: $BLENDWIRE_WATCHDOG_SECONDS or {d['watchdog_seconds']:g}; 0 = never)",
    )
    r.add_argument(
        "--watchdog-after-failures",
        type=int,
        metavar="K",
        help=f"failed connects in a row that arm the watchdog (default {d['watchdog_after_failures']})",
    )
    r.add_argument("--username", help="username in the connect auth (default: $CR8_USERNAME or the login name)")
    r.add_argument(
        "--backoff-initial", type=float, metavar="S", help=f"first retry delay (default {d['backoff_initial']:g})"
    )
    r.add_argument("--backoff-max", type=float, metavar="S", help=f"retry delay cap (default {d['backoff_max']:g})")
    r.add_argument(
        "--backoff-jitter", type=float, metavar="F", help=f"retry delay jitter, 0..1 (default {d['backoff_jitter']:g})"
    )
    r.add_argument(
        "--addon-path",
        action="append",
        metavar="DIR",
        help="load the capability add-ons (packages with addon_ai.json) in DIR; repeatable",
    )
    au = s.add_argument_group("audit log")
    au.add_argument(
        "--audit-log",
        metavar="PATH|off",
        help=f"one JSON line per request, on every listener (default: $BLENDWIRE_AUDIT_LOG or {d['audit_log']}; "
        "off = none); read it with `blendwire audit`",
    )
    au.add_argument(
        "--audit-code",
        metavar="full|hash",
        help="what the log keeps of the code a request runs: full (the code, up to 64 KiB, and its sha256; the "
        "default) or hash (only the sha256)",
    )
    au.add_argument(
        "--audit-max-bytes",
        type=int,
        metavar="N",
        help=f"rotate the log at this size (default {d['audit_max_bytes'] >> 20} MiB; "
        f"{d['audit_keep']} old files are kept)",
    )
    k = s.add_argument_group("checkpoints (kept before every job that may change data)")
    k.add_argument(
        "--checkpoints",
        type=int,
        metavar="N",
        help=f"keep the last N checkpoints (default {d['checkpoints']}; 0 = off)",
    )
    k.add_argument(
        "--checkpoint-bytes",
        type=int,
        metavar="BYTES",
        help=f"and at most this many bytes of them, oldest pruned first (default {d['checkpoint_bytes']})",
    )
    k.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="their folder (default: checkpoints/ in the state directory, $XDG_STATE_HOME/blendwire); "
        "one private folder per Blender process inside it",
    )
    s.set_defaults(func=_cmd_serve)

    st = sub.add_parser(
        "status",
        help="print the status of a running service (and its router)",
        description="Ask a running blendwire service for its status: service, queue, "
        "router state, attempts, watchdog countdown.",
    )
    st.add_argument("--host", default=d["host"])
    st.add_argument("--port", type=int, help=f"default: $BLD_REMOTE_MCP_PORT or {d['port']}")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds (default %(default)s)")
    st.add_argument("--json", action="store_true", help="print the raw status JSON")
    st.set_defaults(func=_cmd_status)

    cn = sub.add_parser(
        "cancel",
        help="cancel a queued or running job by its request id",
        description="Cancel the job(s) a client sent with this request id (`blendwire status` shows "
        "the running job's id): a queued job is dropped, a running one interrupted.",
    )
    cn.add_argument("id", metavar="ID", help="the request id (an integer id as digits)")
    cn.add_argument("--host", default=d["host"])
    cn.add_argument("--port", type=int, help=f"default: $BLD_REMOTE_MCP_PORT or {d['port']}")
    cn.add_argument("--timeout", type=float, default=10.0, help="seconds (default %(default)s)")
    cn.set_defaults(func=_cmd_cancel)

    ls = sub.add_parser(
        "list",
        help="list the running `blendwire serve` instances",
        description="List the Blenders served by `blendwire serve` on this machine for this user (each "
        "announces itself in $XDG_RUNTIME_DIR/blendwire): address, pid, runtime, Blender version, "
        "uptime, whether a token is required, the MCP add-on port and the open .blend file.",
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list (for scripts)")
    ls.set_defaults(func=_cmd_list)

    c = sub.add_parser(
        "call",
        help="send one command and print the response",
        description="Send one command to a running service and print the response JSON.",
    )
    c.add_argument("type", metavar="TYPE", help="command type, e.g. get_scene_info")
    c.add_argument("params", nargs="?", metavar="JSON_PARAMS", help="params as a JSON object")
    c.add_argument("--host", default=d["host"])
    c.add_argument("--port", type=int, help=f"default: $BLD_REMOTE_MCP_PORT or {d['port']}")
    c.add_argument("--timeout", type=float, default=d["client_timeout"], help="seconds (default %(default)s)")
    c.set_defaults(func=_cmd_call)

    cli_trust.add_commands(sub, d)

    m = sub.add_parser(
        "mcp",
        help="serve the Model Context Protocol on stdio or Streamable HTTP (for LLM agents)",
        description="An MCP server over stdin/stdout (or Streamable HTTP with --http) whose tools "
        "(scene and object info, execute_code, viewport screenshot, persist data), resources (scene, objects, "
        "materials, collections, status) and workflow prompt work on the Blender served by `blendwire serve`. "
        "It starts without Blender and connects on the first tool call. Token: $BLENDWIRE_TOKEN.",
    )
    m.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="serve MCP over Streamable HTTP at http://HOST:PORT/mcp instead of stdio (HOST default 127.0.0.1; "
        "0 = a free port, printed on stderr); off loopback only with $BLENDWIRE_TOKEN, sent by clients as "
        "`Authorization: Bearer <token>`",
    )
    m.add_argument("--stdio", action="store_true", help="with --http: serve stdio too (closing stdin stops both)")
    m.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="with --http: also accept browser requests from ORIGIN, scheme://host[:port] (':*' = any port); "
        "loopback origins are always accepted, others refused (403); repeatable",
    )
    m.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="with --http: also accept this Host header (e.g. this machine's name when listening on 0.0.0.0; "
        "the port is implied); the loopback names and the bound address always are; repeatable",
    )
    m.add_argument(
        "--blender-host", help=f"the service's host (default {d['host']}; with no host nor port: see --blender-port)"
    )
    m.add_argument(
        "--blender-port",
        type=int,
        help="the one service to talk to (default: $BLD_REMOTE_MCP_PORT; with neither, every running `blendwire "
        "serve` (see `blendwire list`), picked per call by the tools' `blender` argument, and "
        f"{d['host']}:{d['port']} while none is running)",
    )
    m.add_argument(
        "--timeout",
        type=float,
        default=d["mcp_timeout"],
        help="seconds a tool call may take, response included (default %(default)s)",
    )
    m.add_argument(
        "--connect-timeout",
        type=float,
        default=d["mcp_connect_timeout"],
        help="seconds a call tries to reach Blender before failing (default %(default)s)",
    )
    m.set_defaults(func=_cmd_mcp)

    return p


def main(argv: Sequence[str] | None = None) -> int | None:
    """The `blendwire` command: its exit status (None: 0)."""
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return command(args)
    except Fail as e:
        print(f"blendwire: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130

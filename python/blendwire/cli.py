"""The `blendwire` command: `serve` (Blender with the service, in the foreground) and `call`."""

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from .config import DEFAULT_HOST, env_port

START_TIMEOUT = 60.0  # seconds Blender gets to start the service
STOP_GRACE = 1.5  # seconds Blender gets to exit after each shutdown step before the next one


class _Fail(Exception):
    """A user-facing error: printed as `blendwire: error: ...`, exit status 1."""


def _say(msg):
    print(f"blendwire: {msg}", file=sys.stderr, flush=True)


def _serving_line(host, port, version, mode):
    print(f"blendwire: serving on {host}:{port} (Blender {version}, {mode})", flush=True)


# ---- serve: in-process on the bpy module --------------------------------------------------------


def _serve_bpy(host, port, blend_file, router_settings):
    try:
        import bpy
    except ImportError as e:
        raise _Fail(
            f"--bpy needs the bpy module in this Python ({e}); install it with "
            f"`{sys.executable} -m pip install bpy` (bpy 5.0 needs Python 3.11)"
        ) from None
    from . import blender
    from .errors import PortInUse, ServiceError

    if blend_file:
        bpy.ops.wm.open_mainfile(filepath=blend_file)
    from . import _serve_in_blender as inner

    try:
        host, port = blender.start(host, port, **router_settings.get("service", {}))
    except (PortInUse, ServiceError) as e:
        raise _Fail(f"could not start the service: {e}") from None
    from . import router

    router.setup_logging()
    try:
        router.start_from_serve_settings(router_settings)
    except Exception as e:
        blender.stop()
        raise _Fail(f"could not start the router: {e}") from None
    _serving_line(host, port, ".".join(map(str, bpy.app.version)), "bpy")
    reason = blender.run_until_shutdown()
    _say(f"service stopped ({reason})")
    return inner.exit_status(reason)


# ---- serve: Blender as a child process -----------------------------------------------------------


def _find_blender(path):
    candidate = path or os.environ.get("BLENDER") or "blender"
    found = shutil.which(candidate)
    if not found:
        raise _Fail(
            f"Blender not found ({candidate!r}): install it (e.g. `apt install blender`), "
            "put it on PATH, set $BLENDER or pass --blender PATH; or use --bpy"
        )
    return found


def _child_command(blender_exe, gui, blend_file):
    from . import _serve_in_blender

    # The directory holding the blendwire package. APPENDED to Blender's sys.path so Blender's own
    # modules (bpy, numpy, ...) keep precedence over whatever else lives next to blendwire.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(_serve_in_blender.__file__)))
    boot = (
        f"import sys; p = {pkg_parent!r}; p in sys.path or sys.path.append(p); "
        "import blendwire._serve_in_blender as m; m.main()"
    )
    cmd = [blender_exe] + ([] if gui else ["-b"]) + ([blend_file] if blend_file else [])
    # --python-exit-code: an exception in the bootstrap makes Blender exit non-zero, not idle.
    cmd += ["--python-exit-code", "2", "--python-expr", boot]
    if gui and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        xvfb = shutil.which("xvfb-run")
        if not xvfb:
            raise _Fail("--gui without $DISPLAY needs xvfb-run: install it (`apt install xvfb`) or set DISPLAY")
        cmd = [xvfb, "-a", "-s", "-screen 0 1280x720x24"] + cmd
    return cmd


def _relay(stream, events, markers):
    """Child stdout → our stderr, line by line; marker lines become events instead."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        kind, _, payload = line.partition(" ")
        if kind in markers:
            try:
                events.put((kind, json.loads(payload)))
                continue
            except ValueError:
                pass
        sys.stderr.write(line)
        sys.stderr.flush()
    events.put(("EOF", None))


def _kill_group(proc, timeout=3.0):
    """SIGTERM, then SIGKILL, the child's process group (Blender, and Xvfb under xvfb-run)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass


def _serve_child(host, port, blender_path, gui, blend_file, router_settings):
    from . import _serve_in_blender as inner

    cmd = _child_command(_find_blender(blender_path), gui, blend_file)
    env = dict(os.environ)
    # parent_pid: Blender watches us and stops if we are killed (it runs in its own session).
    env[inner.ENV] = json.dumps({"host": host, "port": port, "parent_pid": os.getpid(), **router_settings})
    # The bootstrap starts the service; an add-on auto-starting one on the same port would collide.
    env.pop("BLD_REMOTE_MCP_START_NOW", None)

    signals = []
    previous = {
        s: signal.signal(s, lambda signum, frame: signals.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True
    )  # our signals must not hit Blender directly
    events = queue.Queue()
    threading.Thread(target=_relay, args=(proc.stdout, events, (inner.READY, inner.ERROR)), daemon=True).start()
    try:
        info = _wait_ready(proc, events, signals)
        if info is None:  # signalled before Blender was ready
            return 0
        _serving_line(info["host"], info["port"], info["blender"], info["mode"])
        return _wait_done(proc, events, signals, info)
    finally:
        _kill_group(proc)  # Blender, or whatever it left in its group (Xvfb); a no-op when all are gone
        for s, h in previous.items():
            signal.signal(s, h)


def _wait_ready(proc, events, signals):
    deadline = time.monotonic() + START_TIMEOUT
    while not signals:
        try:
            # Short timeout so a signal (its handler only appends to `signals`) is seen promptly.
            kind, payload = events.get(timeout=0.1)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise _Fail(
                    f"Blender did not start the service within {START_TIMEOUT:.0f} s (its output is above)"
                ) from None
            continue
        if kind == "BLENDWIRE-READY":
            return payload
        if kind == "BLENDWIRE-ERROR":
            raise _Fail(f"could not start the service: {payload.get('error')}")
        if kind == "EOF":
            raise _Fail(
                f"Blender exited with status {_exit_status(proc)} before the service started (its output is above)"
            )
    return None


def _exit_status(proc):
    """Blender's exit status once its stdout closed (bounded: a child that closed stdout but lives
    on is killed by the caller's cleanup)."""
    try:
        return proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        return "unknown (still running after closing its output)"


def _wait_done(proc, events, signals, info):
    while True:
        if signals:
            name = signal.Signals(signals[0]).name
            _say(f"{name}: shutting down")
            _stop_child(proc, info)
            return 0
        try:
            kind, _ = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if kind == "EOF":
            rc = _exit_status(proc)
            if rc != 0:
                _say(f"Blender exited with status {rc}")
                # Keep Blender's own status when it chose one (3: the watchdog's save failed).
                return rc if isinstance(rc, int) and 0 < rc < 128 else 1
            return 0


def _stop_child(proc, info):
    """Bounded, politest first: server_shutdown; then SIGINT (in -b/bpy it breaks a command that is
    still running); then SIGTERM/SIGKILL to the whole process group."""
    try:
        from .client import Client

        with Client(info["host"], info["port"], timeout=2.0) as c:
            c.call("server_shutdown")
    except Exception as e:  # the child may be gone or stuck; the steps below still end it
        _say(f"server_shutdown failed ({e})")
    for step in ("SIGINT", "kill"):
        try:
            proc.wait(STOP_GRACE)
            return
        except subprocess.TimeoutExpired:
            pass
        if step == "SIGINT" and info.get("mode") != "gui":
            _say("Blender is still busy; interrupting the running command")
            proc.send_signal(signal.SIGINT)
    _say("Blender did not exit; killing it")


def _cmd_serve(args):
    port = args.port if args.port is not None else env_port()
    if not 0 <= port <= 65535:
        raise _Fail(f"--port must be 0..65535 (0 picks a free port), got {port}")
    blend_file = None
    if args.file:
        blend_file = os.path.abspath(args.file)
        if not os.path.isfile(blend_file):
            raise _Fail(f"no such .blend file: {args.file}")
    router_settings = _router_settings(args)
    router_settings["service"] = _service_settings(args)
    if args.bpy:
        if args.gui:
            raise _Fail("--gui needs a Blender executable; the bpy module has no UI (drop --bpy)")
        return _serve_bpy(args.host, port, blend_file, router_settings)
    return _serve_child(args.host, port, args.blender, args.gui, blend_file, router_settings)


def _service_settings(args):
    """Keyword arguments for blendwire.blender.start (checked here, before Blender starts)."""
    limits = {
        "queue_capacity": args.queue_capacity,
        "max_connections": args.max_connections,
        "max_request_bytes": args.max_request_bytes,
        "read_timeout": args.read_timeout,
        "default_timeout": args.default_timeout,
    }
    for name, value in limits.items():
        if value is not None and value <= 0:
            raise _Fail(f"--{name.replace('_', '-')} must be > 0, got {value:g}")
    if args.max_request_bytes is not None and args.max_request_bytes < 1024:
        raise _Fail(f"--max-request-bytes must be at least 1024, got {args.max_request_bytes}")
    return {k: v for k, v in limits.items() if v is not None}


def _router_settings(args):
    """The router part of serve's settings (checked here, so a typo fails before Blender starts)."""
    url = args.engine_url or os.environ.get("WS_URL") or None
    if url and not url.startswith(("http://", "https://", "ws://", "wss://")):
        raise _Fail(f"--engine-url must be the engine's base URL, e.g. http://127.0.0.1:8000, got {url!r}")
    watchdog = args.watchdog_seconds
    if watchdog is None and os.environ.get("BLENDWIRE_WATCHDOG_SECONDS", "").strip():
        try:
            watchdog = float(os.environ["BLENDWIRE_WATCHDOG_SECONDS"])
        except ValueError:
            raise _Fail(
                "$BLENDWIRE_WATCHDOG_SECONDS must be a number of seconds (0 disables the watchdog), "
                f"got {os.environ['BLENDWIRE_WATCHDOG_SECONDS']!r}"
            ) from None
    for name in ("watchdog_seconds", "backoff_initial", "backoff_max", "backoff_jitter"):
        value = watchdog if name == "watchdog_seconds" else getattr(args, name)
        if value is not None and value < 0:
            raise _Fail(f"--{name.replace('_', '-')} must be >= 0, got {value:g}")
    if args.backoff_initial is not None and args.backoff_initial == 0:
        raise _Fail("--backoff-initial must be > 0 (seconds before the first retry)")
    if args.watchdog_after_failures is not None and args.watchdog_after_failures < 1:
        raise _Fail(f"--watchdog-after-failures must be >= 1, got {args.watchdog_after_failures}")
    paths = []
    for folder in args.addon_path or ():
        if not os.path.isdir(folder):
            raise _Fail(f"--addon-path {folder!r} is not a directory")
        paths.append(os.path.abspath(folder))
    if not url and any(
        v is not None
        for v in (
            args.watchdog_seconds,
            args.username,
            args.backoff_initial,
            args.backoff_max,
            args.backoff_jitter,
            args.watchdog_after_failures,
        )
    ):
        raise _Fail("the router options need --engine-url (or $WS_URL)")
    return {
        "engine_url": url,
        "watchdog_seconds": watchdog,
        "username": args.username,
        "addon_paths": paths,
        "backoff_initial": args.backoff_initial,
        "backoff_max": args.backoff_max,
        "backoff_jitter": args.backoff_jitter,
        "watchdog_after_failures": args.watchdog_after_failures,
    }


# ---- status --------------------------------------------------------------------------------------


def _fmt_seconds(value):
    return "-" if value is None else f"{value:.1f} s"


def _cmd_status(args):
    from .client import Client
    from .errors import BlendwireError

    port = args.port if args.port is not None else env_port()
    _probe(args.host, port, args.timeout)
    try:
        with Client(args.host, port, args.timeout) as c:
            st = c.call("get_status")
    except BlendwireError as e:
        raise _Fail(f"{type(e).__name__}: {e}") from None
    if args.json:
        print(json.dumps(st, indent=2), flush=True)
        return 0
    svc, bridge, rt = st.get("service") or {}, st.get("bridge") or {}, st.get("router") or {}
    print(f"blendwire {st.get('version', '?')}, up {_fmt_seconds(st.get('uptime_s'))}")
    print(
        f"service: {'on ' + str(svc.get('host')) + ':' + str(svc.get('port')) if svc.get('running') else 'off'}"
        f", connections {svc.get('connections_open', 0)}, requests {svc.get('requests', 0)}"
    )
    print(
        f"queue: {bridge.get('queue_depth', 0)}/{bridge.get('capacity', '?')}, "
        f"completed {bridge.get('completed', 0)}, failed {bridge.get('failed', 0)}"
    )
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


# ---- call ----------------------------------------------------------------------------------------


def _probe(host, port, timeout):
    # The client retries a refused connection until its timeout (right for scripts riding out a
    # restart); a one-shot command should say at once that nothing listens.
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except ConnectionRefusedError:
        raise _Fail(
            f"nothing is listening on {host}:{port}; start the service with "
            f"`blendwire serve --port {port}` (or check --host/--port, $BLD_REMOTE_MCP_PORT)"
        ) from None
    except OSError:
        pass  # unreachable, timeout...: let the client report it


def _cmd_call(args):
    from .client import Client
    from .errors import BlendwireError

    try:
        params = json.loads(args.params) if args.params else {}
    except ValueError as e:
        raise _Fail(f'JSON_PARAMS is not valid JSON ({e}); e.g. \'{{"name": "Cube"}}\'') from None
    if not isinstance(params, dict):
        raise _Fail('JSON_PARAMS must be a JSON object, e.g. \'{"name": "Cube"}\'')
    port = args.port if args.port is not None else env_port()
    _probe(args.host, port, args.timeout)
    try:
        with Client(args.host, port, args.timeout) as c:
            response = c.request({"type": args.type, "params": params})
    except BlendwireError as e:
        raise _Fail(f"{type(e).__name__}: {e}") from None
    if response.get("status") == "error":
        code = response.get("error_code")
        raise _Fail(f"{response.get('message')}" + (f" [{code}]" if code else ""))
    print(json.dumps(response, indent=2, ensure_ascii=False), flush=True)
    return 0


# ---- mcp -----------------------------------------------------------------------------------------


def _cmd_mcp(args):
    from . import _core

    port = args.blender_port if args.blender_port is not None else env_port()
    if not 1 <= port <= 65535:
        raise _Fail(f"--blender-port must be 1..65535, got {port}")
    for name in ("timeout", "connect_timeout"):
        if not getattr(args, name) > 0:
            raise _Fail(f"--{name.replace('_', '-')} must be > 0 seconds")
    # stdout is the MCP protocol: everything else goes to stderr. Blender need not run yet:
    # tools connect on their first call.
    try:
        _core.run_mcp_stdio(
            args.blender_host,
            port,
            timeout=args.timeout,
            connect_timeout=args.connect_timeout,
            token=os.environ.get("BLENDWIRE_TOKEN") or None,
        )
    except RuntimeError as e:
        raise _Fail(str(e)) from None
    return 0


# ---- entry point ---------------------------------------------------------------------------------


def _parser():
    p = argparse.ArgumentParser(
        prog="blendwire",
        description="Blender with a BLD-Remote-compatible command service (serve), and a client (call).",
    )
    p.add_argument("--version", action="version", version=f"blendwire {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve",
        help="run Blender with the command service, in the foreground",
        description="Start Blender with the BLD-Remote-compatible command service and "
        "stay in the foreground until server_shutdown, Ctrl-C or SIGTERM.",
    )
    s.add_argument("file", nargs="?", metavar="FILE.blend", help="a .blend file to open")
    s.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    s.add_argument("--port", type=int, help="port (default: $BLD_REMOTE_MCP_PORT or 6688; 0 = a free port)")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--blender", metavar="PATH", help="Blender executable (default: $BLENDER or blender on PATH)")
    which.add_argument("--bpy", action="store_true", help="run in this process on the bpy module")
    s.add_argument("--gui", action="store_true", help="run Blender with its UI (under xvfb-run if $DISPLAY is unset)")
    lim = s.add_argument_group("service limits")
    lim.add_argument("--queue-capacity", type=int, metavar="N", help="main-thread queue bound (default 1024)")
    lim.add_argument("--max-connections", type=int, metavar="N", help="open connections at most (default 256)")
    lim.add_argument("--max-request-bytes", type=int, metavar="N", help="request size limit (default 64 MiB)")
    lim.add_argument(
        "--read-timeout", type=float, metavar="S", help="seconds for a request to arrive whole (default 30)"
    )
    lim.add_argument(
        "--default-timeout",
        type=float,
        metavar="S",
        help="server-side wait for Blender per request, unless params._timeout_seconds (default 30)",
    )
    r = s.add_argument_group("router (cr8_engine Socket.IO client)")
    r.add_argument(
        "--engine-url",
        metavar="URL",
        help="connect to the engine at URL, e.g. http://127.0.0.1:8000 (default: $WS_URL; none: no router)",
    )
    r.add_argument(
        "--watchdog-seconds",
        type=float,
        metavar="N",
        help="save and quit N s after the engine is lost for good "
        "(default: $BLENDWIRE_WATCHDOG_SECONDS or 300; 0 = never)",
    )
    r.add_argument(
        "--watchdog-after-failures",
        type=int,
        metavar="K",
        help="failed connects in a row that arm the watchdog (default 5)",
    )
    r.add_argument("--username", help="username in the connect auth (default: $CR8_USERNAME or the login name)")
    r.add_argument("--backoff-initial", type=float, metavar="S", help="first retry delay (default 2)")
    r.add_argument("--backoff-max", type=float, metavar="S", help="retry delay cap (default 10)")
    r.add_argument("--backoff-jitter", type=float, metavar="F", help="retry delay jitter, 0..1 (default 0.5)")
    r.add_argument(
        "--addon-path",
        action="append",
        metavar="DIR",
        help="load the capability add-ons (packages with addon_ai.json) in DIR; repeatable",
    )
    s.set_defaults(func=_cmd_serve)

    st = sub.add_parser(
        "status",
        help="print the status of a running service (and its router)",
        description="Ask a running blendwire service for its status: service, queue, "
        "router state, attempts, watchdog countdown.",
    )
    st.add_argument("--host", default=DEFAULT_HOST)
    st.add_argument("--port", type=int, help="default: $BLD_REMOTE_MCP_PORT or 6688")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds (default %(default)s)")
    st.add_argument("--json", action="store_true", help="print the raw status JSON")
    st.set_defaults(func=_cmd_status)

    c = sub.add_parser(
        "call",
        help="send one command and print the response",
        description="Send one command to a running service and print the response JSON.",
    )
    c.add_argument("type", metavar="TYPE", help="command type, e.g. get_scene_info")
    c.add_argument("params", nargs="?", metavar="JSON_PARAMS", help="params as a JSON object")
    c.add_argument("--host", default=DEFAULT_HOST)
    c.add_argument("--port", type=int, help="default: $BLD_REMOTE_MCP_PORT or 6688")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds (default %(default)s)")
    c.set_defaults(func=_cmd_call)

    m = sub.add_parser(
        "mcp",
        help="serve the Model Context Protocol on stdio (for LLM agents)",
        description="An MCP server over stdin/stdout whose tools (scene and object info, "
        "execute_code, viewport screenshot, persist data) run in the Blender "
        "served by `blendwire serve`. It starts without Blender and connects "
        "on the first tool call. Token: $BLENDWIRE_TOKEN.",
    )
    m.add_argument("--blender-host", default=DEFAULT_HOST, help="the service's host (default %(default)s)")
    m.add_argument("--blender-port", type=int, help="the service's port (default: $BLD_REMOTE_MCP_PORT or 6688)")
    m.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a tool call may take, response included (default %(default)s)",
    )
    m.add_argument(
        "--connect-timeout",
        type=float,
        default=2.0,
        help="seconds a call tries to reach Blender before failing (default %(default)s)",
    )
    m.set_defaults(func=_cmd_mcp)
    return p


def _version():
    try:
        from . import _core

        return _core.__version__
    except ImportError:
        return "unknown (native module missing)"


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except _Fail as e:
        print(f"blendwire: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130

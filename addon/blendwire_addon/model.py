"""What the add-on's UI shows and checks, without bpy: preference validation and the status panel
rows. Pure functions of plain values, so tests can check them against `blendwire.status()` and the
panel's draw() only lays the rows out. The rules the core has (the token rule for hosts, queue
size, engine URL, watchdog, log level) are the core's: this module asks it and names the
preference."""

import socket

from blendwire import _core

__all__ = [
    "LOG_LEVELS",
    "PORT_RANGE",
    "QUEUE_RANGE",
    "Row",
    "TICK_BUDGET_RANGE",
    "USERNAME_MAX",
    "WATCHDOG_RANGE",
    "log_level",
    "main_thread_text",
    "port_problem",
    "router_rows",
    "service_rows",
    "validate",
]

# Property bounds of the preferences (the UI's own: blender-remote's ports, a week of watchdog).
PORT_RANGE = (1024, 65535)  # as blender-remote: below 1024 needs root
QUEUE_RANGE = (1, 1_000_000)
TICK_BUDGET_RANGE = (0.5, 100.0)  # ms per UI turn; more makes the UI stutter
WATCHDOG_RANGE = (0.0, 7 * 24 * 3600.0)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
USERNAME_MAX = 64

# The preference a core setting is shown as.
_LABELS = {
    "host": "Host",
    "port": "Port",
    "mcp_addon_port": "MCP add-on port",
    "token": "Token",
    "queue_capacity": "Queue size",
    "url": "Engine URL",
    "watchdog_seconds": "Watchdog (s)",
    "ca_file": "CA file",
}


def _sentences(problems):
    return [f"{_LABELS.get(name, name)} {text}." for name, text in problems]


def sentences(problems):
    """The core's (setting, rule) problems as sentences naming the preferences."""
    return _sentences(problems)


def sentence(core_error):
    """A core ValueError text ("setting rule ...") as a sentence naming the preference."""
    name, _, rest = core_error.partition(" ")
    return f"{_LABELS.get(name, name)} {rest}." if rest and name.isidentifier() else core_error


def validate(s):
    """Problems with the settings `s` (attributes as the preferences), as sentences for the UI.
    Empty list: the service (and the router, if an engine URL is set) can start with them."""
    problems = []
    host = (s.host or "").strip()
    token = s.token or ""
    if not host:
        problems.append("Host is empty: use 127.0.0.1 for this machine only.")
    elif any(c.isspace() for c in host):
        problems.append(f"Host {host!r} contains spaces.")
    lo, hi = PORT_RANGE
    if not lo <= int(s.port) <= hi:
        problems.append(f"Port {s.port} is out of range: use {lo}-{hi}.")
    if token and token != token.strip():
        problems.append("Token starts or ends with spaces (clients would have to send them too).")
    problems += _sentences(
        _core.check_service_settings(
            host=host if host and not any(c.isspace() for c in host) else None,
            queue_capacity=int(s.queue_size),
            token=token.strip() or None,
        )
    )
    lo, hi = TICK_BUDGET_RANGE
    if not lo <= float(s.tick_budget_ms) <= hi:
        problems.append(f"Tick budget {s.tick_budget_ms} ms is out of range: use {lo}-{hi} ms.")
    lo, hi = WATCHDOG_RANGE
    if not lo <= float(s.watchdog_seconds) <= hi:
        problems.append(f"Watchdog {s.watchdog_seconds} s is out of range: use 0 (never) to {hi:.0f} s.")
    url = (s.engine_url or "").strip()
    if url:
        problem = _core.check_engine_url(url)
        if problem:
            problems.append(f"Engine URL {problem}.")
    ca_file = (getattr(s, "ca_file", "") or "").strip()
    if ca_file:
        problem = _core.check_ca_file(bpy_abspath(ca_file))
        if problem:
            problems.append(f"CA file {problem}.")
    name = s.username or ""
    if len(name) > USERNAME_MAX or any(c.isspace() or not c.isprintable() for c in name):
        problems.append(f"Username must be at most {USERNAME_MAX} characters without spaces.")
    level = getattr(s, "log_level", "ENV")
    if level not in ("ENV",) + LOG_LEVELS:
        problems.append(f"Log level {level!r} is not one of {', '.join(LOG_LEVELS)}.")
    return problems


def bpy_abspath(path):
    """A preference path as a file path: Blender's `//` (relative to the .blend) resolved when bpy is
    there (FILE_PATH properties may give one)."""
    try:
        import bpy
    except ImportError:
        return path
    return bpy.path.abspath(path)


def port_problem(host, port):
    """A sentence if (host, port) cannot be bound right now (taken, or a host not on this
    machine), else None. Checked before starting, so the UI names the cause."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"Host {host!r} cannot be resolved ({e})."
    family, _, _, _, addr = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the service binds
        sock.bind(addr)
    except OSError as e:
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            return f"Port {port} on {host} is taken by another program: choose another port."
        return f"Cannot listen on {host}:{port}: {e.strerror or e}."
    finally:
        sock.close()
    return None


def log_level(setting, env_value):
    """The effective level name: the preference, or for "ENV" the environment's
    BLD_REMOTE_LOG_LEVEL as the core reads it (INFO when unset or unknown)."""
    if setting in LOG_LEVELS:
        return setting
    try:
        return _core.log_level_name(env_value) if env_value else "INFO"
    except ValueError:
        return "INFO"


# ---- the status panel ------------------------------------------------------------------------


class Row(tuple):
    """One label of the panel: key (stable, for tests), text, icon, alert, value (the number or
    string from the status the text shows)."""

    __slots__ = ()

    def __new__(cls, key, text, icon="NONE", alert=False, value=None):
        return super().__new__(cls, (key, text, icon, alert, value))

    key = property(lambda self: self[0])
    text = property(lambda self: self[1])
    icon = property(lambda self: self[2])
    alert = property(lambda self: self[3])
    value = property(lambda self: self[4])


def error_count(service):
    errors = service.get("errors")
    return sum(errors.values()) if isinstance(errors, dict) else int(errors or 0)


def service_rows(st):
    svc, bridge = st.get("service") or {}, st.get("bridge") or {}
    if svc.get("running"):
        address = f"{svc.get('host')}:{svc.get('port')}"
        rows = [Row("service", f"On: {address}", "LINKED", value=address)]
    else:
        rows = [Row("service", "Service: off", "UNLINKED", value=None)]
    latency = bridge.get("last_latency_ms")
    rows += [
        Row("clients", f"Clients: {svc.get('connections_open', 0)}", value=svc.get("connections_open", 0)),
        Row("calls", f"Calls served: {svc.get('requests', 0)}", value=svc.get("requests", 0)),
        Row("errors", f"Errors: {error_count(svc)}", alert=error_count(svc) > 0, value=error_count(svc)),
        Row(
            "queue",
            f"Queue: {bridge.get('queue_depth', 0)} / {bridge.get('capacity', '?')}",
            value=bridge.get("queue_depth", 0),
        ),
        Row("latency", "Last latency: -" if not latency else f"Last latency: {latency:.2f} ms", value=latency),
    ]
    main = st.get("main_thread") or {}
    rows.append(
        Row(
            "main_thread",
            main_thread_text(main),
            alert=bool(main.get("interrupt_pending")),
            value=main.get("command") if main.get("state") == "running" else "idle",
        )
    )
    return rows


def main_thread_text(main):
    """ "Main thread: idle", or "Running execute_code 12 s" (and "(interrupting)" once its deadline
    passed): the status's `main_thread` object in words."""
    if main.get("state") != "running":
        return "Main thread: idle"
    text = f"Running {main.get('command')} {main.get('running_s') or 0:.0f} s"
    return text + " (interrupting)" if main.get("interrupt_pending") else text


def router_rows(st):
    rt = st.get("router") or {}
    state = rt.get("state", "stopped")
    if state == "stopped":
        return [Row("router", "Engine: off", "UNLINKED", value=state)]
    rows = [
        Row("router", f"Engine: {state}", "LINKED" if state == "connected" else "TIME", value=state),
        Row(
            "attempts",
            f"Attempts: {rt.get('attempts', 0)} (failed in a row: {rt.get('consecutive_failures', 0)})",
            value=rt.get("attempts", 0),
        ),
    ]
    watchdog = rt.get("watchdog_s")
    if watchdog is not None:
        rows.append(Row("watchdog", f"Saving and quitting in {watchdog:.0f} s", "ERROR", alert=True, value=watchdog))
    else:
        rows.append(Row("watchdog", "Watchdog: not armed", value=None))
    rows.append(
        Row(
            "router_commands",
            f"Commands: {rt.get('commands_completed', 0)} ok, {rt.get('commands_failed', 0)} failed",
            value=rt.get("commands_completed", 0),
        )
    )
    if rt.get("queued_replies"):
        rows.append(Row("replies", f"Replies waiting: {rt['queued_replies']}", value=rt["queued_replies"]))
    return rows

"""The benches' server processes: start them (`blendwire serve` through its ready handshake, the
peer, Blenders that print a marker), find everything under them, and stop every one, always."""

import json
import os
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_tests"))
import bw_net
import bw_wait
from bench_clients import SCENE, VENV_BIN, is_success, oneshot
from blendwire import process


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def proc_alive(pid, comm):
    """`pid` still runs as `comm` (a zombie counts as gone)."""
    if proc_comm(pid) != comm:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cpu_seconds(pids):
    """utime+stime of these processes (all their threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


LIVE_SERVERS = []  # every Server started and not yet stopped: the final `finally` stops them


def machine_busy_seconds():
    """Busy CPU seconds of the whole machine, all cores (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process started in its own session; stop() ends it and everything under it.
    Ready (`_ready` set) at the first stdout line that `is_ready(line)` accepts, or that starts with
    `ready_prefix`."""

    def __init__(self, name, cmd, env=None, log_path=None, ready_prefix=None, is_ready=None):
        self.name = name
        self.is_ready = is_ready or (lambda line: line.startswith(ready_prefix))
        self.stopped = False
        self.cmd = cmd
        self.log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, env=env, start_new_session=True
        )
        LIVE_SERVERS.append(self)
        self.known = {self.proc.pid: proc_comm(self.proc.pid)}
        self.lines = []
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if self.log is not subprocess.DEVNULL:
                try:
                    self.log.write(b"[stdout] " + raw)
                    self.log.flush()
                except ValueError:
                    return
            if not self._ready.is_set() and self.is_ready(line):
                self.ready_line = line
                self._ready.set()

    def remember_tree(self):
        if self.proc.poll() is None:  # its name at Popen time may be ours (fork before exec)
            self.known[self.proc.pid] = proc_comm(self.proc.pid)
        for pid in process.descendants(self.proc.pid):
            if pid not in self.known:
                self.known[pid] = proc_comm(pid)

    def blender_pids(self):
        self.remember_tree()
        return [p for p, c in self.known.items() if c.startswith("blender") and proc_comm(p) == c]

    def stop(self, shutdown_port=None, grace=10.0):
        if self.stopped:
            return
        self.stopped = True
        self.remember_tree()
        if self.proc.poll() is None and shutdown_port:
            try:
                oneshot(shutdown_port, b'{"type": "server_shutdown", "params": {}}')
            except Exception:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.remember_tree()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is still alive from what we saw under it (Blender, xvfb-run, Xvfb), checked by
        # pid and name so a reused pid is never hit: its own group if it leads one, then itself.
        for pid, comm in self.known.items():
            if pid == self.proc.pid or proc_comm(pid) != comm:
                continue
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # Killed processes whose parent went first are reaped by init a moment later: wait for
        # that, so the next workload (and the "other Blender processes" count) starts clean.
        bw_wait.poll_until(lambda: not any(proc_alive(p, c) for p, c in self.known.items()), 10.0, interval=0.02)
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)


def start_blendwire(gui, log_path, timeout=90.0, package=None, extra=(), env=None):
    """`blendwire serve --ready-json --port 0 [--gui] EXTRA`, `.ready` its handshake (`.port` its
    port); `package`: a directory holding another build's `blendwire` package (an unpacked wheel,
    one that has --ready-json), served instead of the venv's."""
    cmd = [os.path.join(VENV_BIN, "blendwire")]
    if package:
        boot = f"import sys; sys.path.insert(0, {package!r}); from blendwire.cli import main; sys.exit(main())"
        cmd = [sys.executable, "-c", boot]
    cmd = process.serve_argv("gui" if gui else "background", 0, extra, launcher=cmd)
    env = dict(os.environ if env is None else env)
    env.pop("BLD_REMOTE_MCP_START_NOW", None)
    srv = Server(
        "blendwire-gui" if gui else "blendwire",
        cmd,
        env,
        log_path,
        is_ready=lambda line: process.parse_ready(line) is not None,
    )
    if not srv._ready.wait(timeout):
        srv.stop()
        raise RuntimeError(f"{cmd} did not print its ready handshake within {timeout:.0f} s (log: {log_path})")
    srv.ready = process.parse_ready(srv.ready_line)
    srv.port = srv.ready.port
    srv.banner = srv.ready_line.strip()  # the handshake, kept in the results' meta
    srv.remember_tree()
    return srv


def under_xvfb(cmd):
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return cmd
    return ["xvfb-run", "-a", "-s", "-screen 0 1280x720x24"] + cmd  # as `blendwire serve --gui`


def start_marked(name, cmd, prefix, log_path, env=None, timeout=90.0):
    """A Blender that prints a line starting with prefix when ready (plain Blender, the stand-in)."""
    srv = Server(name, cmd, env or dict(os.environ), log_path, ready_prefix=prefix)
    if not srv._ready.wait(timeout):
        srv.stop()
        raise RuntimeError(f"{name} did not print {prefix!r} within {timeout:.0f} s (log: {log_path})")
    srv.remember_tree()
    return srv


def bridge_status(port):
    try:
        resp = oneshot(port, b'{"type": "get_status", "params": {}}')
        b = resp["result"]["bridge"]
        return {k: b.get(k) for k in ("max_tick_ms", "max_job_ms", "completed")}
    except Exception as e:
        return {"error": repr(e)}


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def peer_script():
    """What `blender-remote-cli start --background` writes to its temp script, plus two lines that
    load the add-on from the wheel instead of from an installed user config."""
    import blender_remote
    from blender_remote.cli.scripts import KEEPALIVE_SCRIPT

    addon_parent = os.path.join(os.path.dirname(blender_remote.__file__), "addon")
    load = (
        "import sys, addon_utils\n"
        f"sys.path.insert(0, {addon_parent!r})\n"
        "if addon_utils.enable('bld_remote_mcp', default_set=True) is None:\n"
        "    raise SystemExit('bench: could not enable bld_remote_mcp')\n"
    )
    # Verbatim from blender_remote/cli/commands/start.py (its startup code), then KEEPALIVE_SCRIPT.
    cli_startup = """
# Verify MCP environment configuration
import os
port = os.environ.get('BLD_REMOTE_MCP_PORT', 'not set')
start_now = os.environ.get('BLD_REMOTE_MCP_START_NOW', 'not set')
log_level = os.environ.get('BLD_REMOTE_LOG_LEVEL', 'not set')

print("[INFO] Environment: PORT=" + str(port) + ", START_NOW=" + str(start_now) + ", LOG_LEVEL=" + str(log_level))
print("[INFO] MCP service will start via addon auto-start mechanism")
"""
    return "\n".join([load, cli_startup, KEEPALIVE_SCRIPT])


def start_peer(blender, log_path, script_path, timeout=90.0):
    port = bw_net.free_port()
    with open(script_path, "w") as f:
        f.write(peer_script())
    env = dict(os.environ)
    env["BLD_REMOTE_MCP_PORT"] = str(port)
    env["BLD_REMOTE_MCP_START_NOW"] = "1"
    env["BLD_REMOTE_LOG_LEVEL"] = "INFO"  # the CLI's default (mcp_service.log_level or INFO)
    srv = Server("peer", [blender, "--background", "--python", script_path], env, log_path)
    srv.port = port

    def answers():  # ready = a get_scene_info answered (needs the keep-alive loop to be stepping)
        if srv.proc.poll() is not None:
            raise RuntimeError(f"peer Blender exited with {srv.proc.returncode} (log: {log_path})")
        try:
            return is_success(oneshot(port, json.dumps(SCENE).encode()))
        except OSError:
            return False

    try:
        bw_wait.wait_for(answers, timeout, f"the peer to answer (log: {log_path})", interval=0.2, error=RuntimeError)
    except BaseException:
        srv.stop()
        raise
    srv.remember_tree()
    return srv

"""A horizontally scaled cr8_engine and a fleet of Blenders, all real processes, for test_fleet.py
and scripts/fleet.

- `Redis`: Debian's `redis-server` on a free port, no persistence, in a temporary folder.
- `Node`: one engine node (fleet_node.py, a subprocess: SIGKILL is real), a python-socketio
  AsyncServer with `AsyncRedisManager` on that Redis; records what it sees (JSON lines, as
  engine_peer.py) and emits to rooms or sids anywhere in the fleet.
- `Balancer`: Debian's `haproxy` in front of the nodes, round robin, websocket proxying, listening
  on a plain-http port and on a TLS port (certificate from certs.py, made with the test's own CA).
  The router speaks Socket.IO over websocket only, so no sticky sessions are needed.
- `Fleet`: all of it plus N Blenders (`blendwire serve --bpy`, the lightest runtime), each with its
  own username (so its own room, `user:<name>`) and recovery folder; delivers commands as an engine
  does (to a room or sid through a chosen node, again with the same message_id until answered)
  and checks that each ran once and was answered once; measures reconnect times and idle cost.

The engine URL's scheme is one parameter (`scheme`, default `DEFAULT_SCHEME`): "http" goes to the
balancer's plain port, "https" to its TLS port; the Blenders always get BLENDWIRE_CA_FILE.

Standard library only on the test side (the nodes need the venv's socketio, aiohttp and redis).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bwtest
import certs
from fleet_node import FLEET_ROOM, user_room  # stdlib-only at import: socketio loads in its main()
from jsonl_peer import RecordingProcess

__all__ = [
    "ADDON_ID",
    "DEFAULT_SCHEME",
    "FLEET_ROOM",
    "Balancer",
    "Blender",
    "Delivery",
    "Fleet",
    "FleetSettings",
    "Node",
    "Redis",
    "command",
    "engine_io_open",
    "missing_programs",
    "percentile",
    "user_room",
]

HERE = Path(__file__).resolve().parent
NODE_SCRIPT = HERE / "fleet_node.py"
ADDONS = HERE / "fixtures" / "addons"
ADDON_ID = "bw_test_capability"
HOST = bwtest.HOST
# As a hosted cr8_engine is reached: over TLS, terminated by the balancer ("http": its plain port).
DEFAULT_SCHEME = "https"
START_TIMEOUT = 30.0
# The Debian packages scripts/setup installs for the fleet, by the program each provides.
PROGRAMS = {"redis-server": "redis-server", "haproxy": "haproxy", "openssl": "openssl"}


def which(program: str) -> str | None:
    """`program` on PATH, or in /usr/sbin (haproxy's home, not on a normal user's PATH)."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


def missing_programs() -> list[str]:
    """The Debian packages whose programs are not found (scripts/setup installs them)."""
    return [pkg for prog, pkg in PROGRAMS.items() if which(prog) is None]


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0..100) by nearest rank; values must not be empty."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def engine_io_open(url: str, cafile: Path | None = None, timeout: float = 10.0) -> dict:
    """Open a Socket.IO websocket at `url` (http or https, as the router does: Engine.IO 4,
    websocket transport) and return the Engine.IO open packet the node sends first. https trusts
    `cafile` only (None: the system's store) and checks the host name; ssl.SSLError if it fails."""
    import base64
    import ssl
    from urllib.parse import urlsplit

    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {u.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 6:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, frame = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " not in status + " ":
            raise AssertionError(f"no websocket upgrade at {url}: {status!r}")
        # One unmasked text frame (opcode 1): its length is 7 bits, or 16 bits after 126.
        n, at = frame[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(frame[2:4], "big"), 4
        while len(frame) < at + n:
            chunk = sock.recv(4096)
            if not chunk:
                break
            frame += chunk
        packet = frame[at : at + n].decode()
        if not packet.startswith("0"):
            raise AssertionError(f"expected the Engine.IO open packet at {url}, got {packet!r}")
        return json.loads(packet[1:])
    finally:
        sock.close()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class Redis(bwtest.ChildProcess):
    """redis-server on 127.0.0.1 (a free port), nothing saved, its folder a temporary one."""

    def __init__(self, folder: Path):
        super().__init__("redis-server")
        self.folder = folder
        self.port = bwtest.free_port()
        self.url = f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = START_TIMEOUT) -> Redis:
        self.folder.mkdir(parents=True, exist_ok=True)
        exe = which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: scripts/setup installs it (Debian package redis-server)")
        self._spawn(
            [exe, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--daemonize", "no", "--loglevel", "warning"],
        )  # fmt: skip
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        bwtest.wait_for(lambda: not self.running or self._pong(), timeout, f"redis-server on port {self.port}")
        if not self.running:
            raise AssertionError(f"redis-server exited ({self.proc.returncode})\n{self.tail()}")
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class Node(RecordingProcess):
    """One engine node (fleet_node.py) on a fixed port; start()/kill() again and again."""

    def __init__(self, name: str, redis_url: str, python: str | None = None):
        super().__init__(f"node {name}")
        self.node_name = name
        self.redis_url = redis_url
        self.port = bwtest.free_port()
        self.python = python or sys.executable

    def start(self, timeout: float = START_TIMEOUT) -> Node:
        self._start_recording(
            [self.python, str(NODE_SCRIPT), "--port", str(self.port), "--redis-url", self.redis_url,
             "--name", self.node_name],
            timeout,
            f"port {self.port}",
        )  # fmt: skip
        return self

    def emit(self, event: str, data: Any, room: str | None) -> None:
        """Emit through this node (and the Redis manager) to `room`: a room name or a sid."""
        self.send({"op": "emit", "event": event, "data": data, "room": room})


class Balancer(bwtest.ChildProcess):
    """haproxy: a plain-http port and a TLS port (the certificate of `cert`), round robin over the
    nodes, each checked every 300 ms so a dead node is out of rotation at once; a connection that
    finds its node gone is sent to another (redispatch)."""

    def __init__(self, folder: Path, nodes: list[Node], cert: certs.Cert):
        super().__init__("haproxy")
        self.folder = folder
        self.nodes = nodes
        self.cert = cert
        self.http_port = bwtest.free_port()
        self.https_port = bwtest.free_port()

    def url(self, scheme: str) -> str:
        if scheme not in ("http", "https"):
            raise ValueError(f"engine URL scheme {scheme!r}: use http or https")
        return f"{scheme}://{HOST}:{self.http_port if scheme == 'http' else self.https_port}"

    def config(self) -> str:
        pem = self.folder / "haproxy.pem"  # haproxy wants certificate, chain and key in one file
        pem.write_text(self.cert.chain.read_text() + self.cert.key.read_text())
        servers = "\n".join(
            f"    server {n.node_name} {HOST}:{n.port} check inter 300ms fall 1 rise 1" for n in self.nodes
        )
        return f"""\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    # A websocket is a tunnel once upgraded.
    timeout tunnel 1h
    retries 2
    option redispatch 1
frontend engine
    bind {HOST}:{self.http_port}
    bind {HOST}:{self.https_port} ssl crt {pem}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""

    def start(self, timeout: float = START_TIMEOUT) -> Balancer:
        exe = which("haproxy")
        if exe is None:
            raise RuntimeError("haproxy not found: scripts/setup installs it (Debian package haproxy)")
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "haproxy.cfg"
        cfg.write_text(self.config())
        check = subprocess.run([exe, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise AssertionError(f"haproxy refuses {cfg}:\n{check.stdout}{check.stderr}")
        self._spawn([exe, "-db", "-f", str(cfg)])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        bwtest.wait_for(
            lambda: not self.running or (_tcp_open(self.http_port) and _tcp_open(self.https_port)),
            timeout,
            "haproxy listening",
        )
        if not self.running:
            raise AssertionError(f"haproxy exited ({self.proc.returncode})\n{self.tail()}")
        return self


@dataclass
class Blender:
    """One `blendwire serve --bpy` of the fleet."""

    username: str
    serve: bwtest.ServeProcess
    recovery: Path

    def status(self) -> dict:
        return bwtest.assert_success(bwtest.request(self.serve.port, "get_status", timeout=10))

    def router(self) -> dict:
        return self.status()["router"]

    def log(self) -> str:
        return "\n".join(self.serve.stderr_lines)

    def markers(self) -> list[str]:
        """The names of the BW_ objects in its scene (what the fleet's commands made)."""
        code = "import json\nprint(json.dumps(sorted(o.name for o in bpy.data.objects if o.name.startswith('BW_'))))"
        return json.loads(bwtest.stdout_of(bwtest.assert_success(bwtest.execute(self.serve.port, code))))

    def pids(self) -> list[int]:
        return [self.serve.proc.pid] + bwtest.descendants(self.serve.proc.pid)


@dataclass
class FleetSettings:
    size: int = 12
    scheme: str = DEFAULT_SCHEME
    # Quick enough for a test, slow enough that the jitter shows: a dropped Blender retries after
    # 0.5 s ±50 %, and the watchdog arms after 5 failures (about 3.5 s into a total outage).
    backoff_initial: float = 0.5
    backoff_max: float = 1.0
    backoff_jitter: float = 0.5
    watchdog: float = 12.0  # the whole engine returns within it in a test, however loaded the machine
    nodes: int = 2


@dataclass
class Delivery:
    """What an engine delivered: per message_id, who had to run it, and what came back."""

    expected: dict[str, set[str]] = field(default_factory=dict)  # message_id -> usernames
    sent: dict[tuple[str, str], int] = field(default_factory=dict)  # (message_id, username) -> emits
    emits: int = 0

    def add(self, message_id: str, usernames: set[str]) -> None:
        self.expected[message_id] = set(usernames)

    def sent_to(self, message_id: str, usernames: set[str]) -> None:
        """One emit of `message_id` whose audience was `usernames`."""
        self.emits += 1
        for u in usernames:
            self.sent[(message_id, u)] = self.sent.get((message_id, u), 0) + 1


class Fleet:
    """Redis, the nodes, the balancer and the Blenders; `close()` stops everything still running."""

    def __init__(self, settings: FleetSettings | None = None, folder: Path | None = None):
        self.settings = settings or FleetSettings()
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="blendwire-fleet-"))
        self.redis = Redis(self.folder / "redis")
        self.nodes = [Node(f"n{i + 1}", self.redis.url) for i in range(self.settings.nodes)]
        self.ca = certs.make_ca(self.folder / "certs")
        self.cert = certs.make_cert(self.folder / "certs", self.ca, "engine", [HOST, "localhost"])
        self.balancer = Balancer(self.folder / "haproxy", self.nodes, self.cert)
        self.blenders: list[Blender] = []
        self._seq = 0

    @property
    def engine_url(self) -> str:
        return self.balancer.url(self.settings.scheme)

    # -- lifecycle

    def start_engine(self) -> None:
        if not self.redis.running:
            self.redis.start()
        for n in self.nodes:
            if not n.running:
                n.start()
        if not self.balancer.running:
            self.balancer.start()

    def start_blenders(self, n: int | None = None, timeout: float = bwtest.START_TIMEOUT) -> None:
        """Start the Blenders all at once, then wait for each to serve and to be connected."""
        s = self.settings
        started = []
        for i in range(len(self.blenders), len(self.blenders) + (n or s.size)):
            username = f"fleet-{i:02d}"
            recovery = self.folder / "recovery" / username
            args = ["--port", "0", "--bpy", "--engine-url", self.engine_url, "--username", username,
                    "--addon-path", str(ADDONS), "--watchdog-seconds", str(s.watchdog),
                    "--backoff-initial", str(s.backoff_initial), "--backoff-max", str(s.backoff_max),
                    "--backoff-jitter", str(s.backoff_jitter)]  # fmt: skip
            env = {"CR8_AUTH_TOKEN": "fleet-token", "BLENDWIRE_CA_FILE": str(self.ca.pem),
                   "BLENDWIRE_RECOVERY_DIR": str(recovery)}  # fmt: skip
            started.append(Blender(username, bwtest.ServeProcess(args, env=env), recovery))
        self.blenders += started
        for b in started:
            b.serve.wait_serving(timeout)
        self.wait_connected({b.username for b in started}, since=0.0, timeout=timeout)

    def close(self) -> None:
        for b in self.blenders:
            if b.serve.proc.poll() is None:
                b.serve.kill()
        for p in (self.balancer, *self.nodes, self.redis):
            p.kill()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def by_name(self, username: str) -> Blender:
        return next(b for b in self.blenders if b.username == username)

    # -- what the nodes saw

    def records(self, pred: Callable[[dict], bool] = lambda r: True) -> list[dict]:
        out = [r for n in self.nodes for r in n.find(pred)]
        out.sort(key=lambda r: r["t"])
        return out

    def connects(self, since: float = 0.0) -> list[dict]:
        return self.records(lambda r: r["kind"] == "connect" and r["t"] >= since)

    def placement(self) -> dict[str, tuple[str, str]]:
        """username -> (node, sid) of its latest connect (disconnects not taken into account)."""
        return {r["username"]: (r["node"], r["sid"]) for r in self.connects()}

    def on_node(self, node: Node) -> set[str]:
        return {u for u, (n, _) in self.placement().items() if n == node.node_name}

    def first_connect_after(self, since: float) -> dict[str, float]:
        """username -> time of its first connect at or after `since`."""
        out: dict[str, float] = {}
        for r in self.connects(since):
            out.setdefault(r["username"], r["t"])
        return out

    def wait_connected(self, usernames: set[str], since: float, timeout: float = 30.0) -> dict[str, float]:
        """Wait until each of `usernames` connected (and sent its registry_update) after `since`."""

        def done():
            firsts = self.first_connect_after(since)
            if not usernames <= set(firsts):
                return None
            sids = {(r["node"], r["sid"]) for r in self.connects(since)}
            regs = {
                (r["node"], r["sid"])
                for r in self.records(lambda r: r["kind"] == "event" and r["event"] == "registry_update")
            }
            return firsts if len(sids & regs) >= len(usernames) else None

        try:
            return bwtest.wait_for(done, timeout, f"{sorted(usernames)} connected", interval=0.02)
        except AssertionError as e:
            got = set(self.first_connect_after(since))
            raise AssertionError(f"{e}; missing {sorted(usernames - got)}") from None

    # -- commands, as an engine delivers them

    def new_message_id(self, tag: str) -> str:
        self._seq += 1
        return f"{tag}-{self._seq:04d}"

    def replies(self) -> dict[tuple[str, str], list[dict]]:
        """(message_id, username) -> the reply records (command_completed/failed) from that Blender."""
        sid_user = {(r["node"], r["sid"]): r["username"] for r in self.connects()}
        out: dict[tuple[str, str], list[dict]] = {}
        for r in self.records(lambda r: r["kind"] == "event" and r["event"] in ("command_completed", "command_failed")):
            data = r["data"] if isinstance(r["data"], dict) else {}
            key = (data.get("message_id"), sid_user.get((r["node"], r["sid"]), "?"))
            out.setdefault(key, []).append(r)
        return out

    def deliver(
        self,
        via: Callable[[], Node],
        sends: list[tuple[str, str, set[str]]],
        delivery: Delivery,
        retry: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        """Emit each (message_id, room, usernames) as `add_marker` through the node `via()` returns,
        then, every `retry` s, again with the same message_id to the own room of each Blender that
        has not answered yet (an engine's at-least-once delivery: a Blender that was reconnecting
        missed the first; the router's message_id memory runs it once), until all answered."""
        for mid, _, users in sends:
            delivery.add(mid, users)
        node = via()
        for mid, room, users in sends:
            node.emit("command_received", command(mid), room)
            delivery.sent_to(mid, users)
        missing = {(mid, u) for mid, _, users in sends for u in users}
        deadline = time.monotonic() + timeout
        while True:
            t_next = time.monotonic() + retry
            while time.monotonic() < t_next:
                missing -= set(self.replies())
                if not missing:
                    return
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise AssertionError(f"unanswered after {timeout}s: {sorted(missing)}")
            node = via()
            for mid, u in sorted(missing):
                node.emit("command_received", command(mid), user_room(u))
                delivery.sent_to(mid, {u})

    def audit(self, delivery: Delivery, settle: float = 1.0) -> dict[str, Any]:
        """What each Blender ran and answered for `delivery`. lost: never answered, or its marker
        missing; duplicated: run twice (a `.001` marker), answers that differ, or more answers than
        the engine sent it the message_id (the router answers a repeat of a finished command
        again, with the same answer: that is `repeat_answers`, not a duplicate); stray: an answer
        from a Blender it was not for. Waits `settle` s first, so that a late answer is seen."""
        time.sleep(settle)
        got = self.replies()
        lost, duplicated, stray = [], [], []
        repeat_answers = 0
        for mid, users in delivery.expected.items():
            for u in users:
                answers = got.get((mid, u), [])
                sent = delivery.sent.get((mid, u), 0)
                payloads = {json.dumps(r["data"].get("payload"), sort_keys=True) for r in answers}
                if not answers:
                    lost.append((mid, u))
                elif len(payloads) > 1 or len(answers) > sent:
                    duplicated.append((mid, u, f"{len(answers)} answers to {sent} emits, {len(payloads)} different"))
                else:
                    repeat_answers += len(answers) - 1
        for mid, u in got:
            if mid in delivery.expected and u not in delivery.expected[mid]:
                stray.append((mid, u))
        for b in self.blenders:
            if b.serve.proc.poll() is not None:
                continue
            names = b.markers()
            mine = {f"BW_{mid}" for mid, users in delivery.expected.items() if b.username in users}
            duplicated += [(b.username, n, "ran twice") for n in names if n.split(".")[0] in mine and "." in n]
            lost += [(n, b.username, "not run") for n in mine if n not in names]
        return {
            "commands": sum(len(u) for u in delivery.expected.values()),
            "emits": delivery.emits,
            "lost": lost,
            "duplicated": duplicated,
            "stray": stray,
            "repeat_answers": repeat_answers,
        }

    # -- cost

    def idle_cost(self, seconds: float = 3.0) -> dict[str, float]:
        """Per Blender (its whole process tree): RSS and PSS in MiB, CPU % of one core while idle."""

        def tree_cpu(b: Blender) -> float:
            total = 0
            for pid in b.pids():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])  # utime + stime
                except (OSError, IndexError, ValueError):
                    pass
            return total / os.sysconf("SC_CLK_TCK")

        def tree_mem(b: Blender, key: str) -> float:
            kib = 0
            for pid in b.pids():
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith(key + ":"):
                            kib += int(line.split()[1])
                except OSError:
                    pass
            return kib / 1024

        live = [b for b in self.blenders if b.serve.proc.poll() is None]
        c0, t0 = [tree_cpu(b) for b in live], time.monotonic()
        time.sleep(seconds)
        c1, t1 = [tree_cpu(b) for b in live], time.monotonic()
        cpu = [100 * (b - a) / (t1 - t0) for a, b in zip(c0, c1, strict=True)]
        rss = [tree_mem(b, "Rss") for b in live]
        pss = [tree_mem(b, "Pss") for b in live]
        return {
            "blenders": len(live),
            "rss_mib": statistics.mean(rss),
            "pss_mib": statistics.mean(pss),
            "cpu_pct": statistics.mean(cpu),
            "cpu_pct_max": max(cpu),
        }


def command(message_id: str, name: str = "add_marker", params: dict | None = None) -> dict:
    """The engine's `command_received` for the test add-on; by default add_marker: one object per
    run, named after the message_id (a second run would make `BW_<id>.001`)."""
    return {
        "type": "addon_command",
        "addon_id": ADDON_ID,
        "command": name,
        "params": {"name": f"BW_{message_id}"} if params is None else params,
        "message_id": message_id,
        "metadata": {"route": "direct"},
    }


# ---- scripts/fleet: the report ------------------------------------------------------------------


def _node_loss_round(fleet: Fleet, victim: Node, survivor: Node, delivery: Delivery) -> list[float]:
    """SIGKILL `victim`, deliver through `survivor` during the failover, wait for everyone, restart
    the victim, deliver through it to the sids; the reconnect times (s) of the moved Blenders."""
    moved = fleet.on_node(victim)
    t0 = time.monotonic()
    victim.kill()
    users = {b.username for b in fleet.blenders}
    sends = [(fleet.new_message_id(f"during-{u}"), user_room(u), {u}) for u in sorted(users)]
    sends.append((fleet.new_message_id("all"), FLEET_ROOM, users))
    fleet.deliver(lambda: survivor, sends, delivery)
    back = fleet.wait_connected(moved, since=t0, timeout=60)
    victim.start()
    place = fleet.placement()
    sends = [(fleet.new_message_id(f"sid-{u}"), place[u][1], {u}) for u in sorted(users)]
    fleet.deliver(lambda: victim, sends, delivery)
    return [back[u] - t0 for u in moved]


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="scripts/fleet",
        description="Start a scaled engine (2 python-socketio nodes on redis-server behind haproxy) and a "
        "fleet of Blenders (bpy runtime); print how the fleet connects, fails over and costs when idle.",
    )
    ap.add_argument("--size", type=int, default=12, help="Blenders in the fleet (default 12)")
    ap.add_argument("--rounds", type=int, default=3, help="node losses, alternating nodes (default 3)")
    ap.add_argument("--scheme", choices=("http", "https"), default=DEFAULT_SCHEME, help="engine URL scheme")
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle window for RSS/CPU (default 5)")
    dflt = FleetSettings()
    ap.add_argument(
        "--backoff-initial", type=float, default=dflt.backoff_initial, help="the Blenders' first backoff (s)"
    )
    ap.add_argument("--backoff-max", type=float, default=dflt.backoff_max, help="the Blenders' longest backoff (s)")
    ap.add_argument("--backoff-jitter", type=float, default=dflt.backoff_jitter, help="the backoff's ± fraction")
    ap.add_argument("--watchdog", type=float, default=dflt.watchdog, help="the Blenders' watchdog (s)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object too")
    args = ap.parse_args(argv)
    if args.size < 2:
        ap.error("--size must be at least 2")
    missing = missing_programs()
    if missing:
        print(f"fleet: missing Debian packages {', '.join(missing)}: run scripts/setup", file=sys.stderr)
        return 2

    res: dict[str, Any] = {"size": args.size, "scheme": args.scheme, "cpus": os.cpu_count()}
    res["load_average_at_start"] = os.getloadavg()[0]
    settings = FleetSettings(
        size=args.size,
        scheme=args.scheme,
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        backoff_jitter=args.backoff_jitter,
        watchdog=args.watchdog,
    )
    with Fleet(settings) as fleet:
        s = fleet.settings
        t = time.monotonic()
        fleet.start_engine()
        fleet.start_blenders()
        res["start_s"] = time.monotonic() - t
        res["connected"] = len(fleet.placement())
        res["per_node"] = {n.node_name: len(fleet.on_node(n)) for n in fleet.nodes}
        res["idle"] = fleet.idle_cost(args.idle_seconds)

        d = Delivery()
        users = {b.username for b in fleet.blenders}
        fleet.deliver(
            lambda: fleet.nodes[0], [(fleet.new_message_id(f"room-{u}"), user_room(u), {u}) for u in users], d
        )
        times: list[float] = []
        for r in range(args.rounds):
            victim, survivor = fleet.nodes[r % 2], fleet.nodes[1 - r % 2]
            times += _node_loss_round(fleet, victim, survivor, d)
        res["reconnect_s"] = {
            "samples": len(times),
            "min": min(times),
            "p50": percentile(times, 50),
            "p99": percentile(times, 99),
            "max": max(times),
            "backoff": [s.backoff_initial * (1 - s.backoff_jitter), s.backoff_initial * (1 + s.backoff_jitter)],
        }
        st = [b.router() for b in fleet.blenders]
        res["watchdog_armed_during_node_loss"] = sum("watchdog armed" in b.log() for b in fleet.blenders)
        audit = fleet.audit(d)
        res["commands"] = {k: (len(v) if isinstance(v, list) else v) for k, v in audit.items()}
        res["commands"]["repeats_not_rerun"] = sum(x["duplicates"] for x in st)

        # The whole engine lost, back within the watchdog: everyone reconnects.
        for n in fleet.nodes:
            n.kill()
        bwtest.wait_for(
            lambda: all(b.router()["watchdog_s"] is not None for b in fleet.blenders), 180, "every watchdog armed"
        )
        t_back = time.monotonic()
        for n in fleet.nodes:
            n.start()
        back = fleet.wait_connected(users, since=t_back, timeout=60)
        res["engine_back_all_reconnected_s"] = max(back.values()) - t_back
        res["quit_within_watchdog"] = sum(b.serve.proc.poll() is not None for b in fleet.blenders)

        # Beyond the watchdog: every Blender saves and exits 0.
        for n in fleet.nodes:
            n.kill()
        t_loss = time.monotonic()
        rcs = [b.serve.wait_exit(s.watchdog + 120) for b in fleet.blenders]
        res["watchdog_all_exited_s"] = time.monotonic() - t_loss
        res["watchdog_exit_0"] = sum(rc == 0 for rc in rcs)
        res["watchdog_saved"] = sum(
            any(f"saved {p}" in b.log() for p in b.recovery.glob("*.blend")) if b.recovery.exists() else False
            for b in fleet.blenders
        )
        res["watchdog_s"] = s.watchdog

    _print_report(res)
    if args.json:
        print(json.dumps(res, indent=2))
    bad = res["commands"]["lost"] or res["commands"]["duplicated"] or res["commands"]["stray"]
    bad = bad or res["connected"] != args.size or res["quit_within_watchdog"] or res["watchdog_armed_during_node_loss"]
    bad = bad or res["watchdog_exit_0"] != args.size or res["watchdog_saved"] != args.size
    return 1 if bad else 0


def _print_report(res: dict[str, Any]) -> None:
    r, idle, c = res["reconnect_s"], res["idle"], res["commands"]
    lo, hi = r["backoff"]
    rows = [
        ("Blenders connected (bpy runtime)", f"{res['connected']}/{res['size']} "
         f"({', '.join(f'{k}: {v}' for k, v in res['per_node'].items())}), {res['scheme']}, "
         f"all up in {res['start_s']:.1f} s"),
        ("idle RSS per Blender", f"{idle['rss_mib']:.0f} MiB (PSS {idle['pss_mib']:.0f} MiB)"),
        ("idle CPU per Blender", f"{idle['cpu_pct']:.2f} % of a core (max {idle['cpu_pct_max']:.2f} %)"),
        ("reconnect after a node SIGKILL",
         f"p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s, max {r['max']:.2f} s, min {r['min']:.2f} s "
         f"({r['samples']} reconnects; backoff {lo:.2f}-{hi:.2f} s)"),
        ("watchdog armed by a node loss", str(res["watchdog_armed_during_node_loss"])),
        ("commands (run once, answered once)", f"{c['commands']} delivered in {c['emits']} emits; "
         f"lost {c['lost']}, duplicated {c['duplicated']}, stray {c['stray']}; "
         f"{c['repeats_not_rerun']} repeats not run again (message_id), {c['repeat_answers']} answered again"),
        ("engine lost, back within the watchdog", f"all reconnected {res['engine_back_all_reconnected_s']:.2f} s "
         f"after its return; {res['quit_within_watchdog']} quit"),
        (f"engine lost beyond the watchdog ({res['watchdog_s']:g} s)",
         f"{res['watchdog_exit_0']}/{res['size']} exited 0, {res['watchdog_saved']}/{res['size']} saved, "
         f"all gone {res['watchdog_all_exited_s']:.1f} s after the loss"),
    ]  # fmt: skip
    load = res["load_average_at_start"]
    print(f"blendwire fleet: {res['size']} Blenders, {res['cpus']} CPUs, load average {load:.2f} at the start")
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

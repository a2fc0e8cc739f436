"""A cr8_engine-style Socket.IO peer for the router tests, and a TCP recorder.

`EnginePeer` runs a real python-socketio AsyncServer (aiohttp) in a SUBPROCESS, so "the server is
killed" is a real SIGKILL: the listener and every connection vanish at once, as when the engine
dies. The subprocess (this file run as a script) talks to the test through JSON lines: it prints
one line per thing that happens (listening, connect with its auth and verdict, each event received,
disconnect), each with a `time.monotonic()` stamp (CLOCK_MONOTONIC is system-wide, so comparable
with the test's clock), and reads commands (`emit`, `set_token`) from stdin.

With `certfile`/`keyfile` (`--certfile/--keyfile` as a script) the peer serves https/wss with that
certificate (chain) and key, e.g. from `certs.make_cert`; its `url` is then `https://...`.

`AttemptRecorder` is a bare TCP listener that accepts and closes at once, recording when each
connection arrived: with the engine down, it is how the test sees the router's retries from the
server's side.

Needs python-socketio and aiohttp (the venv); the test side of this module is standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import bwtest  # standard library only, beside this file (also when run as a script)

HOST = bwtest.HOST
SOCKETIO_PATH = "/ws/socket.io/"
NAMESPACE = "/blender"
START_TIMEOUT = 30.0


# ---- the peer process -------------------------------------------------------------------------


def _peer_main(argv):
    import argparse
    import asyncio

    import socketio
    from aiohttp import web

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", default=None, help="accept only this auth token (default: any)")
    ap.add_argument("--certfile", default=None, help="serve TLS with this PEM certificate (chain)")
    ap.add_argument("--keyfile", default=None, help="the PEM private key of --certfile")
    args = ap.parse_args(argv)
    ssl_context = None
    if args.certfile:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.certfile, args.keyfile)

    out_lock = threading.Lock()

    def say(kind, **fields):
        line = json.dumps({"kind": kind, "t": time.monotonic(), **fields})
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    state = {"token": args.token}
    # As cr8_engine does: a long ping interval and timeout.
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        ping_interval=90,
        ping_timeout=120,
        cors_allowed_origins="*",
        max_http_buffer_size=64 * 1024 * 1024,
    )
    app = web.Application()
    sio.attach(app, socketio_path=SOCKETIO_PATH)

    @sio.on("connect", namespace=NAMESPACE)
    async def on_connect(sid, environ, auth=None):
        token = auth.get("token") if isinstance(auth, dict) else None
        ok = state["token"] is None or token == state["token"]
        say("connect", sid=sid, auth=auth, accepted=ok)
        if not ok:
            # The engine's answer when the token is stale: reject the namespace.
            raise socketio.exceptions.ConnectionRefusedError("invalid token")
        return True

    @sio.on("disconnect", namespace=NAMESPACE)
    async def on_disconnect(sid, *reason):
        say("disconnect", sid=sid)

    @sio.on("*", namespace=NAMESPACE)
    async def on_any(event, sid, data=None):
        say("event", sid=sid, event=event, data=data)

    async def main():
        loop = asyncio.get_running_loop()

        def read_stdin():
            for raw in sys.stdin:
                try:
                    cmd = json.loads(raw)
                except ValueError:
                    say("bad_command", line=raw)
                    continue
                asyncio.run_coroutine_threadsafe(handle(cmd), loop)
            os._exit(0)  # the test closed our stdin (or died): nobody listens any more

        async def handle(cmd):
            op = cmd.get("op")
            if op == "emit":
                await sio.emit(cmd["event"], cmd.get("data"), namespace=NAMESPACE, to=cmd.get("sid"))
                say("emitted", event=cmd["event"], data=cmd.get("data"))
            elif op == "set_token":
                state["token"] = cmd.get("token")
                say("token_set", token=state["token"])
            else:
                say("bad_command", line=cmd)

        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, HOST, args.port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        threading.Thread(target=read_stdin, daemon=True).start()
        say("listening", port=args.port, pid=os.getpid())
        await asyncio.Event().wait()

    asyncio.run(main())


# ---- the test side ----------------------------------------------------------------------------


class EnginePeer:
    """The engine on 127.0.0.1:`port` (a fresh free port by default). `start()` / `kill()` may be
    called again and again on the same port; `records` keeps everything every run reported.
    `certfile`/`keyfile`: serve TLS (https); they may be changed between runs (a new certificate)."""

    def __init__(
        self,
        port: int | None = None,
        token: str | None = None,
        python: str | None = None,
        certfile: str | os.PathLike | None = None,
        keyfile: str | os.PathLike | None = None,
    ):
        self.port = port or bwtest.free_port()
        self.token = token
        self.python = python or sys.executable
        self.certfile, self.keyfile = certfile, keyfile
        self.url = f"{'https' if certfile else 'http'}://{HOST}:{self.port}"
        self.records: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self.runs = 0
        self._lock = threading.Lock()

    # -- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> EnginePeer:
        assert self.proc is None or self.proc.poll() is not None, "the peer is already running"
        cmd = [self.python, os.path.abspath(__file__), "--port", str(self.port)]
        if self.token is not None:
            cmd += ["--token", self.token]
        if self.certfile is not None:
            cmd += ["--certfile", os.fspath(self.certfile), "--keyfile", os.fspath(self.keyfile)]
        self.runs += 1
        run = self.runs
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        proc = self.proc
        threading.Thread(target=self._read_stdout, args=(proc, run), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True).start()
        try:
            self.wait(
                lambda r: r["kind"] == "listening" and r["run"] == run,
                timeout,
                f"the engine peer listening on port {self.port}",
            )
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{e}\n--- peer stderr:\n" + "\n".join(self.stderr_lines[-30:])) from None
        return self

    def _read_stdout(self, proc, run):
        for raw in iter(proc.stdout.readline, b""):
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = {"kind": "garbage", "line": raw.decode("utf-8", "replace"), "t": time.monotonic()}
            rec["run"] = run
            with self._lock:
                self.records.append(rec)
        proc.stdout.close()

    def _read_stderr(self, proc):
        for raw in iter(proc.stderr.readline, b""):
            self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip())
        proc.stderr.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the engine dies without a goodbye; its port is free when this returns."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin,):
            try:
                stream.close()
            except OSError:
                pass

    close = kill

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()

    # -- talking to it

    def _send(self, cmd: dict) -> None:
        assert self.running, "the engine peer is not running"
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode("utf-8"))
        self.proc.stdin.flush()

    def set_token(self, token: str | None) -> None:
        """Change the token the peer accepts (None: any); the peer confirms before this returns."""
        self.token = token
        n = len(self.records)
        self._send({"op": "set_token", "token": token})
        self.wait(lambda r: r["kind"] == "token_set", 10, "the peer to take the token", start=n)

    def emit(self, event: str, data: Any, sid: str | None = None) -> None:
        self._send({"op": "emit", "event": event, "data": data, "sid": sid})

    def send_command(
        self,
        addon_id: str,
        command: str,
        params: dict | None = None,
        message_id: str | None = None,
        route: str = "direct",
    ) -> str:
        """Emit `command_received` as the engine does; returns the message_id."""
        message_id = message_id or f"msg-{time.monotonic_ns()}"
        self.emit(
            "command_received",
            {
                "type": "addon_command",
                "addon_id": addon_id,
                "command": command,
                "params": params or {},
                "message_id": message_id,
                "metadata": {"route": route},
            },
        )
        return message_id

    # -- what it saw

    def snapshot(self, start: int = 0) -> list[dict]:
        with self._lock:
            return list(self.records[start:])

    def find(self, pred: Callable[[dict], bool], start: int = 0) -> list[dict]:
        return [r for r in self.snapshot(start) if pred(r)]

    def wait(self, pred: Callable[[dict], bool], timeout: float, what: str, start: int = 0) -> dict:
        """The first record (from index `start`) matching `pred`, waiting up to `timeout`."""

        def found():
            hits = self.find(pred, start)
            return hits[0] if hits else None

        try:
            return bwtest.wait_for(found, timeout, what, interval=0.01)
        except AssertionError as e:
            tail = "\n".join(json.dumps(r)[:300] for r in self.snapshot()[-15:])
            raise AssertionError(f"{e}\n--- last peer records:\n{tail}") from None

    def events(self, name: str, start: int = 0) -> list[dict]:
        return self.find(lambda r: r["kind"] == "event" and r["event"] == name, start)

    def wait_event(
        self, name: str, timeout: float = 30.0, start: int = 0, where: Callable[[Any], bool] = lambda data: True
    ) -> dict:
        return self.wait(
            lambda r: r["kind"] == "event" and r["event"] == name and where(r["data"]),
            timeout,
            f"event {name!r}",
            start,
        )

    def wait_reply(self, message_id: str, timeout: float = 30.0, start: int = 0) -> dict:
        """The `command_completed`/`command_failed` record for `message_id`."""
        return self.wait(
            _is_reply_to(message_id),
            timeout,
            f"the reply to {message_id}",
            start,
        )

    def replies(self, message_id: str) -> list[dict]:
        return self.find(_is_reply_to(message_id))

    def wait_connected(self, timeout: float = 30.0, start: int = 0) -> dict:
        """An accepted connect followed by its registry_update; returns the registry_update record."""
        conn = self.wait(lambda r: r["kind"] == "connect" and r["accepted"], timeout, "an accepted connect", start)
        return self.wait(
            lambda r: r["kind"] == "event" and r["event"] == "registry_update" and r["sid"] == conn["sid"],
            timeout,
            "registry_update after the connect",
            start,
        )


def _is_reply_to(message_id: str) -> Callable[[dict], bool]:
    """A record predicate: the `command_completed`/`command_failed` event for `message_id`."""
    return lambda r: (
        r["kind"] == "event"
        and r["event"] in ("command_completed", "command_failed")
        and isinstance(r["data"], dict)
        and r["data"].get("message_id") == message_id
    )


class AttemptRecorder(bwtest.Listener):
    """A TCP listener on `port` that accepts each connection and closes it at once, recording
    `time.monotonic()` per connection: the router's connect attempts, seen from the server side."""

    def __init__(self, port: int):
        self.times: list[float] = []
        super().__init__(port, backlog=64, poll=0.02)

    def accepted(self, conn):
        self.times.append(time.monotonic())
        conn.close()

    def gaps(self) -> list[float]:
        t = list(self.times)
        return [b - a for a, b in zip(t, t[1:], strict=False)]


if __name__ == "__main__":
    _peer_main(sys.argv[1:])

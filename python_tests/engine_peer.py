"""A cr8_engine-style Socket.IO peer for the router tests, and a TCP recorder.

`EnginePeer` runs a real python-socketio AsyncServer (aiohttp) in a SUBPROCESS, so "the server is
killed" is a real SIGKILL: the listener and every connection vanish at once, as when the engine
dies. The subprocess (this file run as a script) talks to the test through JSON lines: it prints
one line per thing that happens (listening, connect with its auth and verdict, each event received,
disconnect), each with a `time.monotonic()` stamp (CLOCK_MONOTONIC is system-wide, so comparable
with the test's clock), and reads commands (`emit`, `set_token`) from stdin; jsonl_peer.py has
both ends of that link (shared with fleet_node.py).

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
import sys
import time
from collections.abc import Callable
from typing import Any

import bwtest  # standard library only, beside this file (also when run as a script)
from jsonl_peer import RecordingProcess, report_events, reporter, serve_commands

__all__ = ["HOST", "NAMESPACE", "SOCKETIO_PATH", "AttemptRecorder", "EnginePeer"]

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

    say = reporter()
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

    report_events(sio, NAMESPACE, say)

    async def main():
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
        serve_commands(handle, say)
        say("listening", port=args.port, pid=os.getpid())
        await asyncio.Event().wait()

    asyncio.run(main())


# ---- the test side ----------------------------------------------------------------------------


class EnginePeer(RecordingProcess):
    """The engine on 127.0.0.1:`port` (a fresh free port by default). `start()` / `kill()` may be
    called again and again on the same port; `records` keeps everything every run reported.
    `certfile`/`keyfile`: serve TLS (https); they may be changed between runs (a new certificate).
    `kill()` is a SIGKILL: the engine dies without a goodbye; its port is free when it returns."""

    def __init__(
        self,
        port: int | None = None,
        token: str | None = None,
        python: str | None = None,
        certfile: str | os.PathLike | None = None,
        keyfile: str | os.PathLike | None = None,
    ):
        super().__init__("engine peer")
        self.port = port or bwtest.free_port()
        self.token = token
        self.python = python or sys.executable
        self.certfile, self.keyfile = certfile, keyfile
        self.url = f"{'https' if certfile else 'http'}://{HOST}:{self.port}"

    # -- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> EnginePeer:
        cmd = [self.python, os.path.abspath(__file__), "--port", str(self.port)]
        if self.token is not None:
            cmd += ["--token", self.token]
        if self.certfile is not None:
            cmd += ["--certfile", os.fspath(self.certfile), "--keyfile", os.fspath(self.keyfile)]
        self._start_recording(cmd, timeout, f"port {self.port}")
        return self

    def close(self) -> None:
        self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()

    # -- talking to it

    def set_token(self, token: str | None) -> None:
        """Change the token the peer accepts (None: any); the peer confirms before this returns."""
        self.token = token
        n = len(self.records)
        self.send({"op": "set_token", "token": token})
        self.wait(lambda r: r["kind"] == "token_set", 10, "the peer to take the token", start=n)

    def emit(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send({"op": "emit", "event": event, "data": data, "sid": sid})

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

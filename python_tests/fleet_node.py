"""One node of a horizontally scaled cr8_engine, run as a subprocess by python_tests/fleet.py.

A real python-socketio AsyncServer (aiohttp) whose client manager is `socketio.AsyncRedisManager`
on a shared redis-server, as a cr8_engine that outgrew one process runs: an emit to a room (or to a
sid) on any node reaches the Blender wherever it is connected. Each Blender joins two rooms when it
connects: `user:<username>` (its own; usernames are unique in a fleet) and `fleet` (all of them).

It talks to the test through JSON lines, as engine_peer.py does (jsonl_peer.py has both ends: one
line per thing that happens, each with a `time.monotonic()` stamp, CLOCK_MONOTONIC being system-wide):
`listening`, `connect` (sid, username), `disconnect`, `event` (every event a Blender sends, e.g.
command_completed), `emitted`; it reads commands from stdin: {"op": "emit", "event", "data",
"room"} (room: a room name or a sid, anywhere in the fleet).

Run as a script only (needs python-socketio, aiohttp and redis from the venv); SIGKILL is how the
tests make a node die.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from jsonl_peer import report_events, reporter, serve_commands  # stdlib only, beside this file

__all__ = ["NAMESPACE", "SOCKETIO_PATH", "FLEET_ROOM", "user_room"]

SOCKETIO_PATH = "/ws/socket.io/"
NAMESPACE = "/blender"
FLEET_ROOM = "fleet"
CHANNEL = "blendwire-fleet"  # the Redis pub/sub channel the nodes share


def user_room(username: str) -> str:
    return f"user:{username}"


def main(argv: list[str]) -> None:
    import socketio
    from aiohttp import web

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis-url", required=True, help="redis://127.0.0.1:PORT/0")
    ap.add_argument("--name", required=True, help="the node's name in its records")
    args = ap.parse_args(argv)

    say = reporter(node=args.name)

    # Names this node's Redis connections, so it can see its own subscription (CLIENT LIST).
    client_name = f"fleet-node-{args.name}-{os.getpid()}"
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(
            args.redis_url, channel=CHANNEL, redis_options={"client_name": client_name}
        ),
        ping_interval=25,
        ping_timeout=20,
        cors_allowed_origins="*",
        # Websocket only, as the router connects: no long-polling, so no sticky sessions needed.
        transports=["websocket"],
    )
    app = web.Application()
    sio.attach(app, socketio_path=SOCKETIO_PATH)

    @sio.on("connect", namespace=NAMESPACE)
    async def on_connect(sid, environ, auth=None):
        username = auth.get("username") if isinstance(auth, dict) else None
        if username:
            await sio.enter_room(sid, user_room(username), namespace=NAMESPACE)
        await sio.enter_room(sid, FLEET_ROOM, namespace=NAMESPACE)
        say("connect", sid=sid, username=username)
        return True

    report_events(sio, NAMESPACE, say)

    async def run():
        async def handle(cmd):
            if cmd.get("op") != "emit":
                say("bad_command", line=cmd)
                return
            # Through the Redis manager: reaches the room's members on every node.
            await sio.emit(cmd["event"], cmd.get("data"), namespace=NAMESPACE, to=cmd.get("room"))
            say("emitted", event=cmd["event"], room=cmd.get("room"), data=cmd.get("data"))

        # Subscribe to the Redis channel now, not at the first connect (python-socketio's default):
        # a node that has no Blender yet must still deliver what other nodes emit to its rooms.
        import redis.asyncio as aioredis

        probe = aioredis.Redis.from_url(args.redis_url)
        sio.manager_initialized = True
        sio.manager.initialize()

        async def subscribed():
            clients = await probe.client_list()
            return any(c.get("name") == client_name and int(c.get("sub", 0)) >= 1 for c in clients)

        deadline = time.monotonic() + 20
        while not await subscribed():
            if time.monotonic() > deadline:
                raise SystemExit(f"node {args.name}: not subscribed to {CHANNEL} on {args.redis_url} after 20 s")
            await asyncio.sleep(0.02)
        await probe.aclose()

        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
        await site.start()
        serve_commands(handle, say)
        say("listening", port=args.port, pid=os.getpid())
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])

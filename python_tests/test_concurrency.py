"""50 threads starting and stopping the command service and the router at random, in this process
(the core only, no Blender needed): never two listeners, never two engine connections, no deadlock,
only the documented errors, and a consistent state at the end."""

import json
import os
import random
import subprocess
import sys
import threading
import time

import bwtest
import pytest
from blendwire import _core
from blendwire.errors import ServiceError
from engine_peer import EnginePeer

pytestmark = pytest.mark.runtimes("background")

THREADS = 50


def _our_sockets(remote_port=None, pid="self"):
    """(listening, established-to-remote_port) TCP sockets held by process `pid`."""
    socks = bwtest.tcp_sockets(pid)
    listening = sum(1 for _, state, _, _ in socks if state == "0A")
    established = sum(1 for _, state, _, remote in socks if state == "01" and remote == remote_port)
    return listening, established


def _storm(seconds):
    peer = EnginePeer().start()
    try:
        deadline = time.monotonic() + seconds
        errors, most = [], {"listeners": 0, "engine": 0, "samples": 0}
        done_ok = {"start_router": 0}

        # The sampler is another process: 50 busy threads here would starve a sampling thread of
        # the GIL and it would see too little.
        sampler_code = (
            "import json, sys, select\n"
            "sys.path.insert(0, sys.argv[3])\n"
            "from test_concurrency import _our_sockets\n"
            "most = {'listeners': 0, 'engine': 0, 'samples': 0}\n"
            "while not select.select([sys.stdin], [], [], 0)[0]:\n"
            "    try:\n"
            "        l, e = _our_sockets(int(sys.argv[2]), sys.argv[1])\n"
            "    except OSError:\n"
            "        continue\n"
            "    most = {'listeners': max(most['listeners'], l), 'engine': max(most['engine'], e),\n"
            "            'samples': most['samples'] + 1}\n"
            "print(json.dumps(most))\n"
        )
        here = os.path.dirname(os.path.abspath(__file__))
        sampler = subprocess.Popen(
            [sys.executable, "-c", sampler_code, str(os.getpid()), str(peer.port), here],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def worker(seed):
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                action = rng.choice(["start_router", "stop_router", "start_service", "stop_service", "status"])
                try:
                    if action == "start_router":
                        done_ok["start_router"] += 1  # counted before: a refused start raises
                        _core.start_router(
                            peer.url,
                            backoff_initial=0.05,
                            backoff_max=0.2,
                            handshake_timeout=2.0,
                            fallback_auth={"token": "t", "username": "storm"},
                        )
                    elif action == "stop_router":
                        _core.stop_router(2.0)
                    elif action == "start_service":
                        _core.start_service("127.0.0.1", 0, [])
                    elif action == "stop_service":
                        _core.stop_service(2.0)
                    else:
                        _core.status()
                except ServiceError:
                    pass  # "already running": the documented answer to an overlapping start
                except BaseException as e:
                    errors.append(f"{action}: {e!r}")

        def main_thread_jobs(op, params):
            # The router asks the main thread for its auth and registry before it connects.
            if op == "auth":
                return {"token": "t", "username": "storm", "blend_file_path": ""}
            return {"type": "registry_updated", "total_addons": 0, "available_tools": []}

        def finish():
            for t in workers:
                t.join(seconds + 60)
            _core.stop_pump("storm over")

        _core.set_router_dispatcher(main_thread_jobs)
        _core.take_stop_request()
        workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
        for t in workers:
            t.start()
        finisher = threading.Thread(target=finish, daemon=True)
        finisher.start()
        assert _core.pump() == "storm over"  # this thread plays Blender's main thread meanwhile
        finisher.join(10)
        out, _ = sampler.communicate("stop\n", timeout=30)
        most.update(json.loads(out))
        assert not any(t.is_alive() for t in workers), "deadlock: workers still running"
        assert errors == []
        assert most["listeners"] <= 1, f"two listeners at once: {most}"
        assert most["engine"] <= 1, f"two engine connections at once: {most}"
        assert done_ok["start_router"] > THREADS and most["samples"] >= 5, f"the storm hardly ran: {done_ok} {most}"
        # Consistent at the end: exactly what the last calls left, and nothing once stopped.
        assert (_core.service_address() is not None) == (_our_sockets()[0] == 1)
        _core.stop_router(2.0)
        # Whether a router of the storm lived long enough to connect depends on the machine's
        # load; after it, a fresh one must connect, once.
        before = len([r for r in peer.records if r["kind"] == "connect"])
        _core.start_router(peer.url, handshake_timeout=10.0)

        def connected():
            if len([r for r in peer.records if r["kind"] == "connect"]) != before:
                return True
            _core.tick(5.0)  # answer the router's auth request, as Blender's main thread would
            return False

        bwtest.wait_for(connected, 60, "a connect after the storm", interval=0)
        assert _our_sockets(peer.port)[1] == 1
        _core.stop_router(2.0)
        _core.stop_service(2.0)
        assert not _core.router_running() and _core.service_address() is None
        assert _our_sockets(peer.port) == (0, 0)
        assert _core.status()["router"]["state"] == "stopped"
    finally:
        _core.stop_router(2.0)
        _core.stop_service(2.0)
        _core.set_router_dispatcher(None)
        peer.kill()


def test_start_stop_storm_short():
    _storm(3)


@pytest.mark.slow
def test_start_stop_storm_ten_seconds():
    _storm(10)

"""50 threads starting and stopping the command service and the router at random, in this process
(the core only, no Blender needed): never two listeners, never two engine connections, no deadlock,
only the documented errors, and a consistent state at the end."""

import os
import random
import threading
import time

import pytest

from blendwire import _core
from blendwire.errors import ServiceError
from engine_peer import EnginePeer

pytestmark = pytest.mark.runtimes("background")

THREADS = 50


def _our_sockets(remote_port=None):
    """(listening, established-to-remote_port) TCP sockets held by this process."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = established = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            state, remote = cols[3], int(cols[2].rsplit(":", 1)[1], 16)
            if state == "0A":
                listening += 1
            elif state == "01" and remote == remote_port:
                established += 1
    return listening, established


def _storm(seconds):
    peer = EnginePeer().start()
    try:
        deadline = time.monotonic() + seconds
        errors, most = [], {"listeners": 0, "engine": 0, "samples": 0}
        done = threading.Event()

        def sample():
            while not done.is_set():
                listening, established = _our_sockets(peer.port)
                most["listeners"] = max(most["listeners"], listening)
                most["engine"] = max(most["engine"], established)
                most["samples"] += 1

        def worker(seed):
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                action = rng.choice(["start_router", "stop_router", "start_service", "stop_service", "status"])
                try:
                    if action == "start_router":
                        _core.start_router(peer.url, backoff_initial=0.05, backoff_max=0.2, handshake_timeout=2.0,
                                           fallback_auth={"token": "t", "username": "storm"})
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
                except BaseException as e:  # noqa: BLE001 - anything else is a failure
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
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
        for t in workers:
            t.start()
        finisher = threading.Thread(target=finish, daemon=True)
        finisher.start()
        assert _core.pump() == "storm over"  # this thread plays Blender's main thread meanwhile
        finisher.join(10)
        done.set()
        sampler.join(10)
        assert not any(t.is_alive() for t in workers), "deadlock: workers still running"
        assert errors == []
        assert most["listeners"] <= 1, f"two listeners at once: {most}"
        assert most["engine"] <= 1, f"two engine connections at once: {most}"
        connects = [r for r in peer.records if r["kind"] == "connect"]
        assert connects, "the storm never connected to the engine: the test proved nothing"
        # Consistent at the end: exactly what the last calls left, and nothing once stopped.
        assert (_core.service_address() is not None) == (_our_sockets()[0] == 1)
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

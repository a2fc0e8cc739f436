"""The add-on (addon/blendwire_addon) inside Blender: enabling starts the service when
BLD_REMOTE_MCP_START_NOW says so, disabling stops it and frees the port at once, and 20
enable/disable cycles leave no thread or socket behind."""

import os
import sys

import addon_utils
import bwtest
import pytest
from blender_util import socket_count, thread_count
from blendwire import _core
from bwtest import wait_for

ADDON_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "addon")
MODULE = "blendwire_addon"


@pytest.fixture
def addon_env(monkeypatch):
    if not os.path.isdir(os.path.join(ADDON_DIR, MODULE)):
        pytest.fail(f"the add-on is missing: {ADDON_DIR}/{MODULE}")
    monkeypatch.syspath_prepend(ADDON_DIR)
    port = bwtest.free_port()
    monkeypatch.setenv("BLD_REMOTE_MCP_START_NOW", "1")
    monkeypatch.setenv("BLD_REMOTE_MCP_PORT", str(port))
    _core.stop_service(2.0)
    _core.set_dispatcher(None)
    _core.shutdown(2.0)
    yield port
    addon_utils.disable(MODULE, default_set=True)
    _core.stop_service(2.0)
    _core.set_dispatcher(None)


def enable():
    mod = addon_utils.enable(MODULE, default_set=True, handle_error=_raise)
    assert mod is not None, "addon_utils.enable failed"
    return mod


def disable():
    addon_utils.disable(MODULE, default_set=True, handle_error=_raise)


def _raise(ex):
    raise ex


def test_enable_starts_and_disable_stops_the_service(addon_env):
    port = addon_env
    enable()
    assert _core.service_address() == ("127.0.0.1", port)
    assert not bwtest.port_is_bindable(port)
    disable()
    assert _core.service_address() is None
    assert bwtest.port_is_bindable(port), "the port is still taken after the add-on was disabled"
    assert bwtest.connection_refused(port)


def test_enable_without_start_now_does_not_start(addon_env, monkeypatch):
    monkeypatch.setenv("BLD_REMOTE_MCP_START_NOW", "no")
    enable()
    assert _core.service_address() is None
    disable()


def test_twenty_enable_disable_cycles_leave_nothing_behind(addon_env):
    port = addon_env
    threads0, sockets0 = thread_count(), socket_count()
    for i in range(20):
        enable()
        assert _core.service_address() == ("127.0.0.1", port), f"cycle {i}: service not running"
        # a client connected while the add-on is disabled must not keep anything alive
        conn = bwtest.Conn(port)
        assert bwtest.assert_error(conn.request({"type": "nope_xyz", "params": {}}), "unknown_rpc_command")
        disable()
        assert _core.service_address() is None, f"cycle {i}: service still running"
        assert conn.at_eof(10), f"cycle {i}: the client connection was not closed"
        conn.close()
        assert bwtest.port_is_bindable(port), f"cycle {i}: port still taken"
    # the core's threads end with a bounded wait inside unregister; poll briefly for the OS to reap them
    wait_for(
        lambda: thread_count() <= threads0,
        10,
        f"threads back to {threads0} (now {thread_count()}: {os.listdir('/proc/self/task')})",
    )
    wait_for(lambda: socket_count() <= sockets0, 10, f"sockets back to {sockets0} (now {socket_count()})")


def test_module_is_importable_with_bl_info(addon_env):
    mod = enable()
    info = getattr(mod, "bl_info", None)
    assert info and info.get("name") and tuple(info.get("blender", (9, 9))) <= (3, 4, 0), info
    disable()
    assert MODULE in sys.modules


def test_disable_with_100_calls_in_flight_answers_or_closes_each(addon_env):
    """Disabling the add-on while 100 calls wait: every caller gets an answer or a closed
    connection (no hang), and the port is free at once."""
    import threading

    port = addon_env
    enable()
    outcomes = {}
    submitted0 = _core.status()["bridge"]["submitted"]

    def call(i):
        try:
            outcomes[i] = ("answer", bwtest.request(port, "execute_code", {"code": f"print({i})"}, timeout=60))
        except ConnectionError as e:  # closed by the service (EOF or reset): the documented outcome
            outcomes[i] = ("closed", repr(e))
        except BaseException as e:
            outcomes[i] = ("failed", repr(e))

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(100)]
    for t in threads:
        t.start()
    wait_for(lambda: _core.status()["bridge"]["submitted"] - submitted0 >= 100, 30, "100 queued calls")
    _core.tick(1.0)  # run a few on the main thread, as a GUI timer would, then disable mid-flood
    disable()
    assert bwtest.port_is_bindable(port), "the port is still taken after the add-on was disabled"
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a caller hung after the add-on was disabled"
    kinds = [outcomes[i][0] for i in range(100)]
    assert "failed" not in kinds, [o for o in outcomes.values() if o[0] == "failed"][:3]
    answered = [outcomes[i][1] for i in range(100) if outcomes[i][0] == "answer"]
    assert answered and kinds.count("closed") > 0, f"answered {len(answered)}, closed {kinds.count('closed')}"
    for resp in answered:
        assert resp["status"] in ("success", "error"), resp
    # Nothing is left queued for a service that no longer exists.
    _core.tick(1000.0)
    assert _core.status()["bridge"]["queue_depth"] == 0

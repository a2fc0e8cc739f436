"""The add-on's preferences (bounds, validation, the messages the Start operator reports), the
status panel's rows (built from `blendwire.status()`), and logging: the core's records reach the
`blendwire` logger, with one DEBUG line per connection open and close."""

import logging
import os

import addon_utils
import bpy
import bwtest
import pytest
from blender_util import pump_while
from blendwire import _core
from blendwire import blender as bw

ADDON_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "addon")
MODULE = "blendwire_addon"


@pytest.fixture
def addon(monkeypatch):
    """The add-on enabled (not serving); yields (package module, its preferences)."""
    monkeypatch.syspath_prepend(ADDON_DIR)
    monkeypatch.delenv("BLD_REMOTE_MCP_START_NOW", raising=False)
    monkeypatch.delenv("BLD_REMOTE_LOG_LEVEL", raising=False)
    bw.stop()
    mod = addon_utils.enable(MODULE, default_set=True, handle_error=_raise)
    assert mod is not None
    prefs = bpy.context.preferences.addons[MODULE].preferences
    yield mod, prefs
    addon_utils.disable(MODULE, default_set=True, handle_error=_raise)
    _core.stop_service(2.0)
    _core.set_dispatcher(None)


def _raise(ex):
    raise ex


class Settings:
    def __init__(self, **kw):
        from blendwire_addon import ui

        for name in dir(ui.Defaults):
            if not name.startswith("_"):
                setattr(self, name, getattr(ui.Defaults, name))
        self.__dict__.update(kw)


def problems(**kw):
    from blendwire_addon import model

    return model.validate(Settings(**kw))


def test_defaults_are_valid(addon):
    mod, prefs = addon
    assert mod.model.validate(prefs) == []
    assert problems() == []


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"host": ""}, "Host is empty"),
        ({"host": "0.0.0.0"}, "Host must be loopback unless there is a token"),
        ({"host": "bad host"}, "contains spaces"),
        ({"port": 80}, "Port 80 is out of range"),
        ({"port": 70000}, "Port 70000 is out of range"),
        ({"queue_size": 0}, "Queue size must be between 1 and 1000000, got 0"),
        ({"tick_budget_ms": 500.0}, "Tick budget 500.0 ms is out of range"),
        ({"watchdog_seconds": -1.0}, "Watchdog -1.0 s is out of range"),
        ({"engine_url": "localhost:8000"}, "Engine URL must start with http:// or https://"),
        ({"engine_url": "http://h:99999"}, 'Engine URL has a bad port "99999"'),
        ({"ca_file": "/nonexistent/ca.pem"}, "CA file cannot be read (/nonexistent/ca.pem"),
        ({"username": "two words"}, "Username must be"),
        ({"token": " secret"}, "Token starts or ends with spaces"),
        ({"log_level": "LOUD"}, "Log level 'LOUD'"),
    ],
)
def test_each_bad_value_has_a_clear_message(addon, kw, expected):
    found = problems(**kw)
    assert len(found) == 1 and expected in found[0], found


def test_a_token_allows_other_hosts(addon):
    assert problems(host="0.0.0.0", token="s3cret") == []
    assert problems(host="localhost") == [] and problems(host="::1") == []


def test_preference_properties_are_bounded(addon):
    _, prefs = addon
    props = prefs.bl_rna.properties
    assert (props["port"].hard_min, props["port"].hard_max) == (1024, 65535)
    assert props["queue_size"].hard_min == 1 and props["tick_budget_ms"].hard_max == 100.0
    assert props["watchdog_seconds"].hard_min == 0.0
    assert props["token"].subtype == "PASSWORD"
    prefs.port = 80
    assert prefs.port == 1024  # clamped by Blender
    for name in (
        "host",
        "port",
        "start_with_blender",
        "token",
        "engine_url",
        "ca_file",
        "username",
        "watchdog_seconds",
        "queue_size",
        "tick_budget_ms",
        "log_level",
    ):
        assert name in props, name


def test_start_operator_reports_a_bad_host(addon):
    _, prefs = addon
    prefs.host = "0.0.0.0"
    prefs.token = ""
    with pytest.raises(RuntimeError, match="must be loopback unless there is a token"):
        bpy.ops.blendwire.start()
    assert not bw.is_running()


def test_start_operator_reports_a_taken_port(addon):
    _, prefs = addon
    with bwtest.taken_port() as port:
        prefs.port = port
        if prefs.port < 1024:
            pytest.skip("the OS gave a port below 1024")
        with pytest.raises(RuntimeError, match=f"Port {prefs.port} on 127.0.0.1 is taken"):
            bpy.ops.blendwire.start()
        assert not bw.is_running()


def test_start_and_stop_operators(addon):
    _, prefs = addon
    prefs.port = bwtest.free_port()
    assert bpy.ops.blendwire.start() == {"FINISHED"}
    assert bw.address() == ("127.0.0.1", prefs.port)
    assert bpy.ops.blendwire.stop() == {"FINISHED"}
    assert not bw.is_running() and bwtest.port_is_bindable(prefs.port)


def test_checkpoint_preferences_reach_the_store(addon, tmp_path):
    from blendwire.handlers import checkpoints

    _, prefs = addon
    props = prefs.bl_rna.properties
    assert props["checkpoints"].hard_min == 0 and props["checkpoint_mib"].hard_min == 1
    assert props["checkpoint_dir"].subtype == "DIR_PATH"
    assert prefs.checkpoints == _core.defaults()["checkpoints"]
    prefs.port = bwtest.free_port()
    prefs.checkpoints, prefs.checkpoint_mib, prefs.checkpoint_dir = 0, 64, str(tmp_path)
    try:
        assert bpy.ops.blendwire.start() == {"FINISHED"}
        assert checkpoints.settings() == checkpoints.Settings(0, 64 * 1024 * 1024, str(tmp_path))
    finally:
        bpy.ops.blendwire.stop()
        checkpoints.configure()


# ---- panel rows --------------------------------------------------------------------------------


def test_panel_rows_show_the_status(addon, recorder):
    import blendwire
    from blendwire_addon import model

    off = {r.key: r for r in model.service_rows(blendwire.status())}
    assert off["service"].text == "Service: off"
    host, port = bw.start("127.0.0.1", 0)

    def client():
        with bwtest.Conn(port) as c:
            for _ in range(3):
                bwtest.assert_success(c.request({"type": "get_scene_info", "params": {}}))
            bwtest.assert_error(c.request({"type": "no_such_cmd", "params": {}}), "unknown_rpc_command")
            bwtest.request(port, "get_scene_info")
            return blendwire.status()

    _, st = pump_while(client)
    rows = {r.key: r for r in model.service_rows(st) + model.router_rows(st)}
    svc, bridge = st["service"], st["bridge"]
    assert rows["service"].text == f"On: 127.0.0.1:{port}"
    assert rows["clients"].value == svc["connections_open"] and rows["clients"].text.endswith(
        str(svc["connections_open"])
    )
    assert rows["calls"].value == svc["requests"] >= 5 and rows["calls"].text == f"Calls served: {svc['requests']}"
    assert rows["errors"].value == sum(svc["errors"].values()) >= 1 and rows["errors"].alert
    assert rows["queue"].text == f"Queue: {bridge['queue_depth']} / {bridge['capacity']}"
    assert rows["latency"].text == f"Last latency: {bridge['last_latency_ms']:.2f} ms"
    assert rows["router"].text == "Engine: off"
    assert rows["main_thread"].text == "Main thread: idle" and rows["main_thread"].value == "idle"
    bw.stop()


def test_main_thread_row_in_words():
    from blendwire_addon import model

    assert model.main_thread_text({"state": "idle"}) == "Main thread: idle"
    running = {"state": "running", "command": "execute_code", "running_s": 12.4, "interrupt_pending": False}
    assert model.main_thread_text(running) == "Running execute_code 12 s"
    late = dict(running, interrupt_pending=True)
    assert model.main_thread_text(late) == "Running execute_code 12 s (interrupting)"
    row = next(r for r in model.service_rows({"main_thread": late}) if r.key == "main_thread")
    assert row.alert and row.value == "execute_code"


def test_router_rows_with_the_watchdog_armed():
    import sys

    sys.path.insert(0, ADDON_DIR)
    try:
        from blendwire_addon import model
    finally:
        sys.path.remove(ADDON_DIR)
    st = {
        "router": {
            "state": "backoff",
            "attempts": 7,
            "consecutive_failures": 6,
            "watchdog_s": 241.6,
            "commands_completed": 2,
            "commands_failed": 1,
        }
    }
    rows = {r.key: r for r in model.router_rows(st)}
    assert rows["router"].text == "Engine: backoff"
    assert rows["attempts"].text == "Attempts: 7 (failed in a row: 6)"
    assert rows["watchdog"].text == "Saving and quitting in 242 s" and rows["watchdog"].alert
    assert rows["router_commands"].text == "Commands: 2 ok, 1 failed"


# ---- logging -------------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.name, record.levelname, record.getMessage()))


@pytest.fixture
def capture(core, monkeypatch):
    handler = Capture()
    logger = logging.getLogger("blendwire")
    old_level = logger.level
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    _core.set_log_level("INFO")
    bw.stop()


def _one_request_then_closed(port):
    """One request on its own connection, then wait until the service has seen the close (it is
    logged by the service thread: the count shows when)."""
    with bwtest.Conn(port) as c:
        bwtest.assert_success(c.request({"type": "get_scene_info", "params": {}}))
    bwtest.wait_for(lambda: _core.status()["service"]["connections_open"] == 0, 10, "the close")


def test_debug_level_from_env_logs_connection_open_and_close(capture, monkeypatch):
    monkeypatch.setenv("BLD_REMOTE_LOG_LEVEL", "debug")
    host, port = bw.start("127.0.0.1", 0)
    assert logging.getLogger("blendwire").getEffectiveLevel() == logging.DEBUG

    pump_while(lambda: _one_request_then_closed(port))
    _core.flush_logs()
    lines = [m for name, level, m in capture.records if name.startswith("blendwire") and level == "DEBUG"]
    assert any(m.startswith("connection from 127.0.0.1:") and m.endswith(" opened") for m in lines), capture.records
    assert any(m.startswith("connection from 127.0.0.1:") and m.endswith(" closed") for m in lines), capture.records


def test_info_level_hides_connection_lines_but_not_errors(capture, monkeypatch):
    host, port = bw.start("127.0.0.1", 0, log_level="INFO")

    pump_while(lambda: _one_request_then_closed(port))
    _core.flush_logs()
    assert not [m for _, _, m in capture.records if m.startswith("connection from")], capture.records
    assert any("listening" in m for _, level, m in capture.records if level == "INFO"), capture.records


def test_preference_log_level_wins(addon, capture, monkeypatch):
    _, prefs = addon
    monkeypatch.setenv("BLD_REMOTE_LOG_LEVEL", "ERROR")
    prefs.log_level = "DEBUG"
    prefs.port = bwtest.free_port()
    assert bpy.ops.blendwire.start() == {"FINISHED"}
    assert logging.getLogger("blendwire").getEffectiveLevel() == logging.DEBUG
    bw.stop()

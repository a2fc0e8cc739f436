"""The core's settings API in plain Python (no Blender): one source of defaults, one wording per
rule, the same checks whether a caller asks (`check_*`) or starts (`start_*`)."""

import pytest
from blendwire import _core


def test_defaults_are_the_documented_ones():
    d = _core.defaults()
    assert (d["host"], d["port"], d["queue_capacity"], d["watchdog_seconds"]) == ("127.0.0.1", 6688, 1024, 300.0)
    assert d["max_request_bytes"] == 64 * 1024 * 1024 and d["tick_budget_ms"] == 8.0
    # The client outwaits the service's default deadline and the interrupt grace (and a moment).
    assert d["client_timeout"] == d["default_timeout"] + d["interrupt_grace"] + 1.0 == 33.0
    assert d["mcp_timeout"] == 600.0


def test_check_and_start_share_their_rules():
    problems = _core.check_service_settings(port=70000, max_request_bytes=10, queue_capacity=0)
    assert problems == [
        ("port", "must be between 0 and 65535 (0 picks a free port), got 70000"),
        ("max_request_bytes", "must be at least 1024, got 10"),
        ("queue_capacity", "must be between 1 and 1000000, got 0"),
    ]
    with pytest.raises(ValueError, match="^max_request_bytes must be at least 1024, got 10$"):
        _core.start_service("127.0.0.1", 0, ["echo"], max_request_bytes=10)
    assert _core.service_address() is None  # nothing started


def test_router_rules_are_checked_before_connecting():
    assert _core.check_router_settings("http://127.0.0.1:8000") == []
    assert _core.check_router_settings("https://engine.example") == []
    (name, rule), *_ = _core.check_router_settings("ftp://engine.example", backoff_jitter=2)
    assert name == "url" and rule.startswith("must start with http:// or https://")
    with pytest.raises(ValueError, match="backoff_jitter must be between 0 and 1, got 2"):
        _core.start_router("http://127.0.0.1:8000", backoff_jitter=2)
    assert not _core.router_running()


def test_unknown_settings_are_type_errors():
    with pytest.raises(TypeError, match="start_service\\(\\) got an unexpected keyword argument 'max_request_byte'"):
        _core.start_service("127.0.0.1", 0, [], max_request_byte=2048)
    with pytest.raises(TypeError, match="unexpected keyword argument 'queue_capacity'"):
        _core.start_service("127.0.0.1", 0, [], queue_capacity=8)  # the queue is not the service's
    with pytest.raises(TypeError, match="check_router_settings\\(\\) got an unexpected keyword argument 'watchdog'"):
        _core.check_router_settings("http://127.0.0.1:8000", watchdog=5)


def test_none_means_the_default_and_wrong_types_name_the_setting():
    assert _core.check_service_settings(default_timeout=None, token=None) == []
    with pytest.raises(TypeError, match="^read_timeout: must be real number, not str$"):
        _core.check_service_settings(read_timeout="soon")
    with pytest.raises(TypeError, match="^outbox_max_count: 'float' object cannot be interpreted as an integer$"):
        _core.start_router("http://127.0.0.1:8000", outbox_max_count=2.5)


@pytest.mark.parametrize(
    "value, name", [("warn", "WARNING"), ("TRACE", "DEBUG"), (40, "ERROR"), ("critical", "ERROR"), (10, "DEBUG")]
)
def test_log_level_names(value, name):
    assert _core.log_level_name(value) == name


def test_loopback_rule():
    assert _core.is_loopback("localhost") and _core.is_loopback("127.0.0.2") and _core.is_loopback("::1")
    assert not _core.is_loopback("0.0.0.0") and not _core.is_loopback("example.com")


def test_every_setting_kind_keeps_its_error():
    # A str setting, and a JSON one (ValueError: the value is not JSON).
    with pytest.raises(TypeError, match="^token: 'int' object is not an instance of 'str'$"):
        _core.check_service_settings(token=5)
    with pytest.raises(ValueError, match="^fallback_auth: unsupported type object$"):
        _core.check_router_settings("http://127.0.0.1:8000", fallback_auth=object())
    with pytest.raises(TypeError, match="^start_service\\(\\) got an unexpected keyword argument 'queue_capacity'$"):
        _core.start_service("127.0.0.1", 0, [], queue_capacity=2.5)  # not the service's, whatever its type

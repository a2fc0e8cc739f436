"""Tests that run INSIDE a Blender process, on its main thread:
- Debian's Blender 3.4 (`blender -b --python scripts/blender_pytest.py -- python_tests/in_blender`)
- the bpy 5.0.1 module (`.venv/bin/python -m pytest python_tests/in_blender`)

They drive `blendwire._core` directly: start_service on port 0, a dispatcher, client threads, and the
main thread running pump()/tick(). Every wait polls a condition up to a deadline.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from blender_util import Recorder, _core


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.in_blender)


@pytest.fixture(scope="session", autouse=True)
def _core_shutdown_at_end():
    """Never leave the core's threads running into interpreter shutdown."""
    yield
    _core.stop_service(2.0)
    _core.set_dispatcher(None)
    _core.shutdown(2.0)


def _reset():
    _core.stop_service(2.0)
    _core.set_dispatcher(None)
    _core.tick(60_000.0)  # drop jobs a failed test left queued (a stopped service's jobs never run)
    _core.set_queue_capacity(1024)
    _core.take_stop_request()


@pytest.fixture
def core():
    """`_core` with a clean state before and after the test."""
    _reset()
    yield _core
    _reset()


@pytest.fixture
def recorder():
    return Recorder()


COMMANDS = ["echo", "boom", "fail", "slow", "mark", "bad_result", "convert"]


@pytest.fixture
def service(core, recorder):
    """A running service on 127.0.0.1:<free port> with the `recorder` dispatcher; yields the port."""
    core.set_dispatcher(recorder)
    host, port = core.start_service("127.0.0.1", 0, COMMANDS)
    assert host == "127.0.0.1" and port > 0
    yield port
    assert recorder.off_main_thread == [], "the dispatcher ran off the main thread"

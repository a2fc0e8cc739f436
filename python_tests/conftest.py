"""Fixtures and options of the blendwire test suites.

Runtimes (each a real `blendwire serve --port 0` subprocess):
  background  Debian's `blender -b`             (marker `background`)
  bpy         the bpy module in a venv Python   (marker `bpy`, `blendwire serve --bpy`)
  gui         the real UI, `blendwire serve --gui` (marker `gui`; run under xvfb-run)

Select with `--runtimes=background,bpy` (default: all three, or $BLENDWIRE_RUNTIMES) or with `-m`.
A test that needs a running service takes the `server` fixture; `@pytest.mark.runtimes("background")`
narrows the runtimes it runs on. `slow` tests run only with `--slow` or BLENDWIRE_SLOW=1.

This file is also loaded when pytest runs inside Blender (python_tests/in_blender): keep it to the
standard library and pytest.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Checkpoints and the audit log go to the user's state directory by default: the suites (and every
# `blendwire serve` they start, which inherits this) keep theirs in a temp folder of their own.
if "BLENDWIRE_TEST_STATE_HOME" not in os.environ:
    import tempfile

    os.environ["BLENDWIRE_TEST_STATE_HOME"] = os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="bw-state-")


ALL_RUNTIMES = ("background", "bpy", "gui")


def pytest_addoption(parser):
    parser.addoption(
        "--runtimes",
        default=os.environ.get("BLENDWIRE_RUNTIMES", ",".join(ALL_RUNTIMES)),
        help="comma-separated Blender runtimes for `server` tests: background,bpy,gui",
    )
    parser.addoption(
        "--slow",
        action="store_true",
        default=os.environ.get("BLENDWIRE_SLOW", "0") == "1",
        help="also run tests marked slow",
    )


def pytest_configure(config):
    for line in (
        "background: needs `blendwire serve` on Debian's blender -b",
        "bpy: needs `blendwire serve --bpy` (the bpy module)",
        "gui: needs `blendwire serve --gui` (a display or xvfb-run)",
        "runtimes(*names): the runtimes a `server` test runs on",
        "slow: long runs, only with --slow / BLENDWIRE_SLOW=1",
        "in_blender: runs inside a Blender process (Blender's Python or the bpy module)",
    ):
        config.addinivalue_line("markers", line)


def selected_runtimes(config):
    names = [r.strip() for r in config.getoption("--runtimes").split(",") if r.strip()]
    unknown = set(names) - set(ALL_RUNTIMES)
    if unknown:
        raise pytest.UsageError(f"unknown runtimes {sorted(unknown)}; known: {ALL_RUNTIMES}")
    return names


def pytest_generate_tests(metafunc):
    if "server" not in metafunc.fixturenames:
        return
    runtimes = selected_runtimes(metafunc.config)
    marker = metafunc.definition.get_closest_marker("runtimes")
    if marker is not None:
        runtimes = [r for r in runtimes if r in marker.args]
    params = [pytest.param(r, id=r, marks=getattr(pytest.mark, r)) for r in runtimes]
    if not params:
        params = [
            pytest.param(None, id="no-runtime", marks=pytest.mark.skip(reason="none of its runtimes is selected"))
        ]
    metafunc.parametrize("server", params, indirect=True, scope="module")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow or BLENDWIRE_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def server(request):
    """A running `blendwire serve --port 0` for one runtime: yields a ServeProcess with
    .host, .port, .runtime, .version. At teardown `server_shutdown` must end it with exit code 0."""
    import bw_serve  # loads blendwire: not when this file runs inside Blender

    runtime = request.param
    sp = bw_serve.start_serve(runtime)
    yield sp
    sp.shutdown()


@pytest.fixture
def serve_factory():
    """Start extra `blendwire serve` processes in a test; any still running at the end are shut
    down with `server_shutdown` and must exit 0 (or are killed and the test fails)."""
    import bw_serve

    started = []

    def start(runtime="background", port=0, extra=None, env=None):
        sp = bw_serve.start_serve(runtime, port=port, extra=extra, env=env)
        started.append(sp)
        return sp

    yield start
    errors = []
    for sp in started:
        if sp.proc.poll() is None:
            try:
                sp.shutdown()
            except AssertionError as e:
                errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors))


@pytest.fixture
def tmp_flag_dir(tmp_path):
    """A directory for started/release flag files of blocking execute_code jobs."""
    return str(tmp_path)

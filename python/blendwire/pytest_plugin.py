"""pytest plugin: tests of Blender code from a normal pytest, against a Blender the plugin starts.

Off unless asked for (`pytest --blender`, or `blender = true` in the ini file); off, it only adds
its options and markers: nothing is imported from Blender, nothing starts, and `in_blender` tests
run as plain tests. On:

- one Blender per pytest process (per xdist worker), started on first need with
  `blendwire serve --port 0` (`--blender-runtime background|bpy|gui`) with this Python, stopped at
  the end (and, through the kernel, when pytest dies);
- the `blender` fixture: a `BlenderHandle` (`call`, `run`, `reset`, `load`, `client`) for tests
  that drive Blender from outside;
- `@pytest.mark.in_blender` tests run inside that Blender (`blendwire.pytest_runner`) with their
  asserts rewritten by pytest; their fixture values (tmp_path, parameters, ...) are sent along;
- a fresh scene before each test (`@pytest.mark.blender_keep_scene`, on a test, class or module,
  keeps the previous one);
- a test that crashes Blender or runs past `--blender-timeout` fails alone, saying so, and the next
  test gets a new Blender.

No bpy here; the Blender side is `blendwire.pytest_runner`.
"""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import re
import sys
from typing import Any

import pytest

__all__ = ["BlenderError", "BlenderHandle", "BlenderProcess", "BlenderSession", "blender"]

RUNTIMES = {"background": [], "bpy": ["--bpy"], "gui": ["--gui"]}
DEFAULT_TIMEOUT = 60.0
DEFAULT_START_TIMEOUT = 180.0
STOP_TIMEOUT = 15.0
# Seconds the client waits beyond a job's deadline and the core's interrupt grace for the answer.
_ANSWER_SLACK = 3.0
# The runner's result line (blendwire.pytest_runner.MARKER), written again: importing the runner
# here would load it into every pytest run, and the plugin must cost nothing when off.
MARKER = "BLENDWIRE-TEST"
_OUTPUT_LINES = 200  # Blender's last output lines kept for crash reports
_SESSION_KEY = pytest.StashKey["BlenderSession"]()
_USES_BLENDER = pytest.StashKey[bool]()  # on an item: the test used Blender


def _core_defaults() -> dict:
    from . import _core  # the wheel's core; plain Python, no Blender

    return _core.defaults()


class BlenderError(Exception):
    """Blender could not be started, crashed, or a call to it timed out; the message says which."""


# ---- options -------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("blender", "Blender (blendwire)")
    group.addoption("--blender", action="store_true", default=None, help="run Blender tests (default: ini `blender`)")
    group.addoption(
        "--blender-runtime",
        choices=sorted(RUNTIMES),
        help="blender -b (background, default), the bpy module in its own process (bpy), the UI (gui)",
    )
    group.addoption("--blender-exe", metavar="PATH", help="the Blender executable (default: $BLENDER or blender)")
    group.addoption("--blender-file", metavar="FILE.blend", help="open this .blend at start and at every reset")
    group.addoption(
        "--blender-timeout",
        type=float,
        metavar="S",
        help=f"seconds a test may keep Blender busy before it fails and Blender restarts (default {DEFAULT_TIMEOUT:g})",
    )
    parser.addini("blender", "run Blender tests (as --blender)", type="bool", default=False)
    parser.addini("blender_runtime", "background, bpy or gui (as --blender-runtime)", default="background")
    parser.addini("blender_exe", "the Blender executable (as --blender-exe)", default="")
    parser.addini("blender_file", "a .blend to open at start and at every reset (as --blender-file)", default="")
    parser.addini("blender_timeout", "seconds per test (as --blender-timeout)", default=str(DEFAULT_TIMEOUT))
    parser.addini("blender_start_timeout", "seconds Blender gets to start", default=str(DEFAULT_START_TIMEOUT))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "in_blender: with --blender, the test runs inside Blender")
    config.addinivalue_line("markers", "blender_keep_scene: no fresh Blender scene before this test")
    config.addinivalue_line("markers", "blender_timeout(seconds): this test's --blender-timeout")
    enabled = config.getoption("--blender")
    if enabled is None:
        enabled = bool(config.getini("blender"))
    if not enabled:
        return
    runtime = config.getoption("--blender-runtime") or config.getini("blender_runtime") or "background"
    if runtime not in RUNTIMES:
        raise pytest.UsageError(f"blender_runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}")
    blend_file = config.getoption("--blender-file") or config.getini("blender_file") or None
    if blend_file:
        blend_file = os.path.abspath(os.path.join(str(config.rootpath), blend_file))
        if not os.path.isfile(blend_file):
            raise pytest.UsageError(f"--blender-file: no such file {blend_file}")
    timeout = config.getoption("--blender-timeout")
    try:
        timeout = float(timeout if timeout is not None else config.getini("blender_timeout"))
        start_timeout = float(config.getini("blender_start_timeout"))
    except ValueError as e:
        raise pytest.UsageError(f"blender_timeout / blender_start_timeout: {e}") from None
    if timeout <= 0:
        raise pytest.UsageError("--blender-timeout must be positive")
    session = BlenderSession(
        runtime=runtime,
        exe=config.getoption("--blender-exe") or config.getini("blender_exe") or None,
        blend_file=blend_file,
        timeout=timeout,
        start_timeout=start_timeout,
        pythonpath=[str(p) for p in config.getini("pythonpath")],
    )
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(_Hooks(session), "blendwire-blender")


def _session(config: pytest.Config) -> BlenderSession | None:
    return config.stash.get(_SESSION_KEY, None)


# ---- the Blender process ---------------------------------------------------------------------------


def _describe_exit(rc: int | None) -> str:
    from .process import describe_exit  # loaded once a Blender was started

    return describe_exit(rc)


# `blendwire serve` (blendwire.cli), told by the kernel to take SIGTERM when pytest dies, even by
# SIGKILL (serve then stops its Blender); otherwise a killed pytest would leave both running.
_SERVE_BOOT = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("blendwire serve: pytest is gone")
from blendwire.cli import main
sys.exit(main(sys.argv[2:]))
"""


class BlenderProcess:
    """One `blendwire serve --ready-json --port 0 ...` with its client; its output kept for reports."""

    def __init__(self, runtime: str, exe: str | None, blend_file: str | None, timeout: float, start_timeout: float):
        from . import process  # only when Blender starts: off costs nothing

        self.runtime = runtime
        extra = (["--blender", exe] if exe else []) + ([blend_file] if blend_file else [])
        launcher = [sys.executable, "-c", _SERVE_BOOT, str(os.getpid())]
        env = dict(os.environ)
        env.pop("BLD_REMOTE_MCP_START_NOW", None)
        argv = process.serve_argv(runtime, 0, extra, launcher=launcher)
        self.serve = process.ServeProcess(argv, env, keep=_OUTPUT_LINES)
        self.cmd = self.serve.argv
        self.proc = self.serve.proc
        self.output = self.serve.lines
        try:
            ready = self.serve.wait_ready(start_timeout)
        except process.StartError as e:
            self.kill()
            if e.exited:
                raise BlenderError(
                    f"`blendwire serve` ended ({_describe_exit(e.returncode)}) before serving\n{self.tail()}"
                ) from None
            raise BlenderError(f"Blender did not serve within {start_timeout:g} s\n{self.tail()}") from None
        self.host, self.port, self.version = ready.host, ready.port, ready.blender_version
        from .client import Client

        self.timeout = timeout
        self.client = Client(self.host, self.port, timeout=timeout, connect_timeout=5.0)
        # Not the session client: a test's call must outwait its job's deadline (see client_for).
        self._clients: dict[float, Any] = {}

    def client_for(self, timeout: float) -> Any:
        """A client for calls whose jobs get `timeout` seconds in Blender (one per distinct timeout):
        it waits long enough for Blender's own answer after the deadline (`interrupted`, or
        `timeout` after the core's interrupt grace), plus time for the answer to arrive."""
        if timeout not in self._clients:
            from .client import Client

            wait = timeout + _core_defaults()["interrupt_grace"] + _ANSWER_SLACK
            self._clients[timeout] = Client(self.host, self.port, timeout=wait, connect_timeout=5.0)
        return self._clients[timeout]

    def tail(self, lines: int = 40) -> str:
        shown = list(self.output)[-lines:]
        return f"--- {' '.join(self.cmd)}: last {len(shown)} lines of output:\n" + "\n".join(shown)

    def alive(self) -> bool:
        return self.serve.alive()

    def wait(self, timeout: float) -> int | None:
        return self.serve.wait(timeout)

    def kill(self) -> None:
        """SIGKILL serve, its Blender and whatever they started (Xvfb)."""
        self.serve.kill(STOP_TIMEOUT)

    def stop(self) -> None:
        """`server_shutdown`, then SIGKILL after STOP_TIMEOUT."""
        if self.alive():
            from .client import Client

            try:  # its own short-timeout client: the session's may be stuck in a call (Ctrl-C)
                with Client(self.host, self.port, timeout=5.0, connect_timeout=2.0) as c:
                    c.call("server_shutdown")
            except Exception:
                pass
            if self.wait(STOP_TIMEOUT) is None:
                self.kill()
        for client in self._clients.values():
            client.close()


class BlenderSession:
    """The Blender of this pytest process: started on first need, restarted after a crash or a
    timeout, stopped at the end."""

    def __init__(
        self,
        runtime: str,
        exe: str | None,
        blend_file: str | None,
        timeout: float,
        start_timeout: float,
        pythonpath: list[str],
    ):
        self.runtime, self.exe, self.blend_file = runtime, exe, blend_file
        self.timeout, self.start_timeout = timeout, start_timeout
        self.pythonpath = pythonpath
        self.process: BlenderProcess | None = None
        self.start_error: str | None = None
        self.starts = 0

    def ensure(self) -> BlenderProcess:
        """The running Blender, started (again) if there is none."""
        if self.process is not None and self.process.alive():
            return self.process
        if self.process is not None:
            self.process.kill()
            self.process = None
        if self.start_error:  # one failed start is enough: don't pay the start timeout per test
            raise BlenderError(self.start_error)
        try:
            self.process = BlenderProcess(self.runtime, self.exe, self.blend_file, self.timeout, self.start_timeout)
        except (BlenderError, OSError) as e:
            self.start_error = f"Blender could not be started: {e}"
            raise BlenderError(self.start_error) from None
        self.starts += 1
        if self.pythonpath:  # the ini's `pythonpath`, for Blender too (what the tests import)
            code = f"import sys\nfor p in reversed({self.pythonpath!r}):\n    p in sys.path or sys.path.insert(0, p)\n"
            self.call_code(self.process, code)
        return self.process

    def lost(self, what: str) -> str:
        """After a call failed with a lost connection: what happened to Blender (waiting a little
        for it to exit); it is replaced at the next ensure()."""
        process = self.process
        if process is None:
            return what
        rc = process.wait(5.0)
        if rc is None:
            process.kill()
            state = "the connection was lost and Blender was killed"
        else:
            # serve's own status is 1; Blender's is in serve's last words.
            found = re.findall(r"Blender exited with status (-?\d+)", "\n".join(process.output))
            state = f"Blender crashed ({_describe_exit(int(found[-1]) if found else rc)})"
        self.process = None
        return f"{what}: {state}; a new Blender is started for the next test\n{process.tail()}"

    def interrupted(self, what: str, timeout: float | None, error: Exception) -> str:
        """A job that ran past the timeout and was interrupted in Blender: Blender is kept."""
        return (
            f"{what}: interrupted in Blender after running past {timeout or self.timeout:g} s "
            "(--blender-timeout, ini blender_timeout or @pytest.mark.blender_timeout(S)); "
            f"Blender is kept for the next test\n{error}"
        )

    def timed_out(self, what: str, timeout: float | None = None) -> str:
        """After a call ran past the timeout and its interrupt did not end it (a C call that does
        not return, code that swallows the interrupt) or no answer came: Blender is killed and
        replaced at the next ensure()."""
        process = self.process
        self.process = None
        if process is not None:
            process.kill()
        return (
            f"{what}: still running after {timeout or self.timeout:g} s "
            "(--blender-timeout, ini blender_timeout or @pytest.mark.blender_timeout(S)); "
            "Blender was killed, a new one is started for the next test"
        )

    def reset(self, blend_file: str | None = None) -> None:
        process = self.ensure()
        self.call_code(
            process,
            f"from blendwire import pytest_runner\npytest_runner.reset_scene({blend_file or self.blend_file!r})\n",
        )

    def call_code(self, process: BlenderProcess, code: str, what: str = "the call to Blender") -> str:
        return self.guard(process.client.execute, code, what=what)

    def guard(self, fn, *args: Any, what: str = "the call to Blender", timeout: float | None = None) -> Any:
        """`fn(*args)` (a call to Blender); a timeout or a lost Blender becomes a BlenderError saying
        what happened, and Blender is replaced for the next test."""
        from .errors import CommandError, ConnectionFailed, ConnectionLost, Timeout

        __tracebackhide__ = True  # the report starts in the test, not here
        try:
            return fn(*args)
        except CommandError as e:
            if e.error_code == "interrupted":
                raise BlenderError(self.interrupted(what, timeout, e)) from None
            if e.error_code == "timeout":  # still running after the interrupt grace
                raise BlenderError(self.timed_out(what, timeout)) from None
            raise
        except Timeout:
            raise BlenderError(self.timed_out(what, timeout)) from None
        except (ConnectionLost, ConnectionFailed):
            raise BlenderError(self.lost(what)) from None

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


# ---- the `blender` fixture -----------------------------------------------------------------------


class BlenderHandle:
    """What the `blender` fixture gives a test: the session's Blender, from outside.

    `call(type, params)` sends a command (`get_scene_info`, `get_object_info`, `execute_code`, ...),
    `run(code)` runs Python in Blender and returns what it printed, `reset()` loads a fresh scene,
    `load(path)` opens a .blend; `client` is the `blendwire.Client` itself (replaced when Blender is
    restarted)."""

    def __init__(self, session: BlenderSession, timeout: float | None = None):
        self._session = session
        self._timeout = timeout or session.timeout

    @property
    def client(self) -> Any:
        """The `blendwire.Client` to the running Blender (started if there is none); its calls wait
        as long as the test's timeout."""
        return self._session.ensure().client_for(self._timeout)

    @property
    def version(self) -> str:
        return self._session.ensure().version

    @property
    def runtime(self) -> str:
        return self._session.runtime

    def call(self, type: str, params: dict | None = None) -> Any:
        """The command's result; `blendwire.CommandError` when it fails, BlenderError when Blender
        crashed or the call ran past the timeout (its job is interrupted in Blender at the timeout;
        Blender is replaced for the next test only when that does not end it)."""
        __tracebackhide__ = True
        params = {"_timeout_seconds": self._timeout, **(params or {})}  # the test's deadline in Blender
        return self._session.guard(self.client.call, type, params, timeout=self._timeout)

    def run(self, code: str) -> str:
        """Run Python `code` in Blender (fresh globals with `bpy`); return what it printed."""
        __tracebackhide__ = True
        return self._session.guard(self._execute, code, timeout=self._timeout)

    def _execute(self, code: str) -> str:
        return self.client.execute(code, timeout_seconds=self._timeout)

    execute = run

    def reset(self) -> None:
        """A fresh scene: the factory start-up file, or the --blender-file reopened."""
        __tracebackhide__ = True
        self._session.reset()

    def load(self, path: str | os.PathLike) -> None:
        """Open the .blend at `path` (until the next reset)."""
        __tracebackhide__ = True
        path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        self._session.reset(path)


@pytest.fixture
def blender(request: pytest.FixtureRequest) -> BlenderHandle:
    """The Blender of this test session (needs --blender), with a fresh scene unless the test is
    marked blender_keep_scene."""
    session = _session(request.config)
    if session is None:
        pytest.skip("the `blender` fixture needs Blender: run pytest with --blender (or ini blender = true)")
    from .errors import CommandError

    request.node.stash[_USES_BLENDER] = True
    failure = None
    try:
        if request.node.get_closest_marker("blender_keep_scene") is None:
            session.reset()
        else:
            session.ensure()
    except (BlenderError, CommandError) as e:
        failure = f"Blender before the test: {e}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return BlenderHandle(session, _test_timeout(request.node))


# ---- in_blender tests ----------------------------------------------------------------------------


def _encode(name: str, value: Any) -> Any:
    """A fixture value as JSON for Blender (paths and tuples tagged); TypeError if it cannot go."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, pathlib.PurePath):
        return {"__path__": str(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(name, v) for v in value]}
    if isinstance(value, list):
        return [_encode(name, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(name, v) for k, v in value.items()}
    raise TypeError(
        f"fixture {name!r} is a {type(value).__name__}: an in_blender test gets only JSON values, "
        "paths and tuples (compute other values inside the test)"
    )


def _test_timeout(item: pytest.Item) -> float | None:
    """The test's `@pytest.mark.blender_timeout(S)`, if it has one."""
    marker = item.get_closest_marker("blender_timeout")
    if marker is None:
        return None
    value = marker.args[0] if marker.args else marker.kwargs.get("seconds")
    try:
        seconds = float(value)  # type: ignore[arg-type]  # not a number: the except below
    except (TypeError, ValueError):
        seconds = 0.0
    if seconds <= 0:
        raise pytest.UsageError(f"{item.nodeid}: blender_timeout needs a positive number of seconds, got {value!r}")
    return seconds


def _module_name(path: pathlib.Path) -> tuple[str, str]:
    """(module name, directory to put on sys.path) as pytest's default `prepend` import mode
    makes them: up through the directories that are packages."""
    parts = [path.stem]
    base = path.parent
    while (base / "__init__.py").is_file():
        parts.insert(0, base.name)
        base = base.parent
    return ".".join(parts), str(base)


def _pytest_dir() -> str:
    """The directory that holds pytest (appended to Blender's sys.path for assertion rewriting)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(pytest.__file__)))


class _Hooks:
    """The plugin's hooks while it is on (registered by pytest_configure)."""

    def __init__(self, session: BlenderSession):
        self.session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        if pyfuncitem.get_closest_marker("in_blender") is None:
            return None
        pyfuncitem.stash[_USES_BLENDER] = True
        self._run_in_blender(pyfuncitem)
        return True

    def _run_in_blender(self, item: pytest.Function) -> None:
        from .errors import CommandError

        path = pathlib.Path(str(item.path)).resolve()
        module, base = _module_name(path)
        # The test function's own parameters (not autouse fixtures, whose values stay outside).
        argnames = [n for n in inspect.signature(item.obj).parameters if n in item.funcargs]
        try:
            args = {name: _encode(name, item.funcargs[name]) for name in argnames}
        except TypeError as e:
            pytest.fail(str(e), pytrace=False)
        keep = item.get_closest_marker("blender_keep_scene") is not None
        spec = {
            "path": str(path),
            "module": module,
            "func": item.originalname,
            "cls": item.cls.__name__ if item.cls is not None else None,
            "args": args,
            "sys_path": [base],
            "append_path": [_pytest_dir()],
            "reset": None if keep else {"file": self.session.blend_file},
            "verbosity": item.config.get_verbosity(),
        }
        code = (
            f"import json\nfrom blendwire import pytest_runner\npytest_runner.main(json.loads({json.dumps(spec)!r}))\n"
        )
        failure = None
        try:
            process = self.session.ensure()
            timeout = _test_timeout(item) or self.session.timeout
            client = process.client_for(timeout)
            out = self.session.guard(
                lambda: client.execute(code, timeout_seconds=timeout), what="the test in Blender", timeout=timeout
            )
        except BlenderError as e:
            failure = str(e)
        except CommandError as e:
            failure = f"in Blender, the test runner failed: {e}"
        if failure is not None:  # failed outside the except: no "during handling" chain in the report
            pytest.fail(failure, pytrace=False)
        result = None
        for line in reversed(out.splitlines()):
            if line.startswith(MARKER + " "):
                result = json.loads(line[len(MARKER) + 1 :])
                break
        if result is None:
            pytest.fail(f"in Blender: no result from the test runner; its output:\n{out}", pytrace=False)
        for name in ("stdout", "stderr"):
            if result.get(name):
                item.add_report_section("call", f"{name} (in Blender)", result[name])
        outcome = result["outcome"]
        where = f"in Blender {process.version} ({self.session.runtime})"
        if outcome == "skipped":
            # Reported at the test's own location, as a skip mark is (not at this line).
            raise pytest.skip.Exception(result.get("message") or "skipped in Blender", _use_item_location=True)
        if outcome == "xfailed":
            pytest.xfail(result.get("message") or "xfail in Blender")
        if outcome == "failed":
            text = result.get("traceback") or result.get("message") or "failed"
            pytest.fail(f"{where}:\n{text.rstrip()}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if call.excinfo is not None and item.stash.get(_USES_BLENDER, False) and call.when == "call":
            process = self.session.process
            if process is not None and not process.alive():
                state = self.session.lost("Blender is gone after this test")
                report.sections.append(("Blender", state))
        return report

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.close()

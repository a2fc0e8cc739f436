"""`blendwire serve` processes in the test suites, on top of `blendwire.process`: started with
`--ready-json` in a session of their own, their handshake read with a deadline, stopped with
`server_shutdown` (asserted) or killed with everything under them.

Venv Python only (it imports the blendwire package).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from blendwire import process
from bw_json import assert_success, request
from bw_net import HOST

__all__ = [
    "EXIT_TIMEOUT",
    "RUNTIME_ARGS",
    "START_TIMEOUT",
    "ServeProcess",
    "blendwire_command",
    "descendants",
    "start_serve",
]

RUNTIME_ARGS = process.RUNTIME_ARGS
START_TIMEOUT = float(os.environ.get("BLENDWIRE_TEST_START_TIMEOUT", "180"))
EXIT_TIMEOUT = 30.0
descendants = process.descendants


def blendwire_command() -> list[str]:
    """How to run the `blendwire` console script: $BLENDWIRE_BIN, next to this Python, or on PATH."""
    if os.environ.get("BLENDWIRE_BIN"):
        return [os.environ["BLENDWIRE_BIN"]]
    here = os.path.join(os.path.dirname(sys.executable), "blendwire")
    if os.path.exists(here):
        return [here]
    found = shutil.which("blendwire")
    if found:
        return [found]
    raise AssertionError("the `blendwire` command is not installed (run scripts/setup)")


class ServeProcess(process.ServeProcess):
    """`blendwire serve --ready-json ARGS` (ARGS: --port and the runtime's flags included), all of
    its output kept; `.host`, `.port`, `.version`, `.runtime` once `wait_serving()` read the handshake.
    ready_json=False: without the flag (only for checking what people see; nothing to wait for)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, ready_json: bool = True):
        self.args = list(args)
        self.cmd = blendwire_command() + ["serve"] + (["--ready-json"] if ready_json else []) + self.args
        super().__init__(self.cmd, env=dict(os.environ, **(env or {})), keep=None)
        self.host: str | None = None
        self.port: int | None = None
        self.version: str | None = None
        self.runtime: str | None = None

    def output(self, limit: int = 60) -> str:
        return self.tail(limit)

    def wait_serving(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        """Wait for the ready handshake; AssertionError (with the output) on exit or deadline."""
        try:
            ready = self.wait_ready(timeout)
        except process.StartError as e:
            raise AssertionError(str(e)) from None
        self.host, self.port = ready.host, ready.port
        self.version, self.runtime = ready.blender_version, ready.runtime
        return self

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        """The exit code, or None if it is still running after `timeout` (its output read to the end)."""
        rc = self.wait(timeout)
        if rc is not None:
            self.join_output(10)
        return rc

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        """SIGKILL blendwire and every process under it (Blender runs in a session of its own)."""
        return super().kill(timeout)

    def shutdown(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Send `server_shutdown`; assert the answer and that the process exits 0 within `timeout`.

        On any failure the process group is killed and AssertionError raised."""
        try:
            if self.proc.poll() is None:
                resp = request(self.port, "server_shutdown", host=self.host or HOST, timeout=timeout)
                result = assert_success(resp)
                assert result.get("message") == "Server shutdown initiated", resp
            rc = self.wait_exit(timeout)
            assert rc is not None, f"blendwire serve still running {timeout}s after server_shutdown"
            assert rc == 0, f"blendwire serve exited {rc} after server_shutdown"
            return rc
        except BaseException as e:
            self.kill()
            raise AssertionError(f"{e}\n{self.output()}") from e

    def __del__(self):
        try:
            if self.proc.poll() is None:
                self.kill()
        except Exception:
            pass


def start_serve(
    runtime: str, port: int = 0, extra: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ServeProcess:
    """Start `blendwire serve --ready-json --port PORT` for a runtime and wait until it serves."""
    args = ["--port", str(port)] + RUNTIME_ARGS[runtime] + list(extra or [])
    sp = ServeProcess(args, env=env)
    try:
        sp.wait_serving()
    except BaseException:
        sp.kill()
        raise
    assert sp.runtime == runtime, f"asked for {runtime}, the handshake says {sp.runtime}\n{sp.output()}"
    if port:
        assert sp.port == port, sp.output()
    return sp

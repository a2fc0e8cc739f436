"""The test suites' helpers, one import for the many test files that use several of them.

Each concern has its own module; this facade only re-exports them:
- `bw_wait`: polling with a deadline (never a fixed sleep standing in for readiness), flag files;
- `bw_net`: ports and sockets, the TCP sockets of a process from /proc;
- `bw_json`: raw JSON over a socket (the stream parser, `Conn`, one-shot requests, answer checks);
- `bw_peers`: helper programs as child processes, TCP listeners and a scripted fake server;
- `bw_serve`: `blendwire serve` processes on top of `blendwire.process` (venv Python only: loaded
  on first use, so the others stay importable in Blender's Python with the standard library only).
"""

from __future__ import annotations

from typing import Any

from bw_json import (
    Conn,
    assert_error,
    assert_success,
    blocking_code,
    execute,
    parse_all,
    parse_one,
    parse_values,
    read_json,
    read_until_eof,
    read_values,
    request,
    stdout_of,
)
from bw_net import HOST, connect, connection_refused, free_port, port_is_bindable, taken_port, tcp_sockets
from bw_peers import ChildProcess, FakeServer, Listener
from bw_wait import join_all, poll_until, touch, wait_file, wait_for

_SERVE = {
    "EXIT_TIMEOUT",
    "RUNTIME_ARGS",
    "START_TIMEOUT",
    "ServeProcess",
    "blendwire_command",
    "descendants",
    "start_serve",
}

__all__ = [
    "HOST",
    "ChildProcess",
    "Conn",
    "FakeServer",
    "Listener",
    "assert_error",
    "assert_success",
    "blocking_code",
    "connect",
    "connection_refused",
    "execute",
    "free_port",
    "join_all",
    "parse_all",
    "parse_one",
    "parse_values",
    "poll_until",
    "port_is_bindable",
    "read_json",
    "read_until_eof",
    "read_values",
    "request",
    "stdout_of",
    "taken_port",
    "tcp_sockets",
    "touch",
    "wait_file",
    "wait_for",
    *sorted(_SERVE),
]


def __getattr__(name: str) -> Any:
    if name in _SERVE:
        import bw_serve

        return getattr(bw_serve, name)
    raise AttributeError(f"module 'bwtest' has no attribute {name!r}")

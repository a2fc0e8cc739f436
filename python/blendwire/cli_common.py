"""What every `blendwire` command shares: the user-facing error (`Fail`), the core's setting
problems worded with our flags, and one command sent to a running service (`service_call`).
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from .client import Client
from .config import env_port
from .errors import BlendwireError

__all__ = ["Fail", "check", "core_error", "flag", "probe", "service_call"]


class Fail(Exception):
    """A user-facing error: printed as `blendwire: error: ...`, exit status 1."""


def flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def check(problems: Sequence[tuple[str, str]], flags: Mapping[str, str] | None = None) -> None:
    """The core's (setting, rule) problems as one Fail naming our flags."""
    if problems:
        flags = flags or {}
        raise Fail("; ".join(f"{flags.get(name, flag(name))} {text}" for name, text in problems))


def core_error(e: Exception, flags: Mapping[str, str] | None = None) -> Fail:
    """A ValueError of the core ("SETTING rule ...") as a Fail naming our flag."""
    name, _, rest = str(e).partition(" ")
    flags = flags or {}
    return Fail(f"{flags.get(name, flag(name))} {rest}" if rest and name.isidentifier() else str(e))


def probe(host: str, port: int, timeout: float) -> None:
    # The client retries a refused connection until its timeout (right for scripts riding out a
    # restart); a one-shot command should say at once that nothing listens.
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except ConnectionRefusedError:
        raise Fail(
            f"nothing is listening on {host}:{port}; start the service with "
            f"`blendwire serve --port {port}` (or check --host/--port, $BLD_REMOTE_MCP_PORT)"
        ) from None
    except OSError:
        pass  # unreachable, timeout...: let the client report it


def service_call(args: argparse.Namespace, command: str, params: dict[str, Any]) -> Any:
    """One command to the service at --host/--port, its result (a Fail on an error answer)."""
    port = args.port if args.port is not None else env_port()
    probe(args.host, port, args.timeout)
    try:
        with Client(args.host, port, args.timeout) as c:
            response = c.request({"type": command, "params": params})
    except BlendwireError as e:
        raise Fail(f"{type(e).__name__}: {e}") from None
    if response.get("status") == "error":
        code = response.get("error_code")
        raise Fail(f"{response.get('message')}" + (f" [{code}]" if code else ""))
    return response

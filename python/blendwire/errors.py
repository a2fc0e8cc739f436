"""The exceptions blendwire raises. Defined once, here; the Rust core raises these same classes."""

import threading
from typing import Any

__all__ = [
    "BlendwireError",
    "CommandError",
    "ConnectionFailed",
    "ConnectionLost",
    "Interrupted",
    "PortInUse",
    "ProtocolError",
    "ServiceError",
    "Timeout",
    "require_main_thread",
]


class BlendwireError(Exception):
    """Base class of every blendwire error."""


class ConnectionFailed(BlendwireError, ConnectionError):
    """Could not connect to the service (refused or unreachable) before the timeout ran out.

    Start Blender with the service (`blendwire serve`) or check host and port.
    """


class ConnectionLost(BlendwireError, ConnectionError):
    """The connection dropped while a call was in flight: the command may or may not have run."""


class Timeout(BlendwireError, TimeoutError):
    """No answer within the timeout."""


class ProtocolError(BlendwireError):
    """The peer sent bytes that are not a valid blendwire/BLD Remote response."""


class CommandError(BlendwireError):
    """The service answered `status: error`, or a handler wants to answer with one.

    `error_code` is the machine-readable kind (`unknown_rpc_command`, `busy`, `timeout`,
    `invalid_params`, `handler_exception`, ...); `str(err)` is the message.
    """

    def __init__(self, message: str, error_code: str = "command_error", response: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.response = response


class Interrupted(BaseException):
    """Raised inside a job on Blender's main thread that ran past its deadline (or was running when
    a stop came), so a runaway `while True:` or `time.sleep()` ends and the service goes on.

    A BaseException, not a BlendwireError: `except Exception:` in sent code must not swallow it. Its
    caller is answered `error_code: "interrupted"` (a CommandError with that code on the client).
    """


class ServiceError(BlendwireError):
    """The command service could not be started or stopped as asked."""


class PortInUse(ServiceError, OSError):
    """The port is already taken by another process (often another Blender with a service)."""


def require_main_thread(what: str) -> None:
    """Raise ServiceError unless called on the main thread (bpy and the bridge's jobs live there)."""
    if threading.current_thread() is not threading.main_thread():
        raise ServiceError(f"blendwire: {what}() must be called on Blender's main thread")

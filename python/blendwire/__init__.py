"""blendwire: networking core for Blender (main-thread bridge, BLD-Remote-compatible service, client).

Importable in plain Python. The modules, imports pointing one way (each only imports those above):

- `_core` (Rust), `errors`, `config`, `persist`, `logs`, `client`, `jobs` (`progress()` for code
  running in a job): no bpy;
- `handlers/` (what runs on the main thread per request: the code runner, BLD Remote's, blender-mcp's
  and Blender Lab's command tables, the cr8 registry; see `blendwire.handlers`);
- `runtime` (the main-thread loop, its phases and the watchdog's save), then `blender` (the command
  service) and `router` (the engine router): the runtime, inside Blender;
- `serve` (serving inside Blender), `blender_child` (Blender as a child process),
  `process` (`blendwire serve` as a process: its ready handshake, start, stop), `cli`: the command;
- `pytest_plugin` (the pytest plugin, no bpy; off unless `pytest --blender`) and `pytest_runner`
  (its Blender side, which runs one `in_blender` test).
"""

from typing import Any

from . import _core
from .client import Client
from .errors import (
    BlendwireError,
    CommandError,
    ConnectionFailed,
    ConnectionLost,
    PortInUse,
    ProtocolError,
    ServiceError,
    Timeout,
)
from .jobs import progress

__version__ = _core.__version__

__all__ = [
    "__version__",
    "Client",
    "progress",
    "status",
    "BlendwireError",
    "CommandError",
    "ConnectionFailed",
    "ConnectionLost",
    "PortInUse",
    "ProtocolError",
    "ServiceError",
    "Timeout",
]


def status() -> dict[str, Any]:
    """Counters and state of the core in this process (service, main-thread queue)."""
    return _core.status()

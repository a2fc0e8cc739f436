"""blendwire: networking core for Blender (main-thread bridge, BLD-Remote-compatible service, client).

Importable in plain Python: bpy is only imported by `blendwire.commands` / `blendwire.blender`,
which run inside Blender.
"""

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

__version__ = _core.__version__

__all__ = [
    "__version__",
    "Client",
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


def status():
    """Counters and state of the core in this process (service, main-thread queue)."""
    return _core.status()

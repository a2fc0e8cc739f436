"""Logging of blendwire: the `blendwire` logger's stderr handler, the level shared with the core,
and a flush before the process ends on its own terms.

The core keeps its records in a buffer and hands them to Python's `logging` on the main thread
(`_core.tick` / `_core.pump` / `_core.flush_logs`), under the logger names of their Rust modules
(`blendwire.service`, `blendwire.router`, ...). No bpy here.
"""

from __future__ import annotations

import logging
import sys

from . import _core
from .config import env_log_level

__all__ = ["apply_level", "flush", "setup"]

_LOGGER = "blendwire"


def setup(level: int | str = logging.INFO) -> None:
    """Send `blendwire.*` records to stderr (a Blender started by `blendwire serve` has no logging
    set up otherwise, and the router's arming/disarming/saving lines are INFO/WARNING)."""
    logger = logging.getLogger(_LOGGER)
    if not any(getattr(h, "_blendwire", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("blendwire: %(name)s %(levelname)s: %(message)s"))
        handler._blendwire = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def apply_level(level: int | str | None = None) -> None:
    """Set the level of the core's records and of the `blendwire` logger: `level` (a `logging`
    name or number, e.g. the add-on's preference), else env `BLD_REMOTE_LOG_LEVEL` as the peer
    honours it; neither: unchanged. A bad value is reported on stderr and ignored (the service
    still starts)."""
    source = "log level"
    if level is None:
        level, source = env_log_level(), "BLD_REMOTE_LOG_LEVEL"
    if level is None or level == "":
        return
    try:
        name = _core.set_log_level(level)
    except ValueError as e:
        print(f"blendwire: ignoring {source}: {e}", file=sys.stderr)
        return
    # The core drops records below its level before they reach Python; the logger must not hide
    # the ones that do come (NOTSET would defer to the root logger's WARNING).
    logging.getLogger(_LOGGER).setLevel(name)


def flush() -> None:
    """Hand the core's pending records to `logging` and flush every handler and the standard
    streams: the process is about to end (possibly through `os._exit`)."""
    try:
        _core.flush_logs()
    except Exception:
        pass
    for handler in logging.getLogger().handlers + logging.getLogger(_LOGGER).handlers:
        try:
            handler.flush()
        except Exception:
            pass
    sys.stdout.flush()
    sys.stderr.flush()

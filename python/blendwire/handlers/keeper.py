"""The main thread's keeper: what runs around every job that may change Blender's data.

The core calls `keep("before", info)` ahead of such a job (a checkpoint, `checkpoints`) and
`keep("after", info)` once it ran (the GUI's undo step, `undo`); reads pass by without either.
`info` is the job's record as the core made it where the request was parsed:
`{"job": {"command", "client", "listener", "dialect", "id"}, "undo_name": str}`, plus `"ok"`
after the job. Main thread only.
"""

from __future__ import annotations

from typing import Any

from . import checkpoints, undo

__all__ = ["keep"]


def keep(phase: str, info: dict[str, Any]) -> dict[str, Any] | None:
    """The core's keeper (`_core.set_keeper(keep)`)."""
    if phase == "before":
        return {"checkpoint": checkpoints.before_job(info)}
    undo.after_job(info)
    return None

"""The GUI's undo steps: one per job that may change data, named after it.

Main thread only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["after_job"]


def after_job(info: dict[str, Any]) -> None:
    """After a job that may change data: its undo step (the GUI only)."""
    return None  # no step pushed yet: lands with issue 22's undo steps (this session)

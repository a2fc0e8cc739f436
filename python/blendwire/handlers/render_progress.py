"""Blender's render handlers as the running job's progress, while a job whose client asked for
progress runs (`blendwire.handlers.code.captured_output` hooks them)."""

from __future__ import annotations

import re
from typing import Any

import bpy

from .. import _core

__all__ = ["hook"]

# Cycles: "... | Sample 12/128"; EEVEE: "Rendering 3 / 64 samples".
_SAMPLES = re.compile(r"(?:Sample|Rendering)\s+(\d+)\s*/\s*(\d+)")


def _render_stats(stats: Any, *_: Any) -> None:
    # Blender 4+ passes the stats line; 3.4 passes None (then the frame handler below speaks).
    if isinstance(stats, str) and stats:
        m = _SAMPLES.search(stats)
        done, total = (int(m[1]), int(m[2])) if m else (0, 0)
        _core.report_progress(min(1.0, done / total) if total else None, stats)


def _render_frame(scene: Any, *_: Any) -> None:
    frame = getattr(scene, "frame_current", None)
    _core.report_progress(None, "rendering" if frame is None else f"rendering frame {frame}")


# Blender's render handlers, reporting as the job's progress while a streaming job runs.
_RENDER_HANDLERS = (("render_stats", _render_stats), ("render_pre", _render_frame))


def hook(on: bool) -> None:
    """Add (on) or remove Blender's render handlers that report the job's progress."""
    for name, fn in _RENDER_HANDLERS:
        handlers = getattr(bpy.app.handlers, name, None)
        if handlers is None:
            continue
        if on and fn not in handlers:
            handlers.append(fn)
        elif not on and fn in handlers:
            handlers.remove(fn)

"""The GUI's undo steps: one per job that may change data, named after it; and `undo_last`.

After such a job (`after_job`, called by the keeper whether the job succeeded or not: one that
failed halfway changed data too) Blender's undo stack gets exactly one step named after the job
(`blendwire: execute_code (bld_remote)`, the core's `undo_name`). Operators called from Python
push no step of their own (checked on Debian's Blender 3.4), so the whole job is that one step, and
the step before it is the user's own last one: Ctrl+Z takes back the job and nothing of the user's.
No step is pushed before the job: Blender keeps every pushed step even when nothing changed, so that
would add a step per job that Ctrl+Z walks through without a visible change, and the user's own
ways to change data in the UI (operators, property edits, the Python console, Run Script) push
their own steps.

`undo_last` takes back blendwire's last step, and refuses when the step on top is not one that
blendwire pushed. `blender -b` and the bpy module have no undo stack: nothing is pushed there, and
`undo_last` answers so (checkpoints take a job back there).

Main thread only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import bpy

from ..errors import CommandError

__all__ = ["UNDO_LAST", "after_job", "undo_last"]

log = logging.getLogger("blendwire.undo")

# The command that takes back blendwire's last step. It moves the undo stack itself, so it gets no
# step of its own (which would only be the step it just took back, pushed again).
UNDO_LAST = "undo_last"

_NO_UNDO_STACK = (
    "undo_last: there is no undo stack in blender -b or the bpy module (Blender keeps undo steps "
    'only in its UI); take the job back with restore_checkpoint {"id": ID} (list_checkpoints names them)'
)


class _Pushed:
    """The names of the steps blendwire pushed in this Blender: the top step is blendwire's when its
    name is one of them (a user's own steps are named after their operators)."""

    names: set[str] = set()


def after_job(info: dict[str, Any]) -> None:
    """After a job that may change data: its undo step (the GUI only)."""
    if bpy.app.background or info.get("job", {}).get("command") == UNDO_LAST:
        return
    name = str(info.get("undo_name") or "blendwire")
    with _window_context() as ok:
        if not ok:
            return
        try:
            bpy.ops.ed.undo_push(message=name)
        except RuntimeError as e:  # e.g. the operator's poll failed while Blender closes a file
            log.warning("blendwire: no undo step for %s: %s", name, e)
            return
    _Pushed.names.add(name)


def undo_last(params: dict[str, Any]) -> dict[str, Any]:
    """Take back blendwire's last undo step: `{"undone": its name, "now_at": the step now on top}`."""
    if bpy.app.background:
        raise CommandError(_NO_UNDO_STACK, "no_undo_stack")
    top = _top_step()
    if top is None:
        raise CommandError(
            "undo_last: Blender's undo stack cannot be read here (its undo steps are printed to the "
            "C stdout, which this platform does not let blendwire read); use Ctrl+Z in Blender, or "
            "restore_checkpoint",
            "no_undo_stack",
        )
    if top not in _Pushed.names:
        raise CommandError(
            f"undo_last: the last undo step is {top!r}, not one of blendwire's jobs: nothing was taken "
            "back (undo_last takes back only the steps of blendwire's jobs; the user's own are for Ctrl+Z "
            "in Blender)",
            "not_blendwires_step",
        )
    with _window_context() as ok:
        try:
            result = bpy.ops.ed.undo() if ok else {"no window"}
        except RuntimeError as e:  # its poll failed, e.g. while a modal operator runs
            result = {str(e).strip()}
    if "FINISHED" not in result:
        raise CommandError(f"undo_last: Blender did not take back {top!r} ({', '.join(sorted(result))})", "undo_failed")
    return {"undone": top, "now_at": _top_step()}


@contextlib.contextmanager
def _window_context() -> Iterator[bool]:
    """The undo operators' context: a window (a timer's job may run without one). Yields False when
    Blender has no window (it is closing)."""
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm is not None and len(wm.windows) else None)
    if window is None:
        yield False
    elif hasattr(bpy.context, "temp_override"):  # Blender 3.2+
        with bpy.context.temp_override(window=window):
            yield True
    else:
        yield True


def _top_step() -> str | None:
    """The name of the active step of Blender's undo stack, or None when it cannot be read.

    `WindowManager.print_undo_steps()` is the only view of the stack Python has; it prints with C's
    printf, one line per step, e.g. `[* M ]   3 {0x..} type='Global Undo', name='Add Cube'`, the
    active step marked `*`. Read it from a temporary file put in place of the C stdout.
    """
    wm = bpy.context.window_manager
    if wm is None or not hasattr(wm, "print_undo_steps"):
        return None
    try:
        fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError, TypeError):  # no C library to flush (Windows)
        return None
    try:
        sys.stdout.flush()
        fflush(None)
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no stdout at all (closed, or None)
        return None
    try:
        with tempfile.TemporaryFile() as f:
            os.dup2(f.fileno(), 1)
            try:
                wm.print_undo_steps()
                fflush(None)
            finally:
                os.dup2(saved, 1)
            f.seek(0)
            text = f.read().decode("utf-8", "replace")
    finally:
        os.close(saved)
    for line in text.splitlines():
        if line.startswith("[*") and "name='" in line:
            return line[line.index("name='") + len("name='") : line.rindex("'")]
    return None

"""Running sent code: `run_code` (shared by BLD Remote's execute_code, its legacy `{"code": ...}`
form and blender-mcp's execute_code) and `captured_output` (also Blender Lab's)."""

from __future__ import annotations

import builtins
import contextlib
import io
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

import bpy

from .. import _core
from . import render_progress

__all__ = ["Outcome", "captured_output", "run_code"]


class Outcome:
    """What running sent code gave: its output, how long it ran, and the error (message and
    traceback from the sent code's frame on) or whether it asked to exit (`sys.exit()`)."""

    __slots__ = ("stdout", "stderr", "duration", "error", "traceback", "exit_requested")

    def __init__(self) -> None:
        self.stdout = self.stderr = ""
        self.duration = 0.0
        self.error: str | None = None
        self.traceback: str | None = None
        self.exit_requested = False


class _StreamedOutput(io.TextIOBase):
    """Captures like StringIO, and hands the job's client each write as it is printed (for requests
    with `"progress": true`; the answer still carries all of it). `write` is the core's own
    (`_core.JobOutput`), not a Python method, so streaming costs a job that prints a lot next to
    nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._sink = _core.JobOutput()
        self.write = self._sink.write  # type: ignore[method-assign]

    def writable(self) -> bool:
        return True

    def getvalue(self) -> str:
        return self._sink.getvalue()


@contextlib.contextmanager
def captured_output() -> Iterator[tuple[Any, io.StringIO]]:
    """While sent code runs: its stdout and stderr captured (yielded as two text streams with
    `getvalue()`); when its client asked for progress, stdout also streamed as printed and Blender's
    render handlers report the job's progress. Used by every dialect that runs sent code."""
    streaming = _core.job_streams()
    stdout: _StreamedOutput | io.StringIO = _StreamedOutput() if streaming else io.StringIO()
    stderr = io.StringIO()
    saved = sys.stdout, sys.stderr
    if streaming:
        render_progress.hook(True)
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield stdout, stderr
    finally:
        sys.stdout, sys.stderr = saved
        if streaming:
            render_progress.hook(False)


def run_code(code: str) -> Outcome:
    """exec `code` with fresh globals, capturing stdout/stderr. Never raises for errors in `code`."""
    out = Outcome()
    globs: dict[str, Any] = {"__builtins__": builtins, "bpy": bpy}
    start = time.time()
    with captured_output() as (stdout, stderr):
        try:
            exec(compile(code, "<string>", "exec"), globs)
        except SystemExit:
            # `sys.exit()` in sent code is how blender-remote's client asks the server to exit
            # (send_exit_request); treat it as a shutdown request instead of killing Blender mid-call.
            out.exit_requested = True
        except Exception as e:
            out.error = str(e) or type(e).__name__
            # Skip our own frame: the traceback should start in the user's code.
            tb = e.__traceback__
            out.traceback = "".join(traceback.format_exception(type(e), e, tb.tb_next if tb else None))
    out.duration = time.time() - start
    out.stdout, out.stderr = stdout.getvalue(), stderr.getvalue()
    return out

"""Blender Lab's MCP protocol (Blender's own MCP add-on and its `blmcp` server): the main-thread side.

The core's MCP add-on listener takes a Blender Lab request (`{"type": "execute", "code": ...,
"strict_json": bool}`, NUL-terminated), checks its shape and queues it for the main thread, where
`dispatch` (`_core.set_dispatcher(dispatch, dialect="blender_lab")`) runs it:

- "execute" {code, strict_json}: the code runs in a fresh namespace that starts with
  `result = {}`, its stdout and stderr captured; the answer is `{"status": "ok", "result": ...}`
  (plus "stdout"/"stderr" when not empty) or `{"status": "error", "message": <traceback>}`.
  `strict_json`: a result that is not JSON is an error; without it such values become their
  `repr()`. While the code runs, `sys.exit` raises and the operators that would end or reset
  Blender (`wm.quit_blender`, `wm.read_factory_settings`, `wm.read_factory_userpref`,
  `wm.read_userpref`) are refused; unlike Blender Lab's add-on, `raise SystemExit` and `exit()` are
  errors too: code sent over the network never ends Blender.
- Deferred answers: code that leaves a callable `check_is_finished` in its namespace is answered
  later. "execute" returns the core's pending marker; the core asks again with "poll" {handle,
  cancel} every poll interval (in every runtime: the pump, the GUI timer) until
  `check_is_finished()` returns a dict (the result; the first run's stdout/stderr attached), raises,
  returns something else, the client leaves (cancel) or an hour passes.

The deadlines, interrupts, cancel and status of the service apply to each of these jobs.
"""

from __future__ import annotations

import builtins
import itertools
import json
import math
import sys
import traceback
from typing import Any, Literal, NoReturn

import bpy

from .. import _core
from ..errors import CommandError
from .code import captured_output

__all__ = ["REFUSED_OPERATORS", "dispatch"]

# Operators refused while sent code runs (Blender Lab's weak sandbox), with the reason given.
REFUSED_OPERATORS = {
    "quit_blender": "it would quit Blender, which serves this connection",
    "read_factory_settings": "it would reset Blender to factory settings and drop the open file",
    "read_factory_userpref": "it would reset the preferences to factory settings",
    "read_userpref": "it would reload the preferences and drop unsaved ones",
}


class _Pending:
    handles = itertools.count(1)
    # handle -> (check_is_finished, stdout, stderr, strict_json)
    entries: dict[int, tuple] = {}


class _Refused(RuntimeError):
    pass


def _exit_refused(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise _Refused("sys.exit() is not allowed in code sent to Blender: it would end Blender")


class _Sandbox:
    """While sent code runs: `sys.exit` raises, and the refused operators raise with their reason."""

    def __enter__(self) -> _Sandbox:
        self.exit = sys.exit
        sys.exit = _exit_refused
        self.op_class = type(bpy.ops.wm.quit_blender)
        self.call = self.op_class.__call__
        call = self.call

        def guarded(op: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(op, "_module", None) == "wm" and getattr(op, "_func", None) in REFUSED_OPERATORS:
                raise _Refused(
                    f"bpy.ops.wm.{op._func}() is not allowed in code sent to Blender: {REFUSED_OPERATORS[op._func]}"
                )
            return call(op, *args, **kwargs)

        self.op_class.__call__ = guarded
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        sys.exit = self.exit
        self.op_class.__call__ = self.call
        return False


def _error(message: str, stdout: str = "", stderr: str = "") -> dict:
    answer = {"status": "error", "message": message}
    return _with_output(answer, stdout, stderr)


def _with_output(answer: dict, stdout: str, stderr: str) -> dict:
    if stdout:
        answer["stdout"] = stdout
    if stderr:
        answer["stderr"] = stderr
    return answer


def _traceback(e: BaseException, skip: int = 1) -> str:
    tb = e.__traceback__
    for _ in range(skip):  # our own frames: the traceback starts in the sent code
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def _jsonable(value: Any, seen: set[int] | None = None) -> Any:
    """`value` with everything that is not JSON replaced by its repr() (strict_json false)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    seen = seen or set()
    if id(value) in seen:
        return repr(value)
    if isinstance(value, dict):
        seen = seen | {id(value)}
        out = {}
        for k, v in value.items():
            key = k if isinstance(k, str) else json.dumps(k) if isinstance(k, (int, float, bool)) or k is None else None
            out[repr(k) if key is None else key.strip('"')] = _jsonable(v, seen)
        return out
    if isinstance(value, (list, tuple)):
        seen = seen | {id(value)}
        return [_jsonable(v, seen) for v in value]
    return repr(value)


def _answer(result: Any, strict_json: bool, stdout: str, stderr: str) -> dict:
    if not isinstance(result, dict):
        return _error(
            f"'result' must be a dict, got {type(result).__name__}: wrap the value, e.g. result = {{'value': ...}}",
            stdout,
            stderr,
        )
    if strict_json:
        try:
            result = json.loads(json.dumps(result, allow_nan=False))
        except (TypeError, ValueError) as e:
            return _error(
                f"The result is not JSON-serializable: {e}; convert it (or send strict_json false to get repr())",
                stdout,
                stderr,
            )
    else:
        result = _jsonable(result)
    return _with_output({"status": "ok", "result": result}, stdout, stderr)


def _execute(code: str, strict_json: bool) -> dict:
    namespace = {"__builtins__": builtins, "__name__": "__main__", "result": {}}
    with captured_output() as (stdout, stderr):
        failed: BaseException | None
        try:
            with _Sandbox():
                exec(compile(code, "<string>", "exec"), namespace)
        except (Exception, SystemExit) as e:  # not Interrupted/KeyboardInterrupt: the core answers those
            failed = e
        else:
            failed = None
    if failed is not None:
        return _error(_traceback(failed), stdout.getvalue(), stderr.getvalue())
    out, err = stdout.getvalue(), stderr.getvalue()
    check = namespace.get("check_is_finished")
    if callable(check):
        handle = next(_Pending.handles)
        _Pending.entries[handle] = (check, out, err, strict_json)
        # First asked on a later turn, as Blender Lab's add-on does: work the code started (a
        # render job with INVOKE_DEFAULT) only begins once the main loop turns.
        return {_core.PENDING_KEY: handle}
    return _answer(namespace.get("result"), strict_json, out, err)


def _poll(handle: Any, cancel: bool) -> dict:
    entry = _Pending.entries.get(handle)
    if entry is None:
        return _error(f"No deferred request {handle!r} (finished or dropped)")
    check, out, err, strict_json = entry
    if cancel:
        _Pending.entries.pop(handle, None)
        return _error("The deferred request was dropped")
    try:
        with _Sandbox():
            finished = check()
    except (Exception, SystemExit) as e:
        _Pending.entries.pop(handle, None)
        return _error(_traceback(e), out, err)
    if finished is None or finished is False:
        return {_core.PENDING_KEY: handle}
    _Pending.entries.pop(handle, None)
    if not isinstance(finished, dict):
        return _error(
            f"check_is_finished() must return None (not finished) or a dict (the result), "
            f"got {type(finished).__name__}",
            out,
            err,
        )
    return _answer(finished, strict_json, out, err)


def dispatch(op: str, params: dict) -> dict:
    """The main-thread handler of Blender Lab requests (the core checked their shape)."""
    if op == "execute":
        return _execute(params["code"], bool(params["strict_json"]))
    if op == "poll":
        return _poll(params.get("handle"), bool(params.get("cancel")))
    raise CommandError(f"unknown Blender Lab op {op!r}", "invalid_params")

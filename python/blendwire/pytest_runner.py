"""The Blender side of the pytest plugin (`blendwire.pytest_plugin`): runs one `in_blender` test.

The plugin sends `from blendwire import pytest_runner; pytest_runner.main(SPEC)` with `execute_code`
to the Blender that `blendwire serve` started (where the blendwire package is importable already);
`main` prints one line, `BLENDWIRE-TEST {json}`, with the outcome. Nothing is installed into
Blender's Python: when the plugin passes the directory that holds pytest, it is APPENDED to
`sys.path` (Blender's own modules keep precedence; nothing is written there) and the test module is
compiled with pytest's assertion rewriting, so failures read as in pytest (`assert 3 == 4`,
`+  where 3 = count()`, and the comparison details of `pytest_assertrepr_compare`). Without pytest
the module is compiled as is and asserts carry their plain message.

The test module is loaded once per Blender process (as pytest imports it once per session) and
reloaded when the file changed. bpy is imported only when a scene is reset, inside Blender.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pathlib
import sys
import time
import traceback
import types
from typing import Any

from .errors import Interrupted

__all__ = ["MARKER", "decode_value", "main", "reset_scene", "run"]

MARKER = "BLENDWIRE-TEST"

# path -> (mtime_ns, size, module): the loaded test modules of this Blender process.
_modules: dict[str, tuple[int, int, types.ModuleType]] = {}
# The pytest config used for assertion details (None: not built yet; False: pytest unusable).
_assert_config: Any = None
_EXPLANATION_LINES = 40  # at most this many lines of comparison details (pytest truncates too)


def decode_value(value: Any) -> Any:
    """A fixture value as the plugin encoded it: JSON, with {"__path__": str} for pathlib paths,
    {"__tuple__": [...]} for tuples."""
    if isinstance(value, dict):
        if set(value) == {"__path__"}:
            return pathlib.Path(value["__path__"])
        if set(value) == {"__tuple__"}:
            return tuple(decode_value(v) for v in value["__tuple__"])
        return {k: decode_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def reset_scene(blend_file: str | None = None) -> None:
    """A fresh scene: the factory start-up file (Cube, Camera, Light; the preferences, registered
    classes, enabled add-ons and the GUI's window layout stay: load_ui=False, 20% faster in the
    GUI), or `blend_file` reopened."""
    import bpy

    if blend_file:
        bpy.ops.wm.open_mainfile(filepath=blend_file)
    else:
        bpy.ops.wm.read_homefile(use_factory_startup=True, load_ui=False)


def _add_paths(prepend: list[str], append: list[str]) -> None:
    for p in reversed(prepend):
        if p not in sys.path:
            sys.path.insert(0, p)
    for p in append:
        if p not in sys.path:
            sys.path.append(p)


def _rewriter():
    try:
        from _pytest.assertion import rewrite
    except Exception:
        return None
    return rewrite


def _install_reprcompare(verbosity: int) -> None:
    """pytest's comparison details (`pytest_assertrepr_compare`) for rewritten asserts, from a
    pytest config built once in this process without plugins."""
    global _assert_config
    if _assert_config is None:
        _assert_config = False
        saved = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        try:
            from _pytest.config import _prepareconfig

            args = ["-p", "no:cacheprovider", "--rootdir", os.path.abspath(os.sep), "-c", os.devnull]
            _assert_config = _prepareconfig(args + ["-v"] * verbosity)
        except Exception:
            pass
        finally:
            if saved is None:
                os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
            else:
                os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = saved
    config = _assert_config
    if not config:
        return
    from _pytest.assertion import util

    def callbinrepr(op: str, left: object, right: object) -> str | None:
        for explanation in config.hook.pytest_assertrepr_compare(config=config, op=op, left=left, right=right):
            if not explanation:
                continue
            lines: list[str] = []
            for line in explanation:
                if len(lines) == _EXPLANATION_LINES:
                    lines.append("...(more lines; -vv shows them)" if verbosity < 2 else "...")
                    break
                lines.append(line.replace("\n", "\\n"))
            if lines:
                return "\n~".join(lines).replace("%", "%%")
        return None

    util._reprcompare = callbinrepr
    util._config = config


def _load(path: str, name: str) -> types.ModuleType:
    st = os.stat(path)
    cached = _modules.get(path)
    if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
        return cached[2]
    with open(path, "rb") as f:
        source = f.read()
    tree = ast.parse(source, filename=path)
    rewrite = _rewriter()
    if rewrite is not None:
        rewrite.rewrite_asserts(tree, source, path, None)
    code = compile(tree, path, "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _modules[path] = (st.st_mtime_ns, st.st_size, module)
    return module


def _user_traceback(e: BaseException, path: str) -> str:
    """The traceback from the first frame in the test file on (the runner's frames left out)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb or e.__traceback__))


def _outcome_of(e: BaseException, path: str) -> dict:
    outcomes = sys.modules.get("_pytest.outcomes")  # pytest.skip/fail/xfail raise these
    if outcomes is not None and isinstance(e, outcomes.OutcomeException):
        message = getattr(e, "msg", None) or str(e)
        if isinstance(e, outcomes.Skipped):
            return {"outcome": "skipped", "message": message}
        if isinstance(e, outcomes.XFailed):
            return {"outcome": "xfailed", "message": message}
        return {"outcome": "failed", "message": message, "traceback": ""}
    message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return {"outcome": "failed", "message": message, "traceback": _user_traceback(e, path)}


def run(spec: dict) -> dict:
    """Run the test `spec` describes and return its outcome (never raises for the test's errors).

    spec: path, module (its name), func, cls (or None), args (encoded fixture values), sys_path
    (prepended), append_path (appended: pytest's directory), reset (None, or {"file": path|None}),
    verbosity."""
    path = spec["path"]
    result: dict = {"outcome": "passed"}
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    start = time.perf_counter()
    try:
        _add_paths(spec.get("sys_path") or [], spec.get("append_path") or [])
        if spec.get("reset") is not None:
            reset_scene(spec["reset"].get("file"))
        sys.stdout, sys.stderr = stdout, stderr
        module = _load(path, spec["module"])
        if _rewriter() is not None:
            _install_reprcompare(int(spec.get("verbosity") or 0))
        target: Any = module
        if spec.get("cls"):
            target = getattr(module, spec["cls"])()
        func = getattr(target, spec["func"])
        args = {k: decode_value(v) for k, v in (spec.get("args") or {}).items()}
        func(**args)
    except Interrupted:
        raise  # the test ran past its deadline: the service answers `interrupted` (when, where)
    except BaseException as e:  # the test's own failures, skips, SystemExit, KeyboardInterrupt
        result = _outcome_of(e, path)
    finally:
        sys.stdout, sys.stderr = saved
    result["stdout"] = stdout.getvalue()
    result["stderr"] = stderr.getvalue()
    result["duration"] = time.perf_counter() - start
    return result


def main(spec: dict) -> None:
    """`run(spec)`, printed as one `BLENDWIRE-TEST {json}` line (what execute_code returns)."""
    print(f"{MARKER} {json.dumps(run(spec))}")

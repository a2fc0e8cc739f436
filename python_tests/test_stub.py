"""`_core.pyi` says what the built core is: mypy's stubtest compares the stub (the source's, in
python/blendwire) with the module the wheel installed (scripts/setup builds it first), every
function's parameters and defaults, the classes, `__all__`."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_core_stub_matches_the_built_module():
    env = dict(os.environ, MYPYPATH=str(ROOT / "python"))
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "blendwire._core"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, f"_core.pyi disagrees with the built core:\n{run.stdout}{run.stderr}"
    assert "Success" in run.stdout, run.stdout

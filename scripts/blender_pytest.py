"""Run pytest INSIDE a Blender process.

    blender -b --factory-startup --python-exit-code 1 --python scripts/blender_pytest.py -- [PYTEST ARGS]

The venv's site-packages (pytest, the installed blendwire wheel) is APPENDED to sys.path, so
Blender's own modules (its bpy, numpy, ...) win over the venv's copies. Exits with pytest's code.
"""

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("BLENDWIRE_VENV", os.path.join(ROOT, ".venv"))


def main() -> int:
    site = sorted(glob.glob(os.path.join(VENV, "lib", "python3*", "site-packages")))
    if not site:
        print(f"blender_pytest: no site-packages under {VENV}", file=sys.stderr)
        return 2
    import site as _site

    for path in site:
        # addsitedir appends (Blender's own paths keep precedence) and also reads the .pth files
        # there (e.g. an editable `maturin develop` install of blendwire).
        _site.addsitedir(path)

    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    os.chdir(ROOT)
    os.environ.setdefault("BLENDWIRE_TEST_HOST", "blender")

    import bpy  # Blender's own, already loaded
    import pytest

    print(
        f"blender_pytest: Blender {bpy.app.version_string} (background={bpy.app.background}), "
        f"Python {sys.version.split()[0]}, pytest {pytest.__version__}",
        flush=True,
    )
    return int(pytest.main(argv))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)

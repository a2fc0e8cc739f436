"""blendwire add-on: the BLD-Remote-compatible command service, on blendwire's Rust core.

Works as a Blender 4.2+ extension (blender_manifest.toml, the blendwire wheel installed by Blender)
and as a legacy add-on for Blender 3.x-4.1 (this bl_info; the wheel's contents vendored in
`vendor/` by scripts/package, or blendwire installed into Blender's Python). Only declarations live
in this package (`ui`: preferences, operators, the sidebar panel; `model`: checks and panel rows);
the logic is in `blendwire.blender`, which ships in the wheel.
"""

# Literal only (Blender reads it with ast.literal_eval); scripts/package and a test check that the
# version matches Cargo.toml's, the one place versions come from.
bl_info = {
    "name": "blendwire",
    "author": "blendwire",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar (N) > blendwire",
    "description": "Remote-control service compatible with BLD Remote MCP, on a Rust networking core",
    "category": "Development",
}

import os
import sys

# Legacy zip: the blendwire package (with its compiled core) sits in vendor/. In front of sys.path
# so the add-on runs the copy it was packaged with, not another blendwire in Blender's Python;
# vendor/ holds nothing else, so Blender's own modules are not shadowed.
_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

try:
    import blendwire  # noqa: F401
except ImportError as e:
    raise ImportError(
        f"blendwire add-on: the blendwire Python package cannot be imported by Blender's Python "
        f"({sys.version.split()[0]}): {e}. Install the extension (blendwire-<version>.zip, Blender 4.2+) "
        f"or the legacy zip (blendwire-legacy-<version>.zip), or install the blendwire wheel into that "
        f"Python (`{sys.executable} -m pip install blendwire-*.whl`), then enable the add-on again."
    ) from e

from . import model, ui  # noqa: F401


def register():
    ui.register()


def unregister():
    ui.unregister()
